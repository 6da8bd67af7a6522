"""Stage folders on an object store: `-o s3://...` and inputs by URL, against a real local S3 server
(moto's server, spoken to over HTTP by s3fs, as any S3-compatible store would be).

Checks the commit protocol of toolkit.core.stagefolder.objectstore: the output equals a local run's, the
manifest is the last object written, a rerun on another machine (another staging folder) is up to date, a run
killed before its manifest leaves a folder readers refuse and the rerun completes, the -o rules hold for a
prefix, and a sharded stage uploads each shard as it is written so a killed run resumes elsewhere.

Run: .venv/bin/python -m pytest tests/test_objectstore.py -q
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from rollouts_data import write_rollouts

from toolkit.core.stagefolder import MANIFEST

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

pytestmark = pytest.mark.service

GROUPS = {f"p{i:03d}": (4 if i % 3 else 2, [4, 2, None, 4, 1, 4] if i % 2 else [2, 2, 2, 3, 4, 4]) for i in range(40)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A local S3 server, fsspec pointed at it (in this process and, through FSSPEC_S3_*, in subprocesses)."""
    import fsspec

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    old_conf = fsspec.config.conf.get("s3")
    fsspec.config.conf["s3"] = {"endpoint_url": env["FSSPEC_S3_ENDPOINT_URL"]}
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("bucket")
    try:
        yield fs, env
    finally:
        server.stop()
        fsspec.config.conf.pop("s3", None)
        if old_conf is not None:
            fsspec.config.conf["s3"] = old_conf
        for k, v in old_env.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture
def staging(tmp_path, monkeypatch):
    """This test's own staging and cache folders (as on a fresh machine)."""
    monkeypatch.setenv("TOOLKIT_STAGING", str(tmp_path / "staging"))
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "staging"


def _ls(fs, url: str) -> dict[str, int]:
    fs.invalidate_cache()
    root = url.removeprefix("s3://")
    return {p[len(root) + 1:]: d["size"] for p, d in fs.find(root, detail=True).items()}


def _manifest(fs, url: str) -> dict:
    fs.invalidate_cache()
    return json.loads(fs.cat_file(url.removeprefix("s3://") + "/" + MANIFEST))


def test_an_output_on_s3_equals_the_local_one_and_a_rerun_elsewhere_is_up_to_date(s3, staging, cli, tmp_path,
                                                                                 monkeypatch):
    fs, _ = s3
    ro = write_rollouts(tmp_path / "rollouts", GROUPS)
    url = "s3://bucket/runs/a/difficulty"
    r = cli("label-difficulty", ro, "-o", url)
    assert r.exit_code == 0, r.output
    assert cli("label-difficulty", ro, "-o", tmp_path / "local").exit_code == 0
    listing = _ls(fs, url)
    assert set(listing) == {p.name for p in (tmp_path / "local").iterdir()}
    for name in ("difficulty.parquet", "grpo.parquet"):
        remote = pl.read_parquet(fs.cat_file(f"bucket/runs/a/difficulty/{name}"))
        assert remote.equals(pl.read_parquet(tmp_path / "local" / name)) and remote.height
    m = _manifest(fs, url)
    assert m["stage"] == "label-difficulty" and m["counts"]["grpo"] > 0
    assert f"out: {url}" in fs.cat_file("bucket/runs/a/difficulty/config.yaml").decode()  # the URL, not the staging path
    before = fs.info("bucket/runs/a/difficulty/manifest.json")["LastModified"]
    # another machine: a fresh staging folder; the folder is up to date and nothing is written
    monkeypatch.setenv("TOOLKIT_STAGING", str(tmp_path / "staging2"))
    again = cli("label-difficulty", ro, "-o", url)
    assert "is up to date" in again.output, again.output
    fs.invalidate_cache()
    assert fs.info("bucket/runs/a/difficulty/manifest.json")["LastModified"] == before


def test_an_input_by_url_is_read_and_an_incomplete_one_refused(s3, staging, cli, tmp_path):
    fs, _ = s3
    ro = write_rollouts(tmp_path / "rollouts", GROUPS)
    fs.put(str(ro) + "/", "bucket/in/rollouts/", recursive=True)
    r = cli("make-prefs", "s3://bucket/in/rollouts", "-o", tmp_path / "prefs", "--no-teacher")
    assert r.exit_code == 0, r.output
    assert cli("make-prefs", ro, "-o", tmp_path / "prefs_local", "--no-teacher").exit_code == 0
    a, b = (pl.read_parquet(tmp_path / d / "preferences.parquet") for d in ("prefs", "prefs_local"))
    assert a.height and a.equals(b)
    assert "rollouts: s3://bucket/in/rollouts" in (tmp_path / "prefs" / "config.yaml").read_text()
    fs.pipe_file("bucket/in/rollouts/manifest.json", json.dumps({"stage": "sample", "complete": False}).encode())
    fs.invalidate_cache()
    bad = cli("make-prefs", "s3://bucket/in/rollouts", "-o", tmp_path / "prefs2", "--no-teacher")
    assert bad.exit_code != 0 and "incomplete" in bad.output and "s3://bucket/in/rollouts" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_o_on_a_prefix_of_someone_elses_files_is_refused_and_nothing_is_touched(s3, staging, cli, tmp_path):
    fs, _ = s3
    ro = write_rollouts(tmp_path / "rollouts", GROUPS)
    fs.pipe_file("bucket/notes/todo.txt", b"my notes")
    fs.pipe_file("bucket/notes/.hidden", b"dot-file")
    r = cli("label-difficulty", ro, "-o", "s3://bucket/notes")
    assert r.exit_code != 0 and "did not write" in r.output
    assert _ls(fs, "s3://bucket/notes") == {"todo.txt": 8, ".hidden": 8}
    assert cli("label-difficulty", ro, "-o", "s3://bucket/other/diff").exit_code == 0
    r = cli("make-prefs", ro, "-o", "s3://bucket/other/diff", "--no-teacher")
    assert r.exit_code != 0 and "toolkit label-difficulty" in r.output
    assert _manifest(fs, "s3://bucket/other/diff")["stage"] == "label-difficulty"


def _toolkit(args, env):
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


def test_a_run_killed_before_its_manifest_leaves_a_folder_readers_refuse_and_the_rerun_completes(s3, staging,
                                                                                                  tmp_path, cli):
    fs, env = s3
    ro = write_rollouts(tmp_path / "rollouts", GROUPS)
    url = "s3://bucket/killed/diff"
    assert cli("label-difficulty", ro, "-o", url, "--gamma", "1").exit_code == 0
    old = _manifest(fs, url)
    # a changed config rewrites the folder; killed just before the manifest: the data is up, the manifest is not
    env = {**env, "TOOLKIT_STAGING": str(staging), "TOOLKIT_CACHE": str(tmp_path / "cache")}
    r = _toolkit(["label-difficulty", ro, "-o", url], {**env, "TOOLKIT_FAULT_AT": "objectstore.before_manifest:1"})
    assert r.returncode == -9, r.stderr
    assert _manifest(fs, url) == {"stage": "label-difficulty", "complete": False}
    bad = cli("make-prefs", url, "-o", tmp_path / "p", "--no-teacher")
    assert bad.exit_code != 0 and "incomplete" in bad.output
    r = cli("label-difficulty", ro, "-o", url)
    assert r.exit_code == 0 and "is up to date" not in r.output
    new = _manifest(fs, url)
    assert new.get("complete") is not False and new["fingerprint"] != old["fingerprint"]
    assert cli("label-difficulty", ro, "-o", tmp_path / "local").exit_code == 0
    remote = pl.read_parquet(fs.cat_file(url.removeprefix("s3://") + "/grpo.parquet"))
    assert remote.equals(pl.read_parquet(tmp_path / "local" / "grpo.parquet"))


def test_missing_filesystem_package_is_a_one_line_error(cli, tmp_path):
    ro = write_rollouts(tmp_path / "rollouts", GROUPS)
    r = cli("label-difficulty", ro, "-o", "gs://bucket/x")
    if "gcsfs" in sys.modules or _has("gcsfs"):
        pytest.skip("gcsfs is installed here")
    assert r.exit_code != 0 and "pip install gcsfs" in r.output and len(r.output.strip().splitlines()) == 1


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


@pytest.mark.slow
def test_shards_go_up_as_they_are_written_and_a_killed_run_resumes_on_another_machine(s3, staging, tmp_path, repo):
    """score with the embedded default model: killed after 2 of 4 shards, the rerun on a fresh staging folder
    reuses the 2 shards it finds on S3 and the result equals an uninterrupted local run."""
    fs, env = s3
    pairs = repo / "demo" / "pairs.jsonl"
    split = tmp_path / "split"
    base = {**env, "TOOLKIT_CACHE": os.environ.get("TOOLKIT_CACHE", str(Path.home() / ".cache" / "taosr-toolkit"))}
    assert _toolkit(["ingest", pairs, "-o", tmp_path / "pairs"], base).returncode == 0
    assert _toolkit(["split", tmp_path / "pairs", "-o", split], base).returncode == 0
    args = ["score", split, "--split", "train", "--limit", "16", "--shard-size", "4"]
    url = "s3://bucket/score/run"
    r = _toolkit([*args, "-o", url], {**base, "TOOLKIT_STAGING": str(tmp_path / "m1"), "TOOLKIT_FAULT_AT": "shard.written:2"})
    assert r.returncode == -9, r.stderr[-2000:]
    shards = [k for k in _ls(fs, url) if k.startswith(".shards/shard-")]
    assert len(shards) == 2 and _manifest(fs, url).get("complete") is False
    r = _toolkit([*args, "-o", url], {**base, "TOOLKIT_STAGING": str(tmp_path / "m2")})
    assert r.returncode == 0, r.stderr[-2000:]
    counts = _manifest(fs, url)["counts"]
    assert (counts["shards_skipped"], counts["shards_done"]) == (2, 2)  # the 2 shards found on S3 were not redone
    r = _toolkit([*args, "-o", tmp_path / "local"], base)
    assert r.returncode == 0, r.stderr[-2000:]
    remote = pl.read_parquet(fs.cat_file("bucket/score/run/predictions.parquet"))
    local = pl.read_parquet(tmp_path / "local" / "predictions.parquet")
    assert remote.drop("grade_probs").equals(local.drop("grade_probs"))


def test_mistakes_are_one_line_errors_naming_the_url_and_leave_nothing_behind(s3, staging, cli, tmp_path):
    fs, _ = s3
    ro = write_rollouts(tmp_path / "rollouts", GROUPS)
    r = cli("label-difficulty", ro, "-o", "s3://no-such-bucket/x")
    assert r.exit_code != 0 and "s3://no-such-bucket/x: cannot reach the storage" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert cli("label-difficulty", ro, "-o", "s3://bucket/m/diff").exit_code == 0
    # -o inside an input URL
    r = cli("label-difficulty", "s3://bucket/m/diff", "-o", "s3://bucket/m/diff/sub")
    assert r.exit_code != 0 and "lies inside the input s3://bucket/m/diff" in r.output
    # a stage that fails on its input names the URL (not the local mirror) and writes nothing at its -o
    r = cli("make-prefs", "s3://bucket/m/diff", "-o", "s3://bucket/m/prefs", "--no-teacher")
    assert r.exit_code != 0 and r.output.startswith("error: s3://bucket/m/diff: no rollouts.parquet"), r.output
    assert _ls(fs, "s3://bucket/m/prefs") == {}


def test_a_pipeline_whose_out_is_a_url(s3, staging, cli, tmp_path, repo, monkeypatch):
    fs, _ = s3
    spec = tmp_path / "pipe.yaml"
    spec.write_text("out: s3://bucket/pipe\nstages:\n"
                    f"  - {{name: pairs, run: ingest, args: [{repo / 'demo' / 'pairs.jsonl'}]}}\n"
                    "  - {name: splits, run: split, args: ['{pairs}']}\n")
    r = cli("run", spec)
    assert r.exit_code == 0, r.output
    assert "split s3://bucket/pipe/pairs -o s3://bucket/pipe/splits" in r.output
    assert "run: 2 stages, 2 ran, 0 up to date -> s3://bucket/pipe" in r.output
    assert {"pairs/manifest.json", "splits/train.parquet", "splits/manifest.json"} <= set(_ls(fs, "s3://bucket/pipe"))
    assert "0 ran, 2 up to date" in cli("run", spec).output
    monkeypatch.setenv("TOOLKIT_STAGING", str(tmp_path / "elsewhere"))  # another machine: each stage is up to date
    r = cli("run", spec)
    assert r.exit_code == 0 and r.output.count("is up to date") == 2, r.output
