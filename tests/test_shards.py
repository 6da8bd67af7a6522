"""toolkit.core.shards.run_shards: finished shards are reused on rerun, redone with fresh=True (a stage's --force);
only shard files the toolkit recorded writing are ever deleted.

Run: .venv/bin/python -m pytest tests/test_shards.py -q
"""

import polars as pl

from toolkit.core.shards import RECORD, SHARDS, run_shards, written


def _run(out, calls, **kw):
    def work(i, part):
        calls.append(i)
        return pl.DataFrame({"x": part})

    return run_shards(out, list(range(5)), 2, lambda i, part: {"part": part}, work, "test shards", **kw)


def test_rerun_reuses_shards_and_fresh_redoes_them(tmp_path):
    calls = []
    first = _run(tmp_path, calls)
    assert (first.done, first.skipped, calls) == (3, 0, [0, 1, 2])
    assert first.read(tmp_path)["x"].to_list() == [0, 1, 2, 3, 4]
    again = _run(tmp_path, calls)
    assert (again.done, again.skipped, len(calls)) == (0, 3, 3)
    (tmp_path / SHARDS / "shard-99999-mine.parquet").write_bytes(b"user's")  # not written by the toolkit
    (tmp_path / SHARDS / "notes.txt").write_text("user's")
    fresh = _run(tmp_path, calls, fresh=True)
    assert (fresh.done, fresh.skipped, calls[3:]) == (3, 0, [0, 1, 2])
    assert sorted(p.name for p in (tmp_path / SHARDS).iterdir()) == sorted(fresh.names + ["shard-99999-mine.parquet", "notes.txt", RECORD])
    assert (tmp_path / SHARDS / "notes.txt").read_text() == "user's"


def test_stale_shards_are_removed_only_when_recorded(tmp_path):
    calls = []
    first = _run(tmp_path, calls)
    old_name = first.names[0]
    def work(i, part):
        return pl.DataFrame({"x": [v * 10 for v in part]})
    again = run_shards(tmp_path, list(range(5)), 2, lambda i, part: {"part": part, "v": 2}, work, "test shards")
    names = {p.name for p in (tmp_path / SHARDS).iterdir()}
    assert old_name not in names and set(again.names) <= names
    assert written(tmp_path / SHARDS) == set(again.names)


def test_an_older_toolkits_visible_shards_folder_is_adopted_only_when_all_ours(tmp_path):
    calls = []
    _run(tmp_path / "a", calls)
    (tmp_path / "a" / SHARDS).rename(tmp_path / "a" / "shards")  # the layout of toolkit 0.1.0
    again = _run(tmp_path / "a", calls)
    assert (again.done, again.skipped) == (0, 3) and not (tmp_path / "a" / "shards").exists()
    _run(tmp_path / "b", calls)
    (tmp_path / "b" / SHARDS).rename(tmp_path / "b" / "shards")
    (tmp_path / "b" / "shards" / "notes.txt").write_text("mine")
    redo = _run(tmp_path / "b", calls)
    assert redo.done == 3 and (tmp_path / "b" / "shards" / "notes.txt").read_text() == "mine"


def test_datasets_reads_a_sharded_stage_folder_once(tmp_path):
    """`load_dataset(<stage folder>)` sees the stage's file, not its rows again from the shards."""
    datasets = __import__("pytest").importorskip("datasets")
    run = _run(tmp_path / "stage", [])
    run.read(tmp_path / "stage").write_parquet(tmp_path / "stage" / "predictions.parquet")
    ds = datasets.load_dataset(str(tmp_path / "stage"), cache_dir=str(tmp_path / "cache"))
    assert ds["train"].num_rows == 5
