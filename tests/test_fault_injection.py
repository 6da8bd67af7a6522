"""Kill each writing stage at many instants, rerun it, and compare with an uninterrupted run (issue 14).

For each stage: an uninterrupted run in a subprocess with TOOLKIT_FAULT_LOG set lists every named
instant of its writes (toolkit.core.stagefolder.fault_point: each shard written, each temporary file before its
rename, the incomplete mark, between config.yaml and manifest.json, before and after a folder
swap). Then, for each chosen instant, a fresh subprocess runs the stage with TOOLKIT_FAULT_AT set to
it and dies there by SIGKILL (no cleanup runs, as with `kill -9` or the OOM killer); a normal rerun
must then succeed on the folder it left, and the folder must equal the uninterrupted run's: every
data file byte for byte, the JSON files equal but for the creation time and the counts of shards
done and reused. Models are tiny and float32, so scores are bit-identical too.

Run: .venv/bin/python -m pytest tests/test_fault_injection.py -q   (about 4 minutes on 2 cores)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.core.stagefolder import MANIFEST, read_manifest

pytestmark = pytest.mark.slow

VOLATILE = {"created", "shards_done", "shards_skipped"}  # what differs between a resumed and an uninterrupted run, by design
TALLY: dict[str, list[int]] = {}  # stage -> [kill points tried, identical resumes]; printed at the end of the module


def _strip(obj):
    if isinstance(obj, dict):
        # the manifest's hash of a JSON output (stats.json) covers its volatile counts: that file is compared without them instead
        return {k: _strip({f: h for f, h in v.items() if not f.endswith(".json")} if k == "outputs" else v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def snapshot(folder: Path) -> dict[str, object]:
    """Every file of a stage folder (dot-files too, but the pipeline's record): bytes, or JSON without the volatile keys."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(folder))
        out[rel] = _strip(json.loads(p.read_text())) if p.suffix == ".json" else p.read_bytes()
    return out


def toolkit(args: list, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


def choose(points: list[str], most: int) -> list[str]:
    """The instants to kill at: every instant of the final write, and the first and last of each repeated kind (shards)."""
    kinds: dict[str, list[str]] = {}
    for p in points:
        name = p.rsplit(":", 1)[0]
        kind = "parquet.tmp:shard" if name.startswith("parquet.tmp:shard-") else name
        kinds.setdefault(kind, []).append(p)
    picked = []
    for kind, hits in kinds.items():
        picked += [hits[0]] + ([hits[-1]] if len(hits) > 1 else [])
    picked = sorted(set(picked), key=points.index)
    if len(picked) > most:  # keep the last ones (the final write) and spread the rest
        step = len(picked[:-most // 2]) / (most - most // 2)
        picked = [picked[int(i * step)] for i in range(most - most // 2)] + picked[-(most // 2):]
    return picked


def rerun(*args):
    from click.testing import CliRunner

    from toolkit.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def kill_and_resume(stage: str, args: list, out: Path, tmp_path: Path, most: int = 8) -> None:
    trace = tmp_path / f"{stage}.trace"
    r = toolkit([*args, "-o", out], {"TOOLKIT_FAULT_LOG": str(trace)})
    assert r.returncode == 0, r.stderr
    reference = snapshot(out)
    assert read_manifest(out)["stage"] and reference
    points = trace.read_text().split()
    chosen = choose(points, most)
    assert any(p.startswith("text.tmp:manifest.json") for p in chosen), points
    tried = same = 0
    for point in chosen:
        shutil.rmtree(out)
        r = toolkit([*args, "-o", out], {"TOOLKIT_FAULT_AT": point})
        assert r.returncode == -9, f"{stage}: the run was to die at {point} but ended with {r.returncode}: {r.stderr[-2000:]}"
        tried += 1
        again = rerun(*args, "-o", out)  # in this process: a rerun needs no kill, and skips the imports
        assert again.exit_code == 0, f"{stage}: the rerun after a kill at {point} failed: {again.stderr[-2000:]}"
        got = snapshot(out)
        assert got.keys() == reference.keys(), (point, sorted(set(got) ^ set(reference)))
        for name in reference:
            assert got[name] == reference[name], f"{stage}: {name} differs after a kill at {point}"
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], f"{stage}: leftovers after a kill at {point}"
        same += 1
    TALLY[stage] = [tried, same]


@pytest.fixture(scope="module")
def data(tmp_path_factory, repo, tiny_model_dir, minilm):
    base = tmp_path_factory.mktemp("faults")
    run = rerun
    assert run("ingest", repo / "demo/pairs.jsonl", "-o", base / "pairs").exit_code == 0
    assert run("split", base / "pairs", "-o", base / "splits").exit_code == 0
    assert run("build-index", repo / "demo/guideline.md", "-o", base / "index").exit_code == 0
    model = ["--model", tiny_model_dir, "--dtype", "float32", "--split", "", "--limit", "6", "--shard-size", "2"]
    r = run("sample", base / "pairs", *model, "-n", "3", "--max-tokens", "3", "--temperature", "1.0", "-o", base / "rollouts")
    assert r.exit_code == 0, r.stderr
    yield {"base": base, "model": model}
    print("\nkill points tried / identical resumes: " + ", ".join(f"{s} {t}/{n}" for s, (t, n) in TALLY.items()))


def test_split(data, tmp_path):
    kill_and_resume("split", ["split", data["base"] / "pairs"], tmp_path / "out", tmp_path)


def test_retrieve(data, tmp_path):
    kill_and_resume("retrieve", ["retrieve", data["base"] / "splits", "-i", data["base"] / "index", "-k", "3"], tmp_path / "out", tmp_path, most=6)


def test_gen_cot(data, tmp_path):
    kill_and_resume("gen-cot", ["gen-cot", data["base"] / "pairs", *data["model"], "--step-tokens", "2"], tmp_path / "out", tmp_path, most=6)


def test_sample(data, tmp_path):
    kill_and_resume("sample", ["sample", data["base"] / "pairs", *data["model"], "-n", "2", "--max-tokens", "3"], tmp_path / "out", tmp_path, most=6)


def test_score(data, tmp_path):
    kill_and_resume("score", ["score", data["base"] / "pairs", *data["model"]], tmp_path / "out", tmp_path, most=6)


def test_make_prefs(data, tmp_path):
    kill_and_resume("make-prefs", ["make-prefs", data["base"] / "rollouts", "--no-teacher"], tmp_path / "out", tmp_path)


def test_label_difficulty(data, tmp_path):
    kill_and_resume("label-difficulty", ["label-difficulty", data["base"] / "rollouts"], tmp_path / "out", tmp_path)


def test_a_cut_off_folder_is_refused_by_its_readers_and_taken_up_by_its_stage(data, tmp_path):
    """Killed between the predictions and the manifest: `tier fit` refuses the folder; `score` resumes it."""
    out = tmp_path / "scores"
    args = ["score", data["base"] / "pairs", *data["model"], "-o", out]
    r = toolkit(args, {"TOOLKIT_FAULT_AT": "manifest.before:1"})
    assert r.returncode == -9 and (out / "predictions.parquet").exists() and read_manifest(out) == {"stage": "score", "complete": False}
    r = toolkit(["tier", "fit", "--predictions", out, "-o", tmp_path / "tiers"])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "was cut off before it finished" in lines[0] and "rerun `toolkit score`" in lines[0], r.stderr
    assert not (tmp_path / "tiers").exists()
    assert toolkit(args).returncode == 0 and read_manifest(out)["counts"]["shards_skipped"] == 3
    assert (out / MANIFEST).exists() and toolkit(["tier", "fit", "--predictions", out, "-o", tmp_path / "tiers"]).returncode == 0
