"""Metrics against hand-computed values on tiny fixtures (and scikit-learn as an oracle when installed).

Run: .venv/bin/python -m pytest tests/test_metrics.py -q
"""

import numpy as np
import polars as pl
import pytest

from toolkit.core.errors import UserError
from toolkit.core.grades import get_scale
from toolkit.core.metrics import (UNPARSED, check_probs, classification_metrics, confusion_matrix, grade_indices, hallucination, macro_f1,
    reliability)

TAOSR4 = get_scale("taosr4")
BINARY = get_scale("binary")

# gold and predicted grade values; scale order 4,3,2,1 -> indices 0,1,2,3
GOLD = [4, 4, 3, 3, 2, 1]
PRED = [4, 3, 3, 2, 2, 4]


def idx(values, scale=TAOSR4):
    return grade_indices(values, scale, allow_missing=True)


def test_confusion_matrix_rows_gold_columns_predicted_best_first():
    cm = confusion_matrix(idx(GOLD), idx(PRED), 4)
    # gold 4: predicted 4 once, 3 once; gold 3: 3 once, 2 once; gold 2: 2; gold 1: 4
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]]


def test_per_grade_macro_f1_and_accuracy_by_hand():
    m = classification_metrics(idx(GOLD), idx(PRED), TAOSR4)
    # tp = diag = [1, 1, 1, 0]; gold counts [2, 2, 1, 1]; predicted counts (column sums) [2, 2, 2, 0]
    # precision = tp/pred = [1/2, 1/2, 1/2, 0 (0/0)]; recall = tp/gold = [1/2, 1/2, 1, 0]
    # F1 = 2tp/(gold+pred) = [2/4, 2/4, 2/3, 0]; macro = (1/2 + 1/2 + 2/3 + 0)/4 = 5/12
    by = {g["grade"]: g for g in m["per_grade"]}
    assert [by[v]["precision"] for v in (4, 3, 2, 1)] == pytest.approx([0.5, 0.5, 0.5, 0.0])
    assert [by[v]["recall"] for v in (4, 3, 2, 1)] == pytest.approx([0.5, 0.5, 1.0, 0.0])
    assert [by[v]["f1"] for v in (4, 3, 2, 1)] == pytest.approx([0.5, 0.5, 2 / 3, 0.0])
    assert [by[v]["support"] for v in (4, 3, 2, 1)] == [2, 2, 1, 1]
    assert [by[v]["predicted"] for v in (4, 3, 2, 1)] == [2, 2, 2, 0]
    assert m["macro_f1"] == pytest.approx(5 / 12)
    assert m["accuracy"] == pytest.approx(3 / 6)  # diagonal 3 of 6 rows
    assert m["absent_grades"] == [] and m["n"] == 6 and m["n_unparsed"] == 0
    assert macro_f1(idx(GOLD), idx(PRED), 4) == pytest.approx(5 / 12)


def test_absent_grades_count_as_zero_in_macro_f1():
    m = classification_metrics(idx([4, 4, 3]), idx([4, 3, 3]), TAOSR4)
    # F1(4) = 2·1/(2+1) = 2/3; F1(3) = 2·1/(1+2) = 2/3; grades 2 and 1 occur nowhere -> F1 0
    # macro over the scale = (2/3 + 2/3 + 0 + 0)/4 = 1/3; over present grades = 2/3
    assert m["macro_f1"] == pytest.approx(1 / 3)
    assert m["macro_f1_present"] == pytest.approx(2 / 3)
    assert m["absent_grades"] == [2, 1]


def test_unparsed_predictions_are_misses_not_false_positives():
    m = classification_metrics(idx([4, 3, 3, 2]), idx([4, 3, None, 2]), TAOSR4)
    # tp [1,1,1,0]; gold counts [1,2,1,0]; predicted counts [1,1,1,0] (the unparsed row is in no column)
    # F1 = [2/2, 2/3, 2/2, 0]; macro = (1 + 2/3 + 1 + 0)/4 = 2/3; accuracy 3/4
    assert [g["f1"] for g in m["per_grade"]] == pytest.approx([1.0, 2 / 3, 1.0, 0.0])
    assert [g["recall"] for g in m["per_grade"]] == pytest.approx([1.0, 0.5, 1.0, 0.0])
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["n_unparsed"] == 1 and m["confusion"]["unparsed"] == [0, 1, 0, 0]


@pytest.mark.parametrize("gold,pred", [(GOLD, PRED), ([4, 4, 3], [4, 3, 3]), ([4, 3, 3, 2], [4, 3, None, 2]),
                                       ([1, 2, 2, 4, 3, 1, 1], [1, 1, 2, 4, 4, 3, None])])
def test_agrees_with_sklearn_labels_behaviour(gold, pred):
    sk = pytest.importorskip("sklearn.metrics")
    m = classification_metrics(idx(gold), idx(pred), TAOSR4)
    pred_sk = [-1 if p is None else p for p in pred]
    f1 = sk.f1_score(gold, pred_sk, labels=TAOSR4.values, average="macro", zero_division=0)
    p, r, f, s = sk.precision_recall_fscore_support(gold, pred_sk, labels=TAOSR4.values, zero_division=0)
    assert m["macro_f1"] == pytest.approx(f1)
    assert [g["precision"] for g in m["per_grade"]] == pytest.approx(list(p))
    assert [g["recall"] for g in m["per_grade"]] == pytest.approx(list(r))
    assert [g["f1"] for g in m["per_grade"]] == pytest.approx(list(f))
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(gold, pred_sk))
    cm = sk.confusion_matrix(gold, pred_sk, labels=TAOSR4.values)
    assert m["confusion"]["matrix"] == cm.tolist()


def test_ece_reliability_and_brier_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.5, 0.5]])
    gold = np.array([0, 1, 1, 1])
    r = reliability(probs, gold, n_bins=4)
    # top-label confidence .9 (right), .8 (wrong), .6 (right), .5 (argmax tie -> the better grade 0, wrong)
    # bins (0,.25] (.25,.5] (.5,.75] (.75,1]: counts [0, 1, 1, 2]
    # (.75,1]: conf (.9+.8)/2 = .85, acc 1/2 -> gap .35; (.5,.75]: .6 vs 1 -> .4; (.25,.5]: .5 vs 0 -> .5
    # ECE = 2/4·.35 + 1/4·.4 + 1/4·.5 = .4; MCE = .5
    assert [b["count"] for b in r["bins"]] == [0, 1, 1, 2]
    assert r["bins"][3]["confidence"] == pytest.approx(0.85) and r["bins"][3]["accuracy"] == pytest.approx(0.5)
    assert r["bins"][0]["confidence"] is None and r["bins"][0]["accuracy"] is None
    assert (r["bins"][1]["lo"], r["bins"][1]["hi"]) == (0.25, 0.5)
    assert r["ece"] == pytest.approx(0.4)
    assert r["mce"] == pytest.approx(0.5)
    # Brier: (.1²+.1²) + (.8²+.8²) + (.4²+.4²) + (.5²+.5²) = .02 + 1.28 + .32 + .5 = 2.12; /4 = .53
    assert r["brier"] == pytest.approx(0.53)


def test_ece_bin_edges_are_right_closed():
    # confidence 0.3 belongs to (0.2, 0.3] although 0.3 * 10 = 3.0000000000000004 in floats
    r = reliability(np.array([[0.3, 0.3, 0.2, 0.2], [0.31, 0.29, 0.2, 0.2]]), np.array([0, 1]), n_bins=10)
    assert r["bins"][2]["count"] == 1 and r["bins"][3]["count"] == 1


def test_perfect_calibration_has_zero_ece():
    # conf .75 in every row and 3 of 4 right -> gap 0
    probs = np.array([[0.75, 0.25]] * 4)
    assert reliability(probs, np.array([0, 0, 0, 1]))["ece"] == pytest.approx(0.0)


def test_check_probs_renormalises_and_accepts_polars_lists():
    col = pl.Series("grade_probs", [[0.5, 0.3, 0.1, 0.0995], [0.25, 0.25, 0.25, 0.25]])
    p = check_probs(col, TAOSR4)
    assert p.shape == (2, 4)
    assert p.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-15)
    assert p[1].tolist() == [0.25] * 4
    assert check_probs([[0.2, 0.8]], BINARY).tolist() == [[0.2, 0.8]]


@pytest.mark.parametrize("rows,needle", [
    ([[0.5, 0.5]], "row 1: grade_probs has 2 numbers; need 4 probabilities"),
    ([[0.25] * 4, None], "row 2: grade_probs has nothing"),
    ([[0.5, 0.3, 0.1, 0.0]], "row 1: grade_probs sums to 0.9 (must be 1 ± 0.001)"),
    ([[0.7, 0.3, 0.2, -0.2]], "negative"),
    ([[0.5, 0.5, float("nan"), 0.0]], "missing, infinite or negative"),
])
def test_check_probs_errors_are_one_line(rows, needle):
    with pytest.raises(UserError) as e:
        check_probs(rows, TAOSR4)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_grade_indices_rejects_grades_off_the_scale():
    assert grade_indices([4, "3", 1.0], TAOSR4).tolist() == [0, 1, 3]
    with pytest.raises(UserError, match=r"row 2: gold grade 7 is not on scale `taosr4`"):
        grade_indices([4, 7], TAOSR4, "gold grade")
    with pytest.raises(UserError, match="row 1: grade is missing"):
        grade_indices([None], TAOSR4)
    assert grade_indices([None], TAOSR4, allow_missing=True).tolist() == [UNPARSED]


def test_hallucination_by_hand():
    emitted = ["4", "3", "2", None, "1"]
    rationales = [
        "1. Query: a mug\n5. Decision: Excellent, the item is the queried mug",  # says 4, emits 4: agree
        "4. Attributes: wrong size\n5. Decision: Irrelevant, another product",  # says 1, emits 3: disagree (gold 1)
        "The item is an accessory.",  # no decision step: not counted
        "5. Decision: Related",  # unparsed answer: not counted
        "Decision: 2",  # says 2 (by label), emits 1: disagree (gold 1: the label was right)
    ]
    gold = [4, 1, 2, 3, 1]
    h = hallucination(emitted, rationales, gold, TAOSR4)
    # denominator = parsed answers with a decision step naming a grade = rows 1, 2, 5 -> 3; numerator = rows 2, 5 -> 2
    assert (h["numerator"], h["denominator"]) == (2, 3)
    assert h["rate"] == pytest.approx(2 / 3)
    assert (h["n_answers"], h["n_parsed"], h["no_decision"], h["rationale_right_label_wrong"]) == (5, 4, 1, 1)
    assert hallucination([None], ["x"], [4], TAOSR4)["rate"] is None


# -- bootstrap intervals over query groups ---------------------------------------------------


def _reference_bootstrap(gold, pred, groups, k, resamples, seed, level=0.95):
    """The slow way: draw whole groups with replacement (the same generator calls), concatenate their rows, macro_f1."""
    names = sorted(set(groups))
    rows = {g: [i for i, x in enumerate(groups) if x == g] for g in names}
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(resamples):
        idx = [i for j in rng.integers(0, len(names), len(names)) for i in rows[names[j]]]
        vals.append(macro_f1(gold[idx], pred[idx], k))
    return list(np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2]))


def test_bootstrap_interval_is_the_resampled_macro_f1_of_whole_groups():
    from toolkit.core.metrics import bootstrap_macro_f1

    rng = np.random.default_rng(5)
    gold = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.6, gold, rng.integers(0, 4, 300))
    pred[::17] = UNPARSED
    groups = [f"q{i % 37}" for i in range(300)]
    got = bootstrap_macro_f1(gold, pred, groups, 4, resamples=200, seed=3)
    assert got["groups"] == 37 and got["resamples"] == 200
    assert np.allclose(got["macro_f1"], _reference_bootstrap(gold, pred, groups, 4, 200, 3))
    lo, hi = got["macro_f1"]
    assert lo < macro_f1(gold, pred, 4) < hi
    assert bootstrap_macro_f1(gold, pred, groups, 4, resamples=200, seed=3) == got  # seeded


def test_correlated_pairs_of_one_query_widen_the_interval():
    """20 queries of 10 pairs, each query all right or all wrong: resampling queries, not pairs, shows how little
    200 such pairs tell."""
    from toolkit.core.metrics import bootstrap_macro_f1

    gold = np.tile(np.arange(4).repeat(5)[:10], 20) % 4
    right = np.repeat(np.random.default_rng(0).random(20) < 0.5, 10)
    pred = np.where(right, gold, (gold + 1) % 4)
    by_query = bootstrap_macro_f1(gold, pred, [f"q{i // 10}" for i in range(200)], 4, resamples=500)["macro_f1"]
    by_pair = bootstrap_macro_f1(gold, pred, [f"p{i}" for i in range(200)], 4, resamples=500)["macro_f1"]
    assert by_query[1] - by_query[0] > 1.5 * (by_pair[1] - by_pair[0])


def test_eval_reports_the_interval_over_queries(tmp_path, cli):
    rng = np.random.default_rng(1)
    n = 60
    gold = rng.integers(1, 5, n)
    probs = rng.dirichlet(np.ones(4), n)
    df = pl.DataFrame({"pair_id": [f"p{i}" for i in range(n)], "grade": gold, "query": [f"q{i // 6}" for i in range(n)],
                       "grade_probs": probs.tolist()})
    df.write_parquet(tmp_path / "preds.parquet")
    r = cli("eval", "--predictions", tmp_path / "preds.parquet", "-o", tmp_path / "ev", "--no-plots")
    assert r.exit_code == 0, r.output
    import json

    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["bootstrap"]["by"] == "query" and m["bootstrap"]["groups"] == 10
    lo, hi = m["bootstrap"]["macro_f1"]
    assert lo <= m["macro_f1"] <= hi and f"[{lo:.4f}, {hi:.4f}]" in r.stdout
    r = cli("eval", "--predictions", tmp_path / "preds.parquet", "-o", tmp_path / "ev0", "--no-plots", "--bootstrap", 0)
    assert json.loads((tmp_path / "ev0" / "metrics.json").read_text())["bootstrap"] is None
    r = cli("eval", "--predictions", tmp_path / "preds.parquet", "-o", tmp_path / "ev1", "--bootstrap", -1)
    assert r.exit_code != 0 and "--bootstrap must be >= 0" in r.output


# -- order within queries (toolkit.core.ranking) ----------------------------------------------


def test_ndcg_with_ties_and_spearman_agree_with_sklearn_and_scipy():
    """Tie-aware NDCG@k equals scikit-learn's ndcg_score (which averages tied positions the same way) on gains
    2^rel - 1; Spearman's ρ equals scipy's, ties included; a constant side has no ρ."""
    metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    from toolkit.core.ranking import ndcg_at, spearman

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        n = int(rng.integers(2, 30))
        rel = rng.integers(0, 4, n)
        scores = rng.integers(0, 4, n).astype(float)  # few distinct scores: many ties
        gains = 2.0 ** rel - 1
        if gains.max() == 0:
            continue
        for k in (3, 10):
            assert ndcg_at(gains, scores, k) == pytest.approx(metrics.ndcg_score([gains], [scores], k=k))
        if len(set(rel)) > 1 and len(set(scores)) > 1:
            assert spearman(scores, rel) == pytest.approx(stats.spearmanr(scores, rel).statistic)
        checked += 1
    assert checked > 150
    assert spearman(np.ones(5), np.arange(5)) is None


def test_ranking_metrics_leave_out_one_grade_queries_and_give_the_random_floor():
    """Per query: a perfect order scores 1, a reversed one below the floor; a query with one gold grade cannot be
    ordered wrong and is left out (and counted); one score for every pair gets exactly the random-order floor."""
    from toolkit.core.ranking import ndcg_at, ranking_metrics, scores_of

    gold = np.array([0, 1, 2, 3, 3, 2, 1, 0, 1, 1, 1])  # scale indices, 0 = best grade
    queries = ["a"] * 4 + ["b"] * 4 + ["c"] * 3
    scores = np.array([4, 3, 2, 1, 4, 3, 2, 1, 0, 5, 9], dtype=float)  # a: perfect, b: reversed, c: one grade
    m = ranking_metrics(gold, scores, queries, 4, k=10, resamples=200)
    gains = 2.0 ** np.array([3, 2, 1, 0]) - 1
    reversed_b = ndcg_at(gains[::-1], np.array([4, 3, 2, 1.0]), 10)
    floor = ndcg_at(gains, np.zeros(4), 10)
    assert reversed_b < floor < 1
    assert m["ndcg@10"] == pytest.approx((1 + reversed_b) / 2) and m["ndcg@10_random"] == pytest.approx(floor)
    assert (m["queries"], m["queries_one_grade"]) == (2, 1)
    lo, hi = m["ndcg@10_interval"]
    assert reversed_b <= lo <= m["ndcg@10"] <= hi <= 1
    flat = ranking_metrics(gold, np.full(len(gold), 0.3), queries, 4)
    assert flat["ndcg@10"] == pytest.approx(flat["ndcg@10_random"]) and flat["spearman"] is None
    assert "ndcg@10" not in ranking_metrics(gold, scores, None, 4)  # no query column: ρ only
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 1.0]])
    assert scores_of(probs, np.array([0, 3]), 4).tolist() == pytest.approx([2.4, 0.0])  # expected relevance
    assert scores_of(None, np.array([0, 3, UNPARSED]), 4).tolist() == [3.0, 0.0, -1.0]  # unparsed lowest


def test_every_query_at_once_equals_one_query_at_a_time():
    """The vectorised per-query NDCG (one sort for all queries: 1M pairs of 100k queries in seconds, where a loop over
    queries took 100 s) equals ndcg_at query by query, ties, short queries and one-grade queries included."""
    from toolkit.core.ranking import ndcg_at, per_query_ndcg

    rng = np.random.default_rng(1)
    n = 3000
    groups = [f"q{i}" for i in rng.integers(0, 400, n)]
    rel = rng.integers(0, 4, n)
    scores = rng.integers(0, 6, n).astype(float)
    ndcg, floor, informative = per_query_ndcg(rel, scores, groups, 10)
    names = sorted(set(groups))
    assert len(ndcg) == len(names) and 0 < informative.sum() < len(names)
    for i, name in enumerate(names):
        rows = np.flatnonzero(np.asarray(groups) == name)
        gains = 2.0 ** rel[rows] - 1
        assert informative[i] == (len(set(rel[rows])) > 1 and gains.max() > 0)
        if informative[i]:
            assert ndcg[i] == pytest.approx(ndcg_at(gains, scores[rows], 10))
            assert floor[i] == pytest.approx(ndcg_at(gains, np.zeros(len(rows)), 10))


def test_the_bootstrap_of_many_groups_stays_small_in_memory():
    """Without a query column every pair is its own group: for 1M pairs `toolkit eval` once built a (resamples,
    groups) matrix and peaked at 16 GB. One resample at a time, memory grows with the rows only (same draws, same
    intervals)."""
    import tracemalloc

    from toolkit.core.metrics import bootstrap_macro_f1

    rng = np.random.default_rng(0)
    n = 1_000_000
    gold, pred = rng.integers(0, 4, n), rng.integers(0, 4, n)
    groups = np.arange(n)
    tracemalloc.start()
    try:
        out = bootstrap_macro_f1(gold, pred, groups, 4, resamples=40)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 250e6, peak  # the (40, 1M) matrix alone was 320 MB, and the per-group counts 128 MB more
    lo, hi = out["macro_f1"]
    assert lo <= macro_f1(gold, pred, 4) <= hi and out["groups"] == n
