"""`toolkit run` (skipping, redoing what changed and what follows) and `toolkit push` (the exact
files and Hub calls; the Hub itself cannot be reached here, so a recording stand-in for
huggingface_hub.HfApi checks the requests).

Run: .venv/bin/python -m pytest tests/test_pipeline.py -q
"""

import json
import shutil

import polars as pl
import pytest

from toolkit.core.errors import UserError
from toolkit.hub import PushConfig, push
from toolkit.core.stagefolder.remote import card_metadata
from toolkit.cli.runner import Pipeline, run_pipeline


def _pipe(tmp_path, repo, fractions="train=0.6,dev=0.2,test=0.2"):
    p = tmp_path / "pipe.yaml"
    p.write_text(
        f"out: {tmp_path / 'out'}\n"
        "stages:\n"
        f"  - {{name: pairs, run: ingest, args: [{repo / 'demo/pairs.jsonl'}]}}\n"
        f"  - {{name: splits, run: split, args: ['{{pairs}}'], options: {{fractions: '{fractions}', seed: 1}}}}\n"
        "  - {name: dist, run: stats, args: ['{splits}'], out: false}\n"
    )
    return p


def _statuses(outcomes):
    return {o.name: o.status for o in outcomes}


def test_runner_skips_and_redoes_only_what_changed(tmp_path, repo):
    path = _pipe(tmp_path, repo)
    quiet = lambda *a: None  # noqa: E731
    assert _statuses(run_pipeline(Pipeline.load(path), echo=quiet)) == {"pairs": "ran", "splits": "ran", "dist": "ran"}
    assert _statuses(run_pipeline(Pipeline.load(path), echo=quiet)) == {"pairs": "skipped", "splits": "skipped", "dist": "ran"}
    # delete one stage's output: that stage and the ones after it run again
    shutil.rmtree(tmp_path / "out/splits")
    assert _statuses(run_pipeline(Pipeline.load(path), echo=quiet)) == {"pairs": "skipped", "splits": "ran", "dist": "ran"}
    # delete the first stage's output: it reruns; it writes the same pairs, so the splits made from them stand
    shutil.rmtree(tmp_path / "out/pairs")
    assert _statuses(run_pipeline(Pipeline.load(path), echo=quiet)) == {"pairs": "ran", "splits": "skipped", "dist": "ran"}
    # edit a stage's options: only it (and what follows) reruns
    path = _pipe(tmp_path, repo, fractions="train=0.5,dev=0.25,test=0.25")
    assert _statuses(run_pipeline(Pipeline.load(path), echo=quiet)) == {"pairs": "skipped", "splits": "ran", "dist": "ran"}
    assert pl.read_parquet(tmp_path / "out/splits/train.parquet").height < 63
    # --redo forces a stage
    assert _statuses(run_pipeline(Pipeline.load(path), only=["pairs"], echo=quiet))["splits"] == "ran"


def test_a_stage_run_by_hand_into_a_pipeline_folder_is_redone(cli, tmp_path, repo):
    """gen-cot, for one, writes into its folder in place (its shards live there), so the runner's
    record survives a manual run: the runner must notice the folder holds another output."""
    path = _pipe(tmp_path, repo)
    quiet = lambda *a: None  # noqa: E731
    run_pipeline(Pipeline.load(path), echo=quiet)
    record = (tmp_path / "out/splits/.pipeline.json").read_text()
    r = cli("split", tmp_path / "out/pairs", "-o", tmp_path / "out/splits", "--seed", "5")
    assert r.exit_code == 0, r.stderr
    (tmp_path / "out/splits/.pipeline.json").write_text(record)  # as if the stage had kept it
    assert _statuses(run_pipeline(Pipeline.load(path), echo=quiet)) == {"pairs": "skipped", "splits": "ran", "dist": "ran"}
    assert "seed: 1" in (tmp_path / "out/splits/config.yaml").read_text()
    assert _statuses(run_pipeline(Pipeline.load(path), echo=quiet)) == {"pairs": "skipped", "splits": "skipped", "dist": "ran"}
    # a record written before the runner kept the output's identity still counts
    rec = json.loads((tmp_path / "out/splits/.pipeline.json").read_text())
    (tmp_path / "out/splits/.pipeline.json").write_text(json.dumps({k: v for k, v in rec.items() if k != "output"}))
    assert _statuses(run_pipeline(Pipeline.load(path), echo=quiet))["splits"] == "skipped"


def test_a_rerun_that_writes_the_same_output_does_not_redo_the_stages_after_it(tmp_path, repo):
    """The input moved to another folder (another checkout): ingest reruns, as its command line changed, but its
    pairs are the same, so the split is kept; an edit of the data reaches the split; --redo still takes the stages
    after it along."""
    data = tmp_path / "a/pairs.jsonl"
    data.parent.mkdir()
    data.write_text((repo / "demo/pairs.jsonl").read_text())
    p = tmp_path / "p.yaml"
    quiet = lambda *a: None  # noqa: E731

    def run(src, **kw):
        p.write_text(f"out: {tmp_path / 'out'}\nstages:\n  - {{name: pairs, run: ingest, args: [{src}]}}\n"
                     "  - {name: splits, run: split, args: ['{pairs}'], options: {seed: 1}}\n")
        return _statuses(run_pipeline(Pipeline.load(p), echo=quiet, **kw))

    assert run(data) == {"pairs": "ran", "splits": "ran"}
    moved = tmp_path / "b/c/pairs.jsonl"
    moved.parent.mkdir(parents=True)
    shutil.move(data, moved)
    assert run(moved) == {"pairs": "ran", "splits": "skipped"}
    assert run(moved) == {"pairs": "skipped", "splits": "skipped"}
    lines = moved.read_text().splitlines()
    moved.write_text("\n".join(lines[1:]) + "\n")  # one pair fewer
    assert run(moved) == {"pairs": "ran", "splits": "ran"}
    assert sum(pl.read_parquet(f).height for f in (tmp_path / "out/splits").glob("*.parquet")) == len(lines) - 1
    assert run(moved, only=["pairs"]) == {"pairs": "ran", "splits": "ran"}


def test_the_guideline_from_another_checkout_rebuilds_the_index_only(tmp_path, repo, minilm):
    """The quality benchmark rerun from another checkout retrained everything after the index: the snippets kept
    the guideline's path, and the rebuild's tallies (embedded 0, reused 44) differ from the first build's."""
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "guideline.md").write_text((repo / "demo/guideline.md").read_text())
    p = tmp_path / "p.yaml"

    def run(checkout):
        p.write_text(f"out: {tmp_path / 'out'}\nstages:\n  - {{name: pairs, run: ingest, args: [{repo / 'demo/pairs.jsonl'}]}}\n"
                     f"  - {{name: index, run: build-index, args: [{tmp_path / checkout / 'guideline.md'}]}}\n"
                     "  - {name: retrieved, run: retrieve, args: ['{pairs}'], options: {index: '{index}'}}\n")
        return _statuses(run_pipeline(Pipeline.load(p), echo=lambda *a: None))

    assert run("one") == {"pairs": "ran", "index": "ran", "retrieved": "ran"}
    assert run("two") == {"pairs": "skipped", "index": "ran", "retrieved": "skipped"}
    assert json.loads((tmp_path / "out/index/manifest.json").read_text())["counts"]["reused"] == 44


def test_input_file_edit_is_noticed(tmp_path, repo):
    data = tmp_path / "d.csv"
    data.write_text("query,title,grade\nmug,Red mug,4\nmug,Mug rack,2\n")
    p = tmp_path / "p.yaml"
    p.write_text(f"out: {tmp_path / 'out'}\nstages:\n  - {{name: pairs, run: ingest, args: [{data}]}}\n")
    assert _statuses(run_pipeline(Pipeline.load(p), echo=lambda *a: None)) == {"pairs": "ran"}
    data.write_text("query,title,grade\nmug,Red mug,3\nmug,Mug rack,2\n")
    assert _statuses(run_pipeline(Pipeline.load(p), echo=lambda *a: None)) == {"pairs": "ran"}
    assert pl.read_parquet(tmp_path / "out/pairs/pairs.parquet")["grade"].to_list() == [3, 2]


def test_cli_run_prints_summary_table(cli, tmp_path, repo):
    r = cli("run", _pipe(tmp_path, repo))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1].startswith("run: 3 stages, 3 ran")
    assert any(ln.split()[:2] == ["splits", "ran"] and ln.endswith(str(tmp_path / "out/splits")) for ln in lines)


@pytest.mark.parametrize(
    "text,msg",
    [
        ("stages: []\n", "non-empty `stages:`"),
        ("out: o\nstages:\n  - {name: a, run: split, args: ['{b}']}\n", "refers to {b}"),
        ("out: o\nstages:\n  - {name: a, run: ingest}\n  - {name: a, run: ingest}\n", "used twice"),
        ("out: o\nstages:\n  - {name: a, run: ingest, optionz: {}}\n", "unknown field(s) optionz"),
        ("out: o\nstages:\n  - {name: a, run: ingestt}\n", "`toolkit ingestt`, which is not a toolkit command"),
        ("out: o\nstages:\n  - {name: a, run: train}\n", "name one of its commands: sft, dpo, grpo, baseline"),
        ("out: o\nstages:\n  - {name: a, run: stats}\n", "writes no output folder (it has no -o); add `out: false`"),
    ],
)
def test_bad_pipeline_files(cli, tmp_path, text, msg):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    r = cli("run", p)
    assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_failing_stage_stops_the_run(cli, tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(f"out: {tmp_path / 'out'}\nstages:\n  - {{name: pairs, run: ingest, args: [{tmp_path / 'missing.csv'}]}}\n")
    r = cli("run", p)
    assert r.exit_code == 2 and "missing.csv: no such file" in r.stderr
    assert not (tmp_path / "out/pairs").exists()


# -- push --------------------------------------------------------------------------------


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi (the Hub is unreachable here); records each call."""

    def __init__(self):
        self.calls = []
        self.tags = set()

    def create_repo(self, **kw):
        self.calls.append(("create_repo", kw))

    def upload_folder(self, **kw):
        from pathlib import Path

        from fnmatch import fnmatch

        files = sorted(str(p.relative_to(kw["folder_path"])) for p in Path(kw["folder_path"]).rglob("*") if p.is_file())
        files = [f for f in files if not any(fnmatch(f, pat) for pat in kw.get("ignore_patterns") or [])]  # as huggingface_hub filters
        self.calls.append(("upload_folder", {**kw, "files": files}))

        class Info:
            commit_url = "https://huggingface.co/datasets/me/demo/commit/abc"
            oid = "abc123"

        return Info()

    def repo_info(self, **kw):
        self.calls.append(("repo_info", kw))
        return type("Info", (), {"sha": "0" * 40})()

    def create_branch(self, **kw):
        self.calls.append(("create_branch", kw))

    def create_tag(self, **kw):
        self.calls.append(("create_tag", kw))
        if kw["tag"] in self.tags:
            raise RuntimeError(f"409 Client Error: Conflict for url: .../tag/{kw['tag']} (Tag already exists)")
        self.tags.add(kw["tag"])


def test_push_builds_card_and_shards_and_makes_the_right_calls(cli, tmp_path, repo):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    cli("split", tmp_path / "pairs", "-o", tmp_path / "splits")
    api = RecordingHfApi()
    folder, up = push(PushConfig(folder=str(tmp_path / "splits"), repo_id="me/demo", license="cc-by-4.0", build_dir=str(tmp_path / "up")), api=api)
    assert up.url.endswith("/commit/abc") and up.changed
    meta = card_metadata(folder / "README.md")
    assert meta["license"] == "cc-by-4.0" and "search-relevance" in meta["tags"]
    splits = {d["split"]: d["path"] for d in meta["configs"][0]["data_files"]}
    assert splits == {"train": "data/train-*.parquet", "validation": "data/validation-*.parquet", "test": "data/test-*.parquet"}
    body = (folder / "README.md").read_text()
    assert "| train | " in body and "4 Excellent" in body and "toolkit split" in body
    # each shard is the stage's file, byte for byte, and datasets can read the folder as a Hub repo would be read
    assert (folder / "data/validation-00000-of-00001.parquet").read_bytes() == (tmp_path / "splits/dev.parquet").read_bytes()
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(str(folder))
    assert set(ds) == {"train", "validation", "test"} and sum(d.num_rows for d in ds.values()) == 109
    # the requests: private dataset repo, then one folder upload
    (name1, kw1), (name0, kw0), (name2, kw2) = api.calls
    assert name0 == "repo_info" and kw0 == {"repo_id": "me/demo", "repo_type": "dataset", "revision": None}  # the head before: was a commit made?
    assert name1 == "create_repo" and kw1 == {"repo_id": "me/demo", "repo_type": "dataset", "private": True, "exist_ok": True}
    assert name2 == "upload_folder" and kw2["repo_id"] == "me/demo" and kw2["repo_type"] == "dataset" and kw2["ignore_patterns"] == [".toolkit-hub-build"]
    assert kw2["files"] == ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
                            "data/validation-00000-of-00001.parquet", "toolkit/config.yaml", "toolkit/manifest.json"]


def test_push_public_and_errors(cli, tmp_path, repo):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    api = RecordingHfApi()
    push(PushConfig(folder=str(tmp_path / "pairs"), repo_id="me/pairs", private=False), api=api)
    assert api.calls[0][1]["private"] is False
    assert not list((tmp_path / "pairs").glob(".hub*"))  # the upload folder inside the stage folder goes after the upload
    meta = card_metadata(push(PushConfig(folder=str(tmp_path / "pairs"), repo_id="me/pairs", dry_run=True))[0] / "README.md")
    assert [d["split"] for d in meta["configs"][0]["data_files"]] == ["train"]
    r = cli("push", tmp_path / "pairs", "--repo", "no-owner")
    assert r.exit_code == 2 and "owner/name" in r.stderr
    r = cli("push", tmp_path / "pairs", "--repo", "me/x", "--dry-run")
    assert r.exit_code == 0 and "dry run" in r.stdout

    class Failing(RecordingHfApi):
        def create_repo(self, **kw):
            raise RuntimeError("401 Client Error: Unauthorized for url")

    from toolkit.core.errors import UserError

    with pytest.raises(UserError, match="upload to me/pairs failed: 401"):
        push(PushConfig(folder=str(tmp_path / "pairs"), repo_id="me/pairs"), api=Failing())
    assert not list((tmp_path / "pairs").glob(".hub*"))  # a refused push leaves nothing behind


def test_push_to_a_branch_with_a_tag_makes_exactly_these_requests(cli, tmp_path, repo):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    api = RecordingHfApi()
    folder, up = push(PushConfig(folder=str(tmp_path / "pairs"), repo_id="me/pairs", revision="review", tag="round-3", build_dir=str(tmp_path / "up")), api=api)
    names = [n for n, _ in api.calls]
    assert names == ["create_repo", "create_branch", "repo_info", "upload_folder", "create_tag"]
    assert api.calls[1][1] == {"repo_id": "me/pairs", "branch": "review", "repo_type": "dataset", "exist_ok": True}
    assert api.calls[2][1]["revision"] == "review"
    assert api.calls[3][1]["revision"] == "review" and api.calls[3][1]["create_pr"] is None
    assert api.calls[4][1] == {"repo_id": "me/pairs", "tag": "round-3", "revision": "abc123", "repo_type": "dataset",
                               "tag_message": "pairs published with taosr-toolkit"}  # the tag names the new commit, not the branch head
    assert 'load_dataset("me/pairs", revision="round-3")' in (folder / "README.md").read_text()
    with pytest.raises(UserError, match="tag 'round-3' already exists .*pick a new one"):
        push(PushConfig(folder=str(tmp_path / "pairs"), repo_id="me/pairs", revision="review", tag="round-3"), api=api)


def test_push_as_a_pull_request(cli, tmp_path, repo):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    api = RecordingHfApi()
    push(PushConfig(folder=str(tmp_path / "pairs"), repo_id="me/pairs", create_pr=True), api=api)
    assert [n for n, _ in api.calls] == ["create_repo", "upload_folder"] and api.calls[1][1]["create_pr"] is True
    r = cli("push", tmp_path / "pairs", "--repo", "me/pairs", "--tag", "v1", "--create-pr")
    assert r.exit_code == 2 and "--tag and --create-pr do not go together" in r.stderr


def test_a_folder_named_in_a_list_option_reruns_the_stage_when_it_appears(tmp_path):
    """A review round's stage names its pulled folders in a list (`review: [...]`); the folder appearing (or changing)
    after the first run must rerun the stage, as a folder named by a plain option does."""
    from toolkit.cli.runner import fingerprint

    spec = tmp_path / "p.yaml"
    later = tmp_path / "round-1"
    spec.write_text(f"out: {tmp_path / 'out'}\nstages:\n  - name: reviewed\n    run: review apply\n    args: [{tmp_path}]\n"
                    f"    options: {{review: [{later}], allow-missing: true}}\n")
    pipe = Pipeline.load(spec)
    st = pipe.stages[0]
    assert "--review" in pipe.argv(st) and str(later) in pipe.argv(st)
    before = fingerprint(pipe, st, {})
    later.mkdir()
    (later / "a.parquet").write_bytes(b"x")
    after = fingerprint(pipe, st, {})
    (later / "a.parquet").write_bytes(b"y")
    assert before != after != fingerprint(pipe, st, {})


def test_run_with_the_ray_executor_passes_it_to_the_model_stages_only(tmp_path):
    """`toolkit run --executor ray`: gen-cot, sample and score get --executor/--ray-address, the others nothing;
    where shards run is not part of a stage's fingerprint, so switching executors reruns nothing."""
    from toolkit.cli.runner import executor_args

    spec = tmp_path / "p.yaml"
    spec.write_text(f"out: {tmp_path / 'out'}\nstages:\n"
                    "  - {name: pairs, run: ingest, args: [x.jsonl]}\n"
                    "  - {name: scores, run: score, args: ['{pairs}'], options: {model: m}}\n"
                    "  - {name: sft, run: train sft, args: ['{pairs}']}\n")
    pipe = Pipeline.load(spec)
    pairs, scores, sft = pipe.stages
    assert executor_args(scores, "ray", "127.0.0.1:6379") == ["--executor", "ray", "--ray-address", "127.0.0.1:6379"]
    assert executor_args(pairs, "ray", "auto") == [] and executor_args(sft, "ray", "auto") == []  # trainers: accelerate
    assert executor_args(scores, "local", "auto") == []

    seen = []

    def invoke(argv):  # records the commands and writes a stage folder as a stage would
        seen.append(argv)
        out = tmp_path / "out" / {"ingest": "pairs", "score": "scores", "train": "sft"}[argv[0]]
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text(json.dumps({"stage": argv[0], "fingerprint": "f", "outputs": {}}))

    quiet = lambda *a: None  # noqa: E731
    run_pipeline(pipe, invoke=invoke, echo=quiet, executor="ray", ray_address="127.0.0.1:6379")
    assert [a[-4:] for a in seen if a[0] == "score"] == [["--executor", "ray", "--ray-address", "127.0.0.1:6379"]]
    assert all("--executor" not in a for a in seen if a[0] != "score")
    again = run_pipeline(Pipeline.load(spec), invoke=invoke, echo=quiet)  # the local executor now: all up to date
    assert _statuses(again) == {"pairs": "skipped", "scores": "skipped", "sft": "skipped"}
