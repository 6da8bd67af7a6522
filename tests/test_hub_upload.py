"""`toolkit push` against a loopback stand-in for the Hub's HTTP API (tests/hub_fake.py), with the real
huggingface_hub client: the exact requests, the files committed, the tag, a no-op re-push, and one-line errors.

Run: .venv/bin/python -m pytest tests/test_hub_upload.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hub_fake import FakeHub

pytest.importorskip("huggingface_hub")
TOKEN = "hf_loopbackTestToken0123456789abcdefXYZ"


@pytest.fixture
def hub():
    h = FakeHub().start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def cot(tmp_path_factory, repo):
    """A stage folder of two kinds (sft / rejects), written as gen-cot writes it (no model needed)."""
    import polars as pl

    from toolkit.core.stagefolder import write_manifest

    out = tmp_path_factory.mktemp("cot") / "cot"
    out.mkdir()
    msgs = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    pl.DataFrame({"prompt": [[{"role": "user", "content": "q"}]] * 3, "completion": [[{"role": "assistant", "content": "4\nReason: x"}]] * 3,
                  "pair_id": ["a", "b", "c"]}, schema_overrides={"prompt": msgs, "completion": msgs}).write_parquet(out / "sft.parquet")
    pl.DataFrame({"pair_id": ["d"], "text": ["?"], "drop_reason": ["too_short"]}).write_parquet(out / "rejects.parquet")
    write_manifest(out, "gen-cot", {"k": 1}, {}, {"kept": 3}, {"teacher": "/home/someone/models/teacher-7b"})
    return out


def push(hub, *args, token=TOKEN, tmp_path=None):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    if tmp_path is not None:
        env["HF_HOME"] = str(tmp_path / "hf-home")  # no login of this machine's user
    return subprocess.run([sys.executable, "-m", "toolkit", "push", *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def calls(hub) -> list[str]:
    return [f"{r.method} {r.path}" for r in hub.requests if not r.path.startswith("/api/agent-harnesses")]


def test_push_creates_a_private_repo_commits_the_folder_and_tags_the_commit(hub, cot, tmp_path):
    r = push(hub, cot, "--repo", "me/cot", "--revision", "review", "--tag", "round-1", "--license", "mit", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert calls(hub) == [
        "POST /api/repos/create", "POST /api/datasets/me/cot/branch/review", "GET /api/datasets/me/cot/revision/review",
        "GET /api/datasets/me/cot/tree/review", "POST /api/validate-yaml", "POST /api/validate-yaml",
        "POST /api/datasets/me/cot/preupload/review", "POST /api/datasets/me/cot/commit/review",
        f"POST /api/datasets/me/cot/tag/{hub.repos['me/cot']['commits'][0]}",
    ]
    create = next(q.json() for q in hub.requests if q.path == "/api/repos/create")
    assert create == {"name": "cot", "organization": "me", "visibility": "private", "type": "dataset"}
    assert all(q.headers.get("authorization") == f"Bearer {TOKEN}" for q in hub.requests if q.path != "/api/agent-harnesses")
    files = hub.repos["me/cot"]["revisions"]["review"]
    assert sorted(files) == ["README.md", "data/rejects/train-00000-of-00001.parquet", "data/sft/train-00000-of-00001.parquet",
                             "toolkit/config.yaml", "toolkit/manifest.json"]
    assert files["data/sft/train-00000-of-00001.parquet"] == (cot / "sft.parquet").read_bytes()
    card = files["README.md"].decode()
    assert "/home/someone" not in card and "`teacher-7b`" in card and 'revision="round-1"' in card
    assert hub.repos["me/cot"]["tags"] == {"round-1": hub.repos["me/cot"]["commits"][0]}
    assert "tagged round-1" in r.stdout


def test_the_same_push_again_makes_no_commit_and_an_existing_tag_is_one_line(hub, cot, tmp_path):
    assert push(hub, cot, "--repo", "me/cot", tmp_path=tmp_path).returncode == 0
    again = push(hub, cot, "--repo", "me/cot", tmp_path=tmp_path)
    assert again.returncode == 0 and "already holds exactly these files; no new commit" in again.stdout, again.stdout + again.stderr
    assert len(hub.repos["me/cot"]["commits"]) == 1 and sum(c.endswith("/commit/main") for c in calls(hub)) == 1
    assert push(hub, cot, "--repo", "me/cot", "--tag", "v1", tmp_path=tmp_path).returncode == 0  # the card now names v1: one commit
    r = push(hub, cot, "--repo", "me/cot", "--tag", "v1", tmp_path=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "tag 'v1' already exists" in lines[0] and "pick a new one" in lines[0], r.stderr
    assert len(hub.repos["me/cot"]["commits"]) == 2 and list(hub.repos["me/cot"]["tags"]) == ["v1"]


def test_no_token_is_one_line_and_sends_nothing(hub, cot, tmp_path):
    r = push(hub, cot, "--repo", "me/cot", token=None, tmp_path=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "no Hugging Face token" in lines[0] and "$HF_TOKEN" in lines[0], r.stderr
    assert calls(hub) == []


def test_a_tagged_round_comes_back_through_ingest_pinned(hub, cli, repo, tmp_path):
    """push --tag round-1, push again (main moves on), then `toolkit ingest hf://datasets/me/data@round-1` reads round 1."""
    assert cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs").exit_code == 0
    assert cli("split", tmp_path / "pairs", "-o", tmp_path / "splits").exit_code == 0
    assert push(hub, tmp_path / "splits", "--repo", "me/data", "--tag", "round-1", tmp_path=tmp_path).returncode == 0
    assert push(hub, tmp_path / "pairs", "--repo", "me/data", tmp_path=tmp_path).returncode == 0  # main: unsplit pairs now
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_TOKEN": TOKEN,
           "HF_HOME": str(tmp_path / "hf-home"), "TOOLKIT_CACHE": str(tmp_path / "cache")}
    for ref, splits in (("@round-1", {"train", "dev", "test"}), ("", {"train"})):
        r = subprocess.run([sys.executable, "-m", "toolkit", "ingest", f"hf://datasets/me/data{ref}", "-o", tmp_path / f"back{ref}"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        import polars as pl

        back = pl.read_parquet(tmp_path / f"back{ref}" / "pairs.parquet")
        assert back.height == 109 and set(back["split"]) == splits and set(back["source"]) == {"me/data"}, ref
    round1 = hub.repos["me/data"]["tags"]["round-1"]
    assert any(q.path.startswith(f"/datasets/me/data/resolve/{round1}/data/") for q in hub.requests)  # the tagged commit's files


def test_a_stage_reads_its_input_folder_from_the_hub(hub, cli, tmp_path):
    """make-prefs and label-difficulty on hf://datasets/me/rollouts@round-1 give what they give on the local folder."""
    import polars as pl

    from rollouts_data import write_rollouts

    rollouts = write_rollouts(tmp_path / "rollouts", {f"p{i}": (4 - i % 4, [4 - i % 4, 1, 2, 4][: 2 + i % 3]) for i in range(12)})
    assert push(hub, rollouts, "--repo", "me/rollouts", "--tag", "round-1", tmp_path=tmp_path).returncode == 0
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_TOKEN": TOKEN,
           "HF_HOME": str(tmp_path / "hf-home"), "TOOLKIT_CACHE": str(tmp_path / "cache")}
    for stage, out_file, extra in (("make-prefs", "preferences.parquet", ["--no-teacher"]), ("label-difficulty", "difficulty.parquet", [])):
        r = subprocess.run([sys.executable, "-m", "toolkit", stage, "hf://datasets/me/rollouts@round-1", *extra, "-o", str(tmp_path / f"hub-{stage}")],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        assert cli(stage, rollouts, *extra, "-o", tmp_path / f"local-{stage}").exit_code == 0
        hub_df, local_df = (pl.read_parquet(tmp_path / f"{w}-{stage}" / out_file) for w in ("hub", "local"))
        assert hub_df.height and hub_df.sort(hub_df.columns[0]).equals(local_df.sort(local_df.columns[0])), stage
    r = subprocess.run([sys.executable, "-m", "toolkit", "make-prefs", "hf://datasets/me/none@round-1", "--no-teacher", "-o", str(tmp_path / "x")],
                       capture_output=True, text=True, env=env, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "cannot read it as a stage folder published by `toolkit push`" in lines[0], r.stderr
