"""What a rerun must notice and what `-o` must never destroy.

- `-o` never replaces a folder the toolkit did not write, nor another stage's output (often the
  stage's own input): a one-line error, and the folder is untouched.
- Sharded stages (gen-cot, sample) redo the shards whose gold grades changed, and sample redoes
  everything when its model was retrained in place.
- `toolkit run` redoes a stage whose output lost a file, or whose in-place rewrite was cut off.

Run: .venv/bin/python -m pytest tests/test_output_safety.py -q
"""

import polars as pl
import pytest

from checks import one_line_error
from rollouts_data import write_rollouts
from toolkit.core import columns as C
from toolkit.core.stagefolder import mark_incomplete, read_manifest
from toolkit.cli.runner import Pipeline, run_pipeline


def test_o_never_replaces_a_folder_the_toolkit_did_not_write(cli, repo, tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "notes.txt").write_text("important")
    (mine / "p.jsonl").write_text((repo / "demo/pairs.jsonl").read_text())
    one_line_error(cli("ingest", repo / "demo/pairs.jsonl", "-o", mine), "was not written by the toolkit", "notes.txt")
    one_line_error(cli("ingest", mine / "p.jsonl", "-o", mine), "-o is or holds the input")  # the input's own folder
    assert (mine / "notes.txt").read_text() == "important" and (mine / "p.jsonl").exists()
    assert cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "empty").exit_code == 0  # new or empty folders are fine
    assert cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "empty", "--drop-invalid").exit_code == 0  # its own output: replaced


def test_o_never_replaces_another_stages_output(cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "other")
    before = (tmp_path / "other/pairs.parquet").read_bytes()
    one_line_error(cli("split", tmp_path / "pairs", "-o", tmp_path / "other"), "holds the output of `toolkit ingest`", "`toolkit split`")
    assert (tmp_path / "other/pairs.parquet").read_bytes() == before and read_manifest(tmp_path / "other")["stage"] == "ingest"
    one_line_error(cli("split", tmp_path / "pairs", "-o", tmp_path / "pairs"), "-o is or holds the input")  # the input itself
    one_line_error(cli("score", tmp_path / "pairs", "--model", tmp_path / "nowhere", "-o", tmp_path / "other"), "holds the output of `toolkit ingest`")
    rollouts = write_rollouts(tmp_path / "r", {"a": (4, [4, 1]), "b": (2, [1, 1])})
    files = sorted(p.name for p in rollouts.iterdir())
    one_line_error(cli("passk", rollouts, "-o", rollouts), "-o is or holds the input")
    one_line_error(cli("passk", rollouts, "-o", tmp_path / "other"), "holds the output of `toolkit ingest`")
    assert sorted(p.name for p in rollouts.iterdir()) == files


def _regrade(pairs_folder, pair_id, grade):
    f = pairs_folder / "pairs.parquet"
    df = pl.read_parquet(f)
    df.with_columns(pl.when(pl.col(C.PAIR_ID) == pair_id).then(grade).otherwise(pl.col(C.GRADE)).alias(C.GRADE)).write_parquet(f)


def test_sample_redoes_the_shard_of_a_regraded_pair_and_everything_for_a_retrained_model(cli, repo, tmp_path, tiny_model_dir):
    import shutil

    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    args = ["sample", tmp_path / "pairs", "--model", model, "--split", "", "--limit", "4", "--shard-size", "2", "-n", "2", "--max-tokens", "2",
            "--dtype", "float32", "-o", tmp_path / "rollouts"]
    assert cli(*args).exit_code == 0
    first = pl.read_parquet(tmp_path / "pairs/pairs.parquet").head(4)
    pid, old = first[C.PAIR_ID][0], first[C.GRADE][0]
    _regrade(tmp_path / "pairs", pid, 1 if old != 1 else 4)
    r = cli(*args)
    assert r.exit_code == 0 and "shards 1 new, 1 reused" in r.stdout, r.stdout
    assert set(pl.read_parquet(tmp_path / "rollouts/rollouts.parquet").filter(pl.col(C.PAIR_ID) == pid)[C.GRADE]) == {1 if old != 1 else 4}
    assert "up to date" in cli(*args).stdout
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # "retrained" in place
    r = cli(*args)
    assert r.exit_code == 0 and "shards 2 new, 0 reused" in r.stdout, r.stdout


def test_gen_cot_redoes_the_shard_of_a_regraded_pair(cli, repo, tmp_path, tiny_model_dir):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    args = ["gen-cot", tmp_path / "pairs", "--model", tiny_model_dir, "--split", "", "--limit", "4", "--shard-size", "2", "--step-tokens", "2",
            "--dtype", "float32", "-o", tmp_path / "cot"]
    assert cli(*args).exit_code == 0
    pid = pl.read_parquet(tmp_path / "pairs/pairs.parquet")[C.PAIR_ID][3]
    _regrade(tmp_path / "pairs", pid, 2)
    r = cli(*args)
    assert r.exit_code == 0 and "shards 1 new, 1 reused" in r.stdout, r.stdout
    rejects = pl.read_parquet(tmp_path / "cot/rejects.parquet")
    assert set(rejects.filter(pl.col(C.PAIR_ID) == pid)[C.GRADE]) == {2}


@pytest.fixture
def pipe(tmp_path, repo):
    p = tmp_path / "pipe.yaml"
    p.write_text(
        f"out: {tmp_path / 'out'}\nstages:\n"
        f"  - {{name: pairs, run: ingest, args: [{repo / 'demo/pairs.jsonl'}]}}\n"
        "  - {name: splits, run: split, args: ['{pairs}'], options: {seed: 1}}\n"
    )
    run_pipeline(Pipeline.load(p), echo=lambda *a: None)
    return p


def _statuses(path):
    return {o.name: o.status for o in run_pipeline(Pipeline.load(path), echo=lambda *a: None)}


def test_run_redoes_a_stage_whose_output_lost_a_file(pipe, tmp_path):
    (tmp_path / "out/splits/train.parquet").unlink()
    assert _statuses(pipe) == {"pairs": "skipped", "splits": "ran"}
    assert (tmp_path / "out/splits/train.parquet").exists()


def test_run_redoes_a_stage_whose_in_place_rewrite_was_cut_off(pipe, tmp_path):
    mark_incomplete(tmp_path / "out/splits", "split")  # what gen-cot/sample/score write before their final files
    assert _statuses(pipe) == {"pairs": "skipped", "splits": "ran"}
    assert read_manifest(tmp_path / "out/splits")["fingerprint"]
