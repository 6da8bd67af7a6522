"""`toolkit push` of a checkpoint: the model files and a model card whose scoring recipe runs (issue 17).

The card's Python block is executed as written (with the repo id replaced by the built folder) and
must give the same grade probabilities as `toolkit score` on the same pair.

Run: .venv/bin/python -m pytest tests/test_hub_model.py -q
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import polars as pl
import pytest

from hub_fake import FakeHub
from toolkit.core.stagefolder import write_manifest

pytestmark = pytest.mark.slow


@pytest.fixture
def checkpoint(tmp_path, tiny_model_dir):
    """The tiny model as `toolkit train sft` leaves a checkpoint: its files and a manifest (base model by a local path)."""
    from toolkit.core.grades import get_scale

    out = shutil.copytree(tiny_model_dir, tmp_path / "sft")
    write_manifest(out, "train-sft", {"lr": 1e-4}, {str(tmp_path / "cot/sft.parquet"): "ab" * 32}, {"rows": 8, "steps": 2, "first_loss": 2.0, "last_loss": 1.0},
                   {"grade_scale": get_scale("taosr4").to_dict(), "student_prompt": {"order": "label_first", "rules": False},
                    "base_model": str(tiny_model_dir), "trainer": "SFTTrainer", "trl_version": "1.16.0", "weights": "full"})
    return out


def test_the_model_card_recipe_gives_the_probabilities_toolkit_score_gives(cli, checkpoint, tmp_path, tiny_model_dir):
    r = cli("push", checkpoint, "--repo", "me/judge", "--dry-run", "-o", tmp_path / "up", "--license", "apache-2.0",
            "--data-repo", "me/demo-cot@round-1")
    assert r.exit_code == 0, r.stderr
    up = tmp_path / "up"
    assert (up / "model.safetensors").exists() and (up / "config.json").exists() and (up / "toolkit/manifest.json").exists()
    assert not (up / "data").exists() and not (up / "manifest.json").exists()
    from huggingface_hub import ModelCard

    card = ModelCard.load(up / "README.md")
    meta = card.data.to_dict()
    assert meta["pipeline_tag"] == "text-generation" and meta["datasets"] == ["me/demo-cot"] and "base_model" not in meta  # a local base
    assert str(tiny_model_dir) not in card.text and "at revision `round-1`" in card.text and "| 4 | Excellent | `4` |" in card.text
    code = re.search(r"```python\n(.*?)```", card.text, re.S).group(1).replace('"me/judge"', repr(str(up)))
    scope: dict = {}
    exec(code, scope)  # the recipe, as a reader would paste it
    recipe = [float(p) for p in scope["probs"]]
    src = tmp_path / "pair.jsonl"
    src.write_text(json.dumps({"query": "running shoes", "title": "Trailstride Running Shoe", "grade": 4}) + "\n")
    assert cli("ingest", src, "-o", tmp_path / "pairs").exit_code == 0
    r = cli("score", tmp_path / "pairs", "--model", up, "--dtype", "float32", "-o", tmp_path / "scores")
    assert r.exit_code == 0, r.stderr
    scored = pl.read_parquet(tmp_path / "scores/predictions.parquet")["grade_probs"][0].to_list()
    assert recipe == pytest.approx(scored, abs=1e-4)


def test_eval_and_tiers_go_into_the_card_and_a_model_uploads_as_a_model(checkpoint, tmp_path):
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"split": "test", "n": 20, "decision": "argmax", "macro_f1": 0.4321, "accuracy": 0.55,
                                                 "calibration": {"ece": 0.05}}))
    tiers = tmp_path / "tiers"
    tiers.mkdir()
    write_manifest(tiers, "tier fit", {}, {}, {"rows": 26, "beta": 0.5358, "cumpt": 0.44, "argmax": 0.40})
    hub = FakeHub().start()
    try:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_modelTestToken0123456789", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf-home")}
        r = subprocess.run([sys.executable, "-m", "toolkit", "push", str(checkpoint), "--repo", "me/judge", "--eval", str(ev), "--tiers", str(tiers),
                            "--tag", "v1"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        paths = [f"{q.method} {q.path}" for q in hub.requests if "agent-harnesses" not in q.path]
        assert "POST /api/models/me/judge/commit/main" in paths and not any("/api/datasets/" in p for p in paths)
        assert hub.types["me/judge"] == "model"
        files = hub.repos["me/judge"]["revisions"]["main"]
        assert files["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()
        card = files["README.md"].decode()
        assert "| macro-f1 | 0.4321 |" in card and "β = 0.5358" in card and list(hub.repos["me/judge"]["tags"]) == ["v1"]
        assert not list(checkpoint.glob(".hub*"))  # the upload folder went after the upload
    finally:
        hub.stop()


def test_model_flags_on_a_dataset_folder_are_one_line(cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    r = cli("push", tmp_path / "pairs", "--repo", "me/p", "--dry-run", "--eval", tmp_path)
    assert r.exit_code == 2 and "describe a model" in r.stderr and len(r.stderr.strip().splitlines()) == 1
