"""`--executor ray`: the model stages' shards on a real local Ray cluster (a head node and a second worker node
started here with `ray start`, on 127.0.0.1), compared with the local executor: the same rows (seeded sampling
texts, first-token probabilities), the same shard files, and a run whose driver is killed resumes with either
executor. Actors ask for half a CPU each (a pool of whole-CPU actors can starve Ray's own tasks on 2 cores).
Run: .venv/bin/python -m pytest -q tests/test_ray_executor.py
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

from model_fixtures import free_port
from toolkit.core import columns as C
from toolkit.core.stagefolder import SHARDS

pytestmark = [pytest.mark.slow, pytest.mark.service]

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node (2 CPUs) and a second node (1 CPU) on this machine; stopped after the module."""
    pytest.importorskip("ray")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, **RAY_ENV}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live below it
    port = free_port()
    common = ["--num-cpus", "{}", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    head = [ray_bin, "start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp, *common]
    subprocess.run([a.format(2) for a in head], check=True, env=env, capture_output=True, timeout=120)
    worker = [ray_bin, "start", "--address", f"127.0.0.1:{port}", *common]
    subprocess.run([a.format(1) for a in worker], check=True, env=env, capture_output=True, timeout=120)
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)  # the in-process drivers of the tests below
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def pairs(repo, tmp_path_factory):
    from click.testing import CliRunner

    from toolkit.cli import cli

    out = tmp_path_factory.mktemp("ray-pairs") / "pairs"
    assert CliRunner().invoke(cli, ["ingest", str(repo / "demo/pairs.jsonl"), "-o", str(out)]).exit_code == 0
    return out


def test_the_cluster_has_two_nodes(ray_cluster):
    import ray

    from toolkit.core.executors import connect

    connect(ray, ray_cluster)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2 and ray.cluster_resources()["CPU"] == 3


def test_score_on_ray_equals_local_and_shares_its_shards(cli, ray_cluster, pairs, tiny_model_dir, tmp_path):
    args = [pairs, "--model", tiny_model_dir, "--dtype", "float32", "--limit", "12", "--shard-size", "3", "--split", ""]
    r = cli("score", *args, "--executor", "ray", "--ray-address", ray_cluster, "--ray-workers", "2", "-o", tmp_path / "ray")
    assert r.exit_code == 0, r.output
    assert "12 pairs scored" in r.stdout
    # the local executor finds the Ray run's folder complete: the same config, the same shard names
    again = cli("score", *args, "-o", tmp_path / "ray")
    assert "is up to date" in again.stdout
    assert cli("score", *args, "-o", tmp_path / "local").exit_code == 0
    a = pl.read_parquet(tmp_path / "local" / "predictions.parquet")
    b = pl.read_parquet(tmp_path / "ray" / "predictions.parquet")
    assert a.height == 12 and a.drop(C.GRADE_PROBS).equals(b.drop(C.GRADE_PROBS))
    pa, pb = a[C.GRADE_PROBS].to_list(), b[C.GRADE_PROBS].to_list()
    assert max(abs(x - y) for ra, rb in zip(pa, pb) for x, y in zip(ra, rb)) < 1e-6
    assert len(list((tmp_path / "ray" / SHARDS).glob("shard-*.parquet"))) == 4


def test_seeded_sampling_on_ray_gives_the_local_texts(cli, ray_cluster, pairs, tiny_model_dir, tmp_path):
    args = [pairs, "--model", tiny_model_dir, "--dtype", "float32", "--limit", "8", "--shard-size", "2", "-n", "2",
            "--max-tokens", "8", "--temperature", "1.0", "--split", ""]
    assert cli("sample", *args, "-o", tmp_path / "local").exit_code == 0
    r = cli("sample", *args, "--executor", "ray", "--ray-address", ray_cluster, "-o", tmp_path / "ray")
    assert r.exit_code == 0, r.output
    a = pl.read_parquet(tmp_path / "local" / "rollouts.parquet").sort(C.PAIR_ID, C.SAMPLE_IDX)
    b = pl.read_parquet(tmp_path / "ray" / "rollouts.parquet").sort(C.PAIR_ID, C.SAMPLE_IDX)
    assert a.height == 16 and a.select(C.PAIR_ID, C.SAMPLE_IDX, C.TEXT).equals(b.select(C.PAIR_ID, C.SAMPLE_IDX, C.TEXT))
    assert len(set(a[C.TEXT].to_list())) > 2  # sampled, not one greedy answer


def test_a_killed_ray_run_resumes_with_the_local_executor(cli, ray_cluster, pairs, tiny_model_dir, tmp_path):
    args = [str(pairs), "--model", str(tiny_model_dir), "--dtype", "float32", "--limit", "8", "--shard-size", "2", "-n", "2",
            "--max-tokens", "8", "--temperature", "1.0", "--split", ""]
    exe = [sys.executable, "-m", "toolkit", "sample"]
    env = {**os.environ, **RAY_ENV}
    subprocess.run(exe + args + ["-o", str(tmp_path / "ref")], check=True, env=env, capture_output=True, timeout=600)
    # the driver kills itself (SIGKILL) the moment it has written its second shard
    killed = subprocess.run(exe + args + ["--executor", "ray", "--ray-address", ray_cluster, "-o", str(tmp_path / "run")],
                            env={**env, "TOOLKIT_FAULT_AT": "shard.written:2"}, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list((tmp_path / "run" / SHARDS).glob("shard-*.parquet"))) == 2
    assert not (tmp_path / "run" / "rollouts.parquet").exists()
    time.sleep(1)  # the killed driver's actors are reaped by the cluster
    r = subprocess.run(exe + args + ["-o", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "shards 2 new, 2 reused" in r.stdout
    ref = pl.read_parquet(tmp_path / "ref" / "rollouts.parquet").sort(C.PAIR_ID, C.SAMPLE_IDX)
    run = pl.read_parquet(tmp_path / "run" / "rollouts.parquet").sort(C.PAIR_ID, C.SAMPLE_IDX)
    assert ref.equals(run)


def test_no_cluster_at_the_address_is_a_one_line_error(cli, pairs, tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import ray

    ray.shutdown()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    r = cli("score", pairs, "--model", tiny_model_dir, "--limit", "2", "--split", "", "--executor", "ray",
            "--ray-address", "127.0.0.1:1", "-o", tmp_path / "s")
    assert r.exit_code != 0 and "no Ray cluster there" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_build_index_and_retrieve_embed_on_ray_as_locally(cli, ray_cluster, pairs, repo, tmp_path, monkeypatch):
    """The embedding chunks (16 texts here, so 7 chunks over 2 actors) run on Ray: the same vectors to float
    rounding, the same index and the same retrieved rules as a local run."""
    import numpy as np

    import retrieval_index.embedder as E

    monkeypatch.setattr(E, "ENCODE_CHUNK", 16)
    ray = ["--executor", "ray", "--ray-address", ray_cluster, "--ray-workers", "2"]
    src = repo / "demo" / "guideline.md"
    assert cli("build-index", src, "-o", tmp_path / "index").exit_code == 0
    r = cli("build-index", src, *ray, "-o", tmp_path / "index_ray")
    assert r.exit_code == 0, r.output
    a, b = (np.load(tmp_path / d / "embeddings.npy") for d in ("index", "index_ray"))
    assert a.shape == b.shape and a.shape[0] > 16 and np.abs(a - b).max() < 1e-5
    assert cli("build-index", src, "-o", tmp_path / "index_ray").stdout.count("up to date") == 1  # executor not hashed
    assert cli("retrieve", pairs, "-i", tmp_path / "index", "-o", tmp_path / "local").exit_code == 0
    r = cli("retrieve", pairs, "-i", tmp_path / "index", *ray, "-o", tmp_path / "ray")
    assert r.exit_code == 0, r.output
    x, y = (pl.read_parquet(tmp_path / d / "pairs.parquet") for d in ("local", "ray"))
    assert x.height > 100 and x[C.RULE_IDS].to_list() == y[C.RULE_IDS].to_list()
    diff = [abs(p - q) for rp, rq in zip(x[C.RULE_SCORES].to_list(), y[C.RULE_SCORES].to_list()) for p, q in zip(rp, rq)]
    assert max(diff) < 1e-4


def test_a_worker_killed_mid_run_is_restarted_and_the_run_equals_local(ray_cluster, pairs, tiny_model_dir, tmp_path):
    """SIGKILL one actor process (`ray::_ShardWorker`) once the first shard is written: Ray restarts the actor and
    retries its shard (max_restarts, max_task_retries); the run finishes with the local executor's rows."""
    args = [str(pairs), "--model", str(tiny_model_dir), "--dtype", "float32", "--limit", "16", "--shard-size", "2",
            "-n", "2", "--max-tokens", "8", "--temperature", "1.0", "--split", ""]
    exe = [sys.executable, "-m", "toolkit", "sample"]
    env = {**os.environ, **RAY_ENV}
    subprocess.run(exe + args + ["-o", str(tmp_path / "ref")], check=True, env=env, capture_output=True, timeout=600)
    driver = subprocess.Popen(exe + args + ["--executor", "ray", "--ray-address", ray_cluster, "--ray-workers", "2",
                                            "-o", str(tmp_path / "run")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.time() + 300
    while killed is None and driver.poll() is None and time.time() < deadline:
        if list((tmp_path / "run" / SHARDS).glob("shard-*.parquet")):
            found = subprocess.run(["pgrep", "-f", "ray::_ShardWorker"], capture_output=True, text=True).stdout.split()
            if found:
                killed = int(found[0])
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = driver.communicate(timeout=600)
    assert killed is not None, "the run ended before a worker could be killed"
    assert driver.returncode == 0, err[-2000:]
    assert "shards 8 new, 0 reused" in out
    ref = pl.read_parquet(tmp_path / "ref" / "rollouts.parquet").sort(C.PAIR_ID, C.SAMPLE_IDX)
    run = pl.read_parquet(tmp_path / "run" / "rollouts.parquet").sort(C.PAIR_ID, C.SAMPLE_IDX)
    assert ref.equals(run)
