"""`toolkit review select` (issue 16, item 1): what goes to reviewers, chosen by policy under a budget.

Run: .venv/bin/python -m pytest tests/test_review_select.py -q
"""

from __future__ import annotations

import polars as pl
import pytest

from checks import one_line_error
from toolkit.core.stagefolder import read_manifest, write_manifest
from toolkit.core.grades import get_scale

# gold grade, grade_probs (best grade first): rows a..h
ROWS = {
    "a": (4, [0.25, 0.25, 0.25, 0.25]),  # no idea: entropy 1, margin 1
    "b": (4, [0.97, 0.01, 0.01, 0.01]),  # sure and right
    "c": (1, [0.97, 0.01, 0.01, 0.01]),  # sure and wrong: likely label noise
    "d": (3, [0.10, 0.45, 0.44, 0.01]),  # a close call
    "e": (2, [0.05, 0.05, 0.85, 0.05]),
    "f": (2, [0.40, 0.30, 0.20, 0.10]),
    "g": (1, [0.01, 0.01, 0.03, 0.95]),
    "h": (3, [0.32, 0.30, 0.28, 0.10]),
}


@pytest.fixture
def scores(tmp_path):
    out = tmp_path / "scores"
    out.mkdir()
    pl.DataFrame({"pair_id": list(ROWS), "grade": [g for g, _ in ROWS.values()], "split": ["dev"] * len(ROWS),
                  "grade_probs": [p for _, p in ROWS.values()], "pred_grade": [4 - max(range(4), key=p.__getitem__) for _, p in ROWS.values()]}
                 ).write_parquet(out / "predictions.parquet")
    write_manifest(out, "score", {}, {}, {"pairs": len(ROWS)}, {"grade_scale": get_scale("taosr4").to_dict(), "model": "m"})
    return out


def _picked(folder):
    df = pl.read_parquet(folder / "predictions.parquet")
    return df.sort("select_rank")["pair_id"].to_list()


@pytest.mark.parametrize("policy,budget,first", [("entropy", "2", ["a", "h"]), ("margin", "2", ["a", "d"]), ("disagreement", "1", ["c"])])
def test_each_policy_puts_its_rows_first(cli, scores, tmp_path, policy, budget, first):
    r = cli("review", "select", scores, "-o", tmp_path / "sel", "--policy", policy, "--budget", budget, "--stratify", "none")
    assert r.exit_code == 0, r.stderr
    assert _picked(tmp_path / "sel") == first
    m = read_manifest(tmp_path / "sel")
    assert m["stage"] == "review-select" and m["policy"]["name"] == policy and m["grade_scale"]["name"] == "taosr4" and m["source_stage"] == "score"


def test_a_share_of_the_rows_stratified_by_grade(cli, scores, tmp_path):
    assert cli("review", "select", scores, "-o", tmp_path / "sel", "--budget", "50%").exit_code == 0
    df = pl.read_parquet(tmp_path / "sel/predictions.parquet")
    assert df.height == 4 and sorted(df["grade"].to_list()) == [1, 2, 3, 4]  # 2 rows of each grade -> one each
    assert set(df.columns) >= {"pair_id", "grade", "grade_probs", "pred_grade", "select_score", "select_rank"}
    assert df.sort("select_rank")["select_score"].is_sorted(descending=True)


def test_random_is_a_seeded_control(cli, scores, tmp_path):
    picks = []
    for seed in (1, 1, 2):
        out = tmp_path / f"r{len(picks)}"
        assert cli("review", "select", scores, "-o", out, "--policy", "random", "--budget", "4", "--stratify", "none", "--seed", seed).exit_code == 0
        picks.append(_picked(out))
    assert picks[0] == picks[1] and picks[0] != picks[2]


def test_hard_cases_from_a_difficulty_folder_with_a_cap_per_query(cli, tmp_path):
    out = tmp_path / "difficulty"
    out.mkdir()
    pl.DataFrame({"pair_id": ["p1", "p2", "p3", "p4"], "grade": [4, 4, 2, 1], "query": ["shoe", "Shoe ", "mug", "lamp"],
                  "pass_rate": [0.0, 0.1, 0.5, 1.0]}).write_parquet(out / "difficulty.parquet")
    write_manifest(out, "label-difficulty", {}, {}, {"pairs": 4}, {"grade_scale": get_scale("taosr4").to_dict()})
    r = cli("review", "select", out, "-o", tmp_path / "sel", "--policy", "hard", "--budget", "2", "--stratify", "none", "--max-per-query", "1")
    assert r.exit_code == 0, r.stderr
    df = pl.read_parquet(tmp_path / "sel/difficulty.parquet").sort("select_rank")
    assert df["pair_id"].to_list() == ["p1", "p3"]  # p2 is the same query as p1 (case and spacing ignored)
    from annotation.inputs import read_rows
    from annotation.settings import get_kind

    rows, files = read_rows(get_kind("hard"), tmp_path / "sel")  # what `review push --kind hard` reads
    assert rows.height == 2 and files == ["difficulty.parquet"]


@pytest.mark.parametrize("args,needle", [
    (["--budget", "0"], "give at least 1 row"),
    (["--budget", "ten"], "give a number of rows"),
    (["--budget", "150%"], "a share in (0%, 100%]"),
    (["--max-per-query", "2", "--budget", "2"], "needs a `query` column"),
    (["--policy", "hard", "--budget", "2"], "needs a `pass_rate` column"),
    (["--policy", "nope"], "Invalid value for '--policy'"),
])
def test_bad_options_are_one_line_and_write_nothing(cli, scores, tmp_path, args, needle):
    one_line_error(cli("review", "select", scores, "-o", tmp_path / "sel", *args), needle)
    assert not (tmp_path / "sel").exists()


@pytest.mark.parametrize("scale", ["taosr4", "three", "five", "esci", "binary"])
def test_the_grade_options_run_lowest_first_so_the_key_typed_is_the_grade(scale):
    from annotation.settings import grade_labels

    s = get_scale(scale)
    keys = list(grade_labels(s))
    assert keys == [str(v) for v in sorted(g.value for g in s.grades)]
    assert all(text.startswith(f"{k} ") for k, text in grade_labels(s).items())


def test_boundary_puts_rows_near_the_cumpt_cut_first(cli, scores, tmp_path):
    # cumulative best-first probabilities against beta 0.5: a hits 0.5 exactly, d is 0.05 off, f 0.10, h 0.12
    r = cli("review", "select", scores, "-o", tmp_path / "sel", "--policy", "boundary", "--beta", "0.5", "--budget", "3", "--stratify", "none")
    assert r.exit_code == 0, r.stderr
    assert _picked(tmp_path / "sel") == ["a", "d", "f"]
    # the fitted beta of `toolkit tier fit` is the cut when --tiers names its folder
    assert cli("tier", "fit", "--predictions", scores, "--split", "dev", "-o", tmp_path / "tiers").exit_code == 0
    import json

    import numpy as np

    beta = json.loads((tmp_path / "tiers" / "tiers.json").read_text())["beta"]
    r = cli("review", "select", scores, "-o", tmp_path / "sel2", "--policy", "boundary", "--tiers", tmp_path / "tiers", "--budget", "100%", "--stratify", "none")
    assert r.exit_code == 0, r.stderr
    df = pl.read_parquet(tmp_path / "sel2" / "predictions.parquet")
    want = {k: 1 - np.abs(np.cumsum(p)[:-1] - beta).min() for k, (_, p) in ROWS.items()}
    assert dict(zip(df["pair_id"], df["select_score"])) == pytest.approx(want)
    for args, needle in ((["--policy", "boundary"], "needs the CumPT"), (["--policy", "boundary", "--beta", "1.5"], "--beta must be in (0, 1)")):
        one_line_error(cli("review", "select", scores, "-o", tmp_path / "bad", *args), needle)
        assert not (tmp_path / "bad").exists()
