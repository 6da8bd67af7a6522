"""`toolkit label-difficulty`: pass rates, buckets, the gamma window, class balance and CV.

Run: .venv/bin/python -m pytest tests/test_difficulty.py -q
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from rollouts_data import write_rollouts

from toolkit.core import columns as C
from toolkit.difficulty import DIFFICULTY_FILE, GRPO_FILE, LabelDifficultyConfig, cv, label_difficulty, parse_buckets
from toolkit.core.errors import UserError


def group(gold: int, n: int, c: int) -> tuple:
    """n samples of which the first c are correct (the rest one grade off, or unparseable when gold is the lowest)."""
    wrong = gold - 1 if gold > 1 else None
    return (gold, [gold] * c + [wrong] * (n - c))


def run(tmp_path, groups, no_rollouts=None, scale="taosr4", **opts):
    folder = write_rollouts(tmp_path / "rollouts", groups, no_rollouts, scale=scale)
    result = label_difficulty(LabelDifficultyConfig(rollouts=folder, out=tmp_path / "diff", force=True, **opts))
    pairs = pl.read_parquet(tmp_path / "diff" / DIFFICULTY_FILE)
    grpo = pl.read_parquet(tmp_path / "diff" / GRPO_FILE)
    return result.counts, pairs, grpo


# (n samples, n correct, pass rate, bucket) with the default buckets unsolved=0,hard=0.4,medium=0.8,easy=1
BUCKETS = [
    (10, 0, 0.0, "unsolved"), (10, 1, 0.1, "hard"), (10, 4, 0.4, "hard"), (10, 5, 0.5, "medium"),
    (10, 8, 0.8, "medium"), (10, 9, 0.9, "easy"), (10, 10, 1.0, "easy"), (1, 0, 0.0, "unsolved"), (1, 1, 1.0, "easy"),
    (5, 2, 0.4, "hard"), (3, 1, 1 / 3, "hard"),
]


@pytest.mark.parametrize("n,c,rate,bucket", BUCKETS)
def test_pass_rate_and_bucket(tmp_path, n, c, rate, bucket):
    _, pairs, _ = run(tmp_path, {"a": group(3, n, c)})
    row = pairs.row(0, named=True)
    assert (row[C.N_SAMPLES], row[C.N_CORRECT], row[C.DIFFICULTY]) == (n, c, bucket)
    assert row[C.PASS_RATE] == pytest.approx(rate)


def test_unparseable_samples_are_wrong_and_a_pair_without_rollouts_has_no_rate(tmp_path):
    counts, pairs, _ = run(tmp_path, {"a": (1, [1, None, None, None])}, no_rollouts={"z": 4})
    a, z = pairs.row(0, named=True), pairs.row(1, named=True)
    assert a[C.PASS_RATE] == 0.25 and a[C.DIFFICULTY] == "hard"
    assert (z[C.N_SAMPLES], z[C.PASS_RATE], z[C.DIFFICULTY]) == (0, None, None)
    assert counts["dropped_no_rollouts"] == 1


# (gamma, n, c, kept in the GRPO window)
WINDOW = [
    (0.9, 10, 0, False), (0.9, 10, 1, True), (0.9, 10, 8, True), (0.9, 10, 9, False), (0.9, 10, 10, False),
    (0.7, 10, 7, False),  # 0.7 * 10 is 7.000000000000001 in floating point: still dropped
    (0.7, 10, 6, True), (1.0, 10, 9, True), (1.0, 10, 10, False), (0.75, 4, 3, False), (0.8, 16, 12, True),
    (0.9, 16, 14, True), (0.9, 16, 15, False), (0.9, 1, 1, False), (0.9, 1, 0, False), (1.0, 2, 1, True), (0.5, 2, 1, False),
]


@pytest.mark.parametrize("gamma,n,c,kept", WINDOW)
def test_gamma_window(tmp_path, gamma, n, c, kept):
    counts, _, grpo = run(tmp_path, {"a": group(4, n, c)}, gamma=gamma)
    assert grpo.height == int(kept) and counts["window"] == int(kept)


def test_drop_reasons_add_up(tmp_path):
    groups = {"w": group(4, 4, 0), "r": group(3, 4, 4), "h": group(2, 4, 1), "m": group(1, 4, 2), "e": group(4, 10, 9)}
    counts, _, _ = run(tmp_path, groups, no_rollouts={"z": 3}, balance=False)
    assert (counts["dropped_all_wrong"], counts["dropped_above_gamma"], counts["window"]) == (1, 2, 2)
    assert counts["dropped_no_rollouts"] + counts["dropped_all_wrong"] + counts["dropped_above_gamma"] + counts["window"] == counts["pairs"] == 6


def test_balance_equalises_grades_and_reports_cv(tmp_path):
    groups = {f"g4_{i}": group(4, 4, 2) for i in range(5)} | {f"g3_{i}": group(3, 4, 1) for i in range(3)}
    groups |= {f"g2_{i}": group(2, 4, 3) for i in range(2)} | {f"g1_{i}": group(1, 4, 2) for i in range(4)}
    counts, _, grpo = run(tmp_path, groups)
    assert counts["grades_before"] == {"4": 5, "3": 3, "2": 2, "1": 4}
    assert counts["grades_after"] == {"4": 2, "3": 2, "2": 2, "1": 2}
    assert counts["cv_before"] == pytest.approx(cv([5, 3, 2, 4])) and counts["cv_after"] == 0
    assert counts["dropped_balance"] == 6 and grpo.height == 8
    assert sorted(grpo[C.GRADE].value_counts()["count"].to_list()) == [2, 2, 2, 2]


def test_grade_absent_from_the_window_does_not_crash(tmp_path):
    groups = {f"a{i}": group(4, 4, 2) for i in range(3)} | {f"b{i}": group(3, 4, 1) for i in range(2)} | {"c": group(2, 4, 4)}
    counts, _, grpo = run(tmp_path, groups)
    assert counts["grades_absent"] == [2]
    assert counts["grades_after"] == {"4": 2, "3": 2, "2": 0}
    assert counts["cv_after"] == pytest.approx(cv([2, 2, 0])) and counts["cv_after"] > 0
    assert grpo.height == 4


def test_grade_absent_from_the_data_is_ignored(tmp_path):
    groups = {f"a{i}": group(4, 4, 2) for i in range(3)} | {f"b{i}": group(1, 4, 1) for i in range(2)}
    counts, _, _ = run(tmp_path, groups)  # no pair of grade 3 or 2 at all
    assert counts["grades_absent"] == [] and counts["grades_after"] == {"4": 2, "1": 2} and counts["cv_after"] == 0


def test_empty_window(tmp_path):
    counts, _, grpo = run(tmp_path, {"a": group(4, 3, 3), "b": group(2, 3, 0)})
    assert grpo.height == 0 and counts["grpo"] == 0 and counts["cv_before"] is None and counts["cv_after"] is None
    assert C.PROMPT in grpo.columns


def test_no_balance_keeps_the_window(tmp_path):
    groups = {f"a{i}": group(4, 4, 2) for i in range(3)} | {"b": group(3, 4, 1)}
    counts, _, grpo = run(tmp_path, groups, balance=False)
    assert grpo.height == 4 and counts["cv_before"] == counts["cv_after"] == pytest.approx(0.5)


def test_balanced_sample_is_seeded(tmp_path):
    groups = {f"a{i:02d}": group(4, 4, 2) for i in range(30)} | {f"b{i}": group(3, 4, 1) for i in range(5)}

    def chosen(seed):
        return run(tmp_path, groups, seed=seed)[2].filter(pl.col(C.GRADE) == 4)[C.PAIR_ID].to_list()

    assert chosen(0) == chosen(0) and chosen(0) != chosen(7)
    assert len(chosen(3)) == 5


def test_grpo_set_has_what_the_reward_needs(tmp_path):
    counts, pairs, grpo = run(tmp_path, {"a": group(3, 4, 2), "b": group(1, 4, 1)}, scale="three")
    row = grpo.filter(pl.col(C.PAIR_ID) == "a").row(0, named=True)
    assert row[C.PROMPT][-1] == {"role": "user", "content": "Query and item of a"}
    assert (row[C.GRADE], row[C.GOLD_LABEL], row[C.PASS_RATE], row[C.DIFFICULTY]) == (3, "3", 0.5, "medium")
    assert C.PROMPT not in pairs.columns and C.QUERY in pairs.columns


def test_grades_off_the_scale_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not on scale `binary`"):
        run(tmp_path, {"a": group(4, 2, 1)}, scale="binary")


def test_repeated_prompt_rows_are_a_user_error(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": group(4, 2, 1)})
    prompts = pl.read_parquet(folder / "prompts.parquet")
    pl.concat([prompts, prompts]).write_parquet(folder / "prompts.parquet")
    with pytest.raises(UserError, match="each pair needs exactly one"):
        label_difficulty(LabelDifficultyConfig(rollouts=folder, out=tmp_path / "d"))


@pytest.mark.parametrize("counts,expected", [([5, 5, 5, 5], 0.0), ([1, 3], 0.5), ([2, 2, 0], 2 ** 0.5 / 2), ([], None), ([0, 0], None)])
def test_cv(counts, expected):
    assert cv(counts) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("spec,expected", [
    ("unsolved=0,hard=0.4,medium=0.8,easy=1", {"unsolved": 0.0, "hard": 0.4, "medium": 0.8, "easy": 1.0}),
    ("low=0.5, high=1", {"low": 0.5, "high": 1.0}),
    ({"all": 1}, {"all": 1.0}),
])
def test_parse_buckets(spec, expected):
    assert parse_buckets(spec) == expected


@pytest.mark.parametrize("spec", ["hard=0.5,easy=0.9", "a=0.5,b=0.4,c=1", "a=x,b=1", "a=1.5", "nobound", "a=0.5,a=1", "a=-0.1,b=1"])
def test_bad_buckets(spec):
    with pytest.raises(UserError, match="--buckets"):
        parse_buckets(spec)


@pytest.mark.parametrize("gamma", [0, -0.5, 1.5, "x"])
def test_bad_gamma(tmp_path, gamma):
    with pytest.raises(UserError, match="gamma must be"):
        LabelDifficultyConfig(rollouts=tmp_path, out=tmp_path / "o", gamma=gamma)


def test_custom_buckets(tmp_path):
    _, pairs, _ = run(tmp_path, {"a": group(4, 4, 1), "b": group(4, 4, 3)}, buckets="hard=0.5,easy=1")
    assert pairs[C.DIFFICULTY].to_list() == ["hard", "easy"]


# -- the command line ------------------------------------------------------------------


def test_cli_label_difficulty_end_to_end(cli, tmp_path):
    groups = {"a": group(4, 4, 2), "b": group(3, 4, 1), "c": group(3, 4, 2), "d": group(2, 4, 4)}
    folder = write_rollouts(tmp_path / "r", groups, no_rollouts={"e": 1})
    r = cli("label-difficulty", folder, "-o", tmp_path / "d", "--gamma", "0.9", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("label-difficulty: 5 pairs (1 without rollouts) -> window 3 -> GRPO set 2") and "grade CV" in line
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["counts"]["grpo"] == 2 and manifest["counts"]["grades_absent"] == [2, 1]  # e (grade 1) has no rollouts
    assert "up to date" in cli("label-difficulty", folder, "-o", tmp_path / "d", "--gamma", "0.9", "--seed", "1").stdout


def test_cli_config_file(cli, tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": group(4, 4, 3)})
    cfg = tmp_path / "d.yaml"
    cfg.write_text("gamma: 1.0\nbalance: false\nbuckets: low=0.5,high=1\n")
    assert cli("label-difficulty", folder, "-o", tmp_path / "d", "--config", cfg).exit_code == 0
    assert pl.read_parquet(tmp_path / "d" / GRPO_FILE)[C.DIFFICULTY].to_list() == ["high"]


def test_cli_bad_gamma_is_one_line(cli, tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": group(4, 4, 3)})
    r = cli("label-difficulty", folder, "-o", tmp_path / "d", "--gamma", "2")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "gamma must be in (0, 1]" in r.stderr
