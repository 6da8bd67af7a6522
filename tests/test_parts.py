"""make-prefs and label-difficulty part by part (pair-id ranges, bounded memory) give exactly the one-pass result.

Run: .venv/bin/python -m pytest tests/test_parts.py -q
"""

from __future__ import annotations

import random

import polars as pl
import pytest
from rollouts_data import write_rollouts

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.parts import check_part_rows, pair_parts
from toolkit.difficulty import DIFFICULTY_FILE, GRPO_FILE, LabelDifficultyConfig, label_difficulty
from toolkit.preferences import PREFS_FILE, TEACHER_FILE, MakePrefsConfig, make_preferences
from toolkit.rollouts import PROMPTS_FILE, ROLLOUTS_FILE
from toolkit.teacher import partial_file


def gold_teacher(rows):
    return [f"{r[C.GRADE]}\nReason: the teacher explains {r[C.PAIR_ID]}." for r in rows]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """300 pairs x 6 samples in shuffled row order, duplicate texts, unparseable samples, a cut correct
    sample, pairs without rollouts, rollouts without a prompt."""
    rng = random.Random(7)
    groups = {}
    for i in range(300):
        gold = rng.choice([4, 4, 3, 2, 1])
        skill = rng.random()
        samples = []
        for _ in range(6):
            pred = gold if rng.random() < skill else rng.choice([None, 1, 2, 3, 4])
            samples.append((pred, f"{pred}\nReason: same text.") if rng.random() < 0.2 else pred)
        groups[f"p{rng.randrange(10**6):06d}-{i}"] = (gold, samples)
    root = tmp_path_factory.mktemp("parts")
    path = write_rollouts(root / "rollouts", groups, no_rollouts={f"q{i}": 3 for i in range(7)})
    ro = pl.read_parquet(path / ROLLOUTS_FILE)
    first = ro[C.PAIR_ID][0]
    ro = ro.with_columns(pl.when((pl.col(C.PAIR_ID) == first) & (pl.col(C.SAMPLE_IDX) == 0) & pl.col(C.CORRECT))
                         .then(pl.lit("length")).otherwise(pl.col(C.FINISH_REASON)).alias(C.FINISH_REASON))
    ro.sample(fraction=1.0, shuffle=True, seed=3).write_parquet(path / ROLLOUTS_FILE)
    prompts = pl.read_parquet(path / PROMPTS_FILE)
    prompts.filter(pl.col(C.PAIR_ID) != ro[C.PAIR_ID][-1]).sample(fraction=1.0, shuffle=True, seed=4).write_parquet(
        path / PROMPTS_FILE)
    return path


@pytest.mark.parametrize("k,reject,balance", [(1, "farthest", False), (3, "random", False), (2, "farthest", True)])
def test_make_prefs_in_parts_equals_one_pass(folder, tmp_path, k, reject, balance):
    opts = dict(rollouts=folder, pairs_per_prompt=k, reject=reject, teacher_id="t", balance=balance)
    one = make_preferences(MakePrefsConfig(out=tmp_path / "one", **opts), teacher=gold_teacher)
    many = make_preferences(MakePrefsConfig(out=tmp_path / "many", part_rows=97, **opts), teacher=gold_teacher)
    assert one.counts == many.counts
    assert one.counts["pairs_teacher"] > 0 and one.counts["dropped_no_prompt"] == 1
    assert (one.counts.get("dropped_balance", 0) > 0) == balance
    for name in (PREFS_FILE, TEACHER_FILE):
        a, b = pl.read_parquet(tmp_path / "one" / name), pl.read_parquet(tmp_path / "many" / name)
        assert a.height > 0 and a.equals(b), name
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    # the part size is not part of the result: the other run's folder is up to date
    assert make_preferences(MakePrefsConfig(out=tmp_path / "one", part_rows=50, **opts), teacher=gold_teacher).skipped


def test_label_difficulty_in_parts_equals_one_pass(folder, tmp_path):
    one = label_difficulty(LabelDifficultyConfig(rollouts=folder, out=tmp_path / "one"))
    many = label_difficulty(LabelDifficultyConfig(rollouts=folder, out=tmp_path / "many", part_rows=101))
    assert one.counts == many.counts and one.counts["grpo"] > 0
    for name in (DIFFICULTY_FILE, GRPO_FILE):
        a, b = pl.read_parquet(tmp_path / "one" / name), pl.read_parquet(tmp_path / "many" / name)
        assert a.equals(b), name
        assert a[C.PAIR_ID].is_sorted()
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_a_teacher_failing_in_a_later_part_keeps_the_earlier_parts_answers(folder, tmp_path):
    asked = []

    def flaky(rows):
        asked.append(len(rows))
        if len(asked) == 3:
            raise RuntimeError("teacher server went away")
        return gold_teacher(rows)

    cfg = MakePrefsConfig(rollouts=folder, out=tmp_path / "prefs", part_rows=97, teacher_id="t", teacher_batch_size=2)
    with pytest.raises(RuntimeError, match="went away"):
        make_preferences(cfg, teacher=flaky)
    kept = pl.read_parquet(partial_file(cfg))
    # both earlier calls are kept, from different parts (a call of fewer rows than the batch ends a part)
    assert kept.height == sum(asked[:2]) and min(asked[:2]) < 2
    again = []
    make_preferences(cfg, teacher=lambda rows: again.extend(r[C.PAIR_ID] for r in rows) or gold_teacher(rows))
    assert not set(again) & set(kept[C.PAIR_ID]) and not partial_file(cfg).exists()


def test_parts_cover_every_row_once_in_increasing_ranges(tmp_path):
    ids = [f"id{i:03d}" for i in range(50)]
    random.Random(1).shuffle(ids)
    rows = pl.LazyFrame({C.PAIR_ID: [p for p in ids for _ in range(3)], "x": list(range(150))})
    prompts = pl.LazyFrame({C.PAIR_ID: ids[:45] + ["zzz"]})  # 5 ids without a prompt fall in some part too
    with pair_parts({"rows": rows, "prompts": prompts}, rows=150, per_part=40, tmp=tmp_path / "p",
                    bounds_from="prompts") as parts:
        assert len(parts) == 4
        got = [p["rows"].collect() for p in parts]
        assert all(g.height for g in got)
        assert sorted(pl.concat(got)["x"].to_list()) == list(range(150))
        for a, b in zip(got, got[1:]):
            assert a[C.PAIR_ID].max() < b[C.PAIR_ID].min()
    assert not (tmp_path / "p").exists()
    with pair_parts({"rows": rows}, rows=150, per_part=150, tmp=tmp_path / "q") as parts:
        assert parts == [{"rows": rows}] and not (tmp_path / "q").exists()


def test_a_part_without_rows_reads_as_empty(tmp_path):
    rows = pl.LazyFrame({C.PAIR_ID: ["a", "a", "z"], "x": [1, 2, 3]})
    prompts = pl.LazyFrame({C.PAIR_ID: ["a", "m", "n", "z"]})
    with pair_parts({"rows": rows, "prompts": prompts}, rows=4, per_part=1, tmp=tmp_path / "p",
                    bounds_from="prompts") as parts:
        sizes = [p["rows"].collect().height for p in parts]
        assert sum(sizes) == 3 and 0 in sizes
        assert parts[sizes.index(0)]["rows"].collect_schema() == rows.collect_schema()


@pytest.mark.parametrize("bad", [0, -3, "many", 2.5, None])
def test_bad_part_rows_is_a_one_line_error(bad, tmp_path):
    with pytest.raises(UserError, match="part_rows must be a whole number >= 1"):
        check_part_rows(bad)
    with pytest.raises(UserError, match="part_rows"):
        LabelDifficultyConfig(rollouts=tmp_path, out=tmp_path / "o", part_rows=bad)
