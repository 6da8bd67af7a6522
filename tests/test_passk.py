"""pass@k (the unbiased estimator), its report and `toolkit passk`; also the rollouts folder contract
(`toolkit.rollouts`: rows from generations, reading with clear errors).

Run: .venv/bin/python -m pytest tests/test_passk.py -q
"""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import polars as pl
import pytest
from rollouts_data import rollouts_frame, write_rollouts

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.generation.base import Generation
from toolkit.core.grades import get_scale
from toolkit.passk import pass_at_k, passk_report, passk_table
from toolkit.rollouts import grade_probs, rollout_rows, scan_rollouts

# (n, c, k, pass@k) computed by hand: 1 - C(n-c, k) / C(n, k)
HAND = [
    (5, 0, 1, 0.0), (5, 5, 1, 1.0), (5, 1, 1, 0.2), (5, 1, 2, 0.4), (5, 2, 2, 1 - 3 / 10), (5, 1, 5, 1.0),
    (10, 3, 5, 1 - 21 / 252), (4, 2, 3, 1.0), (1, 1, 1, 1.0), (1, 0, 1, 0.0), (16, 8, 1, 0.5), (3, 1, 2, 1 - 1 / 3),
]


@pytest.mark.parametrize("n,c,k,expected", HAND)
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_enumerating_all_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n,c,k", [(200, 3, 100), (1000, 1, 1), (1000, 10, 500), (64, 60, 2)])
def test_pass_at_k_is_stable_for_large_n(n, c, k):
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, 1, 0), (5, 1, 6), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def _table(groups):
    t = passk_table(rollouts_frame(groups))
    return {(g, k): (v, n) for g, k, v, n in t.select(C.GRADE, "k", "pass_at_k", "pairs").iter_rows()}


def test_table_averages_pairs_overall_and_per_grade():
    groups = {"a": (4, [4, 3, 3, 3]), "b": (4, [4, 4, 1, 1]), "c": (2, [1, 1, 1, 1]), "d": (2, [2, None, None, None])}
    t = _table(groups)
    assert t[("4", 1)] == (pytest.approx((0.25 + 0.5) / 2), 2)
    assert t[("4", 2)][0] == pytest.approx((0.5 + (1 - 1 / 6)) / 2)
    assert t[("2", 4)] == (pytest.approx(0.5), 2)  # unparseable samples are wrong
    assert t[("all", 1)] == (pytest.approx((0.25 + 0.5 + 0 + 0.25) / 4), 4)
    assert t[("all", 4)][0] == pytest.approx(0.75)
    assert ("3", 1) not in t and ("1", 1) not in t  # grades absent from the rollouts have no rows


def test_pairs_with_fewer_samples_than_k_are_left_out():
    t = _table({"a": (4, [4]), "b": (4, [1, 4, 1])})
    assert t[("all", 1)] == (pytest.approx((1 + 1 / 3) / 2), 2)
    assert t[("all", 3)] == (1.0, 1)
    assert ("all", 4) not in t


def test_report_files(tmp_path):
    groups = {"a": (4, [4, 1]), "b": (1, [2, 1]), "c": (1, [2, 2])}
    rep = passk_report(rollouts_frame(groups), get_scale("taosr4"), tmp_path / "r")
    names = sorted(p.name for p in rep.files)
    assert names == ["passk.csv", "passk.json", "passk.md", "passk.png"]
    assert (tmp_path / "r" / "passk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "r" / "passk.md").read_text()
    assert "| k | all | 4 Excellent | 3 Related | 2 Mismatch | 1 Irrelevant |" in md
    assert "| 1 | 33.3% | 50.0% | - | - | 25.0% |" in md and "| pairs | 3 | 1 | 0 | 0 | 2 |" in md
    js = json.loads((tmp_path / "r" / "passk.json").read_text())
    assert js["k"] == [1, 2] and js["pass_at_k"]["all"] == pytest.approx([1 / 3, 2 / 3]) and "3" not in js["pass_at_k"]
    csv = pl.read_csv(tmp_path / "r" / "passk.csv")
    assert csv.columns == [C.GRADE, "k", "pass_at_k", "pairs"] and csv.height == 2 + 2 + 2
    assert rep.summary() == "pass@1 33.3% -> pass@2 66.7%" and rep.pairs == 3 and rep.value(2, 4) == 1.0


def test_report_without_files_or_plot(tmp_path):
    rep = passk_report(rollouts_frame({"a": (4, [4, 1])}), get_scale(), None)
    assert rep.files == [] and rep.value(1) == 0.5
    rep = passk_report(rollouts_frame({"a": (4, [4, 1])}), get_scale(), tmp_path, with_plot=False)
    assert not (tmp_path / "passk.png").exists() and (tmp_path / "passk.md").exists()


def test_report_of_no_rollouts_and_off_scale_grades():
    empty = rollouts_frame({})
    assert passk_report(empty, get_scale(), None).summary() == "pass@k: no rollouts"
    with pytest.raises(UserError, match="not on scale `binary`"):
        passk_report(rollouts_frame({"a": (4, [4])}), get_scale("binary"), None)


# -- the rollouts folder contract ------------------------------------------------------------


def test_rollout_rows_parse_grade_and_score_generations():
    scale = get_scale("taosr4")
    lp = {"4": math.log(0.6), "3": math.log(0.3), "2": math.log(0.1)}
    gens = [
        Generation(texts=["4\nReason: exact match", "2\nReason: accessory"], finish_reasons=["stop", "stop"], grade_logprobs=[lp, None]),
        Generation(texts=["", "Grade 7"], finish_reasons=["length", "stop"]),
    ]
    df = rollout_rows(["a", "b"], [4, 1], gens, scale)
    assert df.columns == [C.PAIR_ID, C.SAMPLE_IDX, C.TEXT, C.FINISH_REASON, C.PARSE_STATUS, C.PRED_GRADE, C.GRADE, C.CORRECT, C.GRADE_PROBS]
    rows = df.rows(named=True)
    assert [(r[C.PAIR_ID], r[C.SAMPLE_IDX], r[C.PARSE_STATUS], r[C.PRED_GRADE], r[C.CORRECT]) for r in rows] == [
        ("a", 0, "ok", 4, True), ("a", 1, "ok", 2, False), ("b", 0, "truncated", None, False), ("b", 1, "invalid_label", None, False),
    ]
    assert rows[0][C.GRADE_PROBS] == pytest.approx([0.6, 0.3, 0.1, 0.0]) and rows[1][C.GRADE_PROBS] is None


@pytest.mark.parametrize("logprobs,expected", [
    ({"4": 0.0, "3": 0.0}, [0.5, 0.5, 0.0, 0.0]),
    ({"1": -1.0}, [0.0, 0.0, 0.0, 1.0]),
    ({"x": -1.0}, None),
    (None, None),
])
def test_grade_probs_softmax_over_grade_labels_best_first(logprobs, expected):
    got = grade_probs(logprobs, get_scale("taosr4"))
    assert got == (None if expected is None else pytest.approx(expected))


def test_scan_rollouts_errors(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        scan_rollouts(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no rollouts.parquet"):
        scan_rollouts(tmp_path / "empty")
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4])})
    (folder / "rollouts.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="cannot read Parquet"):
        scan_rollouts(folder)


def test_null_correct_counts_as_wrong(tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 4])})
    ro = pl.read_parquet(folder / "rollouts.parquet").with_columns(pl.when(pl.col(C.SAMPLE_IDX) == 1).then(None).otherwise(pl.col(C.CORRECT)).alias(C.CORRECT))
    ro.write_parquet(folder / "rollouts.parquet")
    assert passk_report(scan_rollouts(folder), get_scale(), None).value(1) == 0.5


# -- the command line ------------------------------------------------------------------


def test_cli_passk_prints_and_writes(cli, tmp_path):
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 1, 1]), "b": (2, [2, 2, 1])}, no_rollouts={"c": 3})
    r = cli("passk", folder)
    assert r.exit_code == 0, r.stderr
    assert "| 1 | 50.0% |" in r.stdout and r.stdout.strip().splitlines()[-1] == "passk: pass@1 50.0% -> pass@3 100.0%"
    r = cli("passk", folder, "-o", tmp_path / "pk")
    assert r.exit_code == 0 and "wrote passk.md, passk.json, passk.csv, passk.png" in r.stdout
    manifest = json.loads((tmp_path / "pk" / "manifest.json").read_text())
    assert manifest["counts"] == {"pairs": 2} and manifest["stage"] == "passk"
    assert "up to date" in cli("passk", folder, "-o", tmp_path / "pk").stdout


def test_cli_passk_errors_are_one_line(cli, tmp_path):
    r = cli("passk", tmp_path / "nope")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    r = cli("passk")
    assert r.exit_code == 2 and "pass a rollouts folder" in r.stderr
    folder = write_rollouts(tmp_path / "r", {"a": (4, [4, 1])})
    r = cli("passk", folder, "--scale", "binary")
    assert r.exit_code == 2 and "not on scale `binary`" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert cli("passk", folder, "--scale", "five").exit_code == 0
