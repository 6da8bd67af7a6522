"""CumPT on worked examples (β edge cases, 3/4/5-grade and binary scales), the exact β fit, the
Good-rate objective, expected-score thresholds and the tier rule file.

Run: .venv/bin/python -m pytest tests/test_cumpt.py -q
"""

import itertools
import json

import numpy as np
import pytest

from toolkit.cumpt import (
    TierRule,
    beta_curve,
    compare_decisions,
    cumpt_predict,
    default_tiers,
    expected_scores,
    fit_beta,
    fit_rule,
    fit_thresholds,
    parse_tiers,
    threshold_predict,
)
from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale, get_scale
from toolkit.core.metrics import macro_f1

TAOSR4 = get_scale("taosr4")


def grades(probs, beta, scale=TAOSR4, **kw):
    """CumPT's grade values for a list of probability rows."""
    return [scale.values[i] for i in cumpt_predict(np.array(probs, dtype=float), beta, **kw)]


# -- the rule on worked examples ----------------------------------------------------------


@pytest.mark.parametrize("beta,grade", [
    # P(4..1) = .1 .3 .4 .2 -> cumulative .1 .4 .8 1.0
    (0.0, 4),  # β = 0: always the top grade
    (0.1, 4),  # cum(4) = .1 reaches β exactly: ties go to the better grade
    (0.1000001, 3),
    (0.4, 3),  # .1 + .3 = .4
    (0.5, 2),
    (0.8, 2),  # .1 + .3 + .4 = .8 (float sum within tol)
    (0.81, 1),
    (1.0, 1),  # β = 1: where the cumulative sum reaches 1
])
def test_worked_example_taosr4(beta, grade):
    assert grades([[0.1, 0.3, 0.4, 0.2]], beta) == [grade]


def test_beta_one_stops_at_the_last_grade_with_probability():
    # P = .5 .5 0 0: cumulative reaches 1 at grade 3, so β = 1 gives 3 (not the bottom grade)
    assert grades([[0.5, 0.5, 0.0, 0.0]], 1.0) == [3]
    # a bottom probability below the tolerance (1e-9) counts as 0
    assert grades([[0.5, 0.5 - 1e-12, 0.0, 1e-12]], 1.0) == [3]
    assert grades([[0.5, 0.5 - 1e-6, 0.0, 1e-6]], 1.0) == [1]


def test_float_rounding_is_absorbed_by_the_tolerance():
    p = [[0.7, 0.1, 0.2, 0.0]]
    assert 0.7 + 0.1 < 0.8  # 0.7999999999999999 in floats
    assert grades(p, 0.8) == [3]
    assert grades(p, 0.8, tol=0.0) == [2]


def test_every_row_gets_a_grade_and_beta_out_of_range_is_an_error():
    assert grades([[0.25] * 4, [1.0, 0, 0, 0], [0, 0, 0, 1.0]], 1.0) == [1, 4, 1]
    with pytest.raises(UserError, match=r"beta must be in \[0, 1\]; got 1.5"):
        cumpt_predict(np.array([[0.25] * 4]), 1.5)


def test_three_grade_scale():
    three = get_scale("three")  # 3 Exact, 2 Partial, 1 Irrelevant
    p = [[0.2, 0.5, 0.3]]  # cumulative .2 .7 1.0
    assert [grades(p, b, three)[0] for b in (0.0, 0.2, 0.5, 0.7, 0.9, 1.0)] == [3, 3, 2, 2, 1, 1]
    tiers = default_tiers(three)
    assert tiers == {"Good": [3], "Mid": [2], "Bad": [1]}
    rule = TierRule(0.5, three, tiers)
    values, names = rule.predict(np.array(p))
    assert values.tolist() == [2] and names == ["Mid"]


def test_five_grade_scale():
    five = get_scale("five")  # 5 Perfect .. 1 Bad
    p = [[0.05, 0.15, 0.3, 0.3, 0.2]]  # cumulative .05 .2 .5 .8 1.0
    assert [grades(p, b, five)[0] for b in (0.0, 0.15, 0.5, 0.6, 0.85, 1.0)] == [5, 4, 3, 2, 1, 1]
    assert default_tiers(five) == {"Good": [5, 4], "Mid": [3], "Bad": [2, 1]}
    values, names = TierRule(0.6, five, default_tiers(five)).predict(np.array(p))
    assert values.tolist() == [2] and names == ["Bad"]


def test_default_tier_maps():
    assert default_tiers(TAOSR4) == {"Good": [4, 3], "Mid": [2], "Bad": [1]}
    assert default_tiers(get_scale("esci")) == {"Good": [4, 3], "Mid": [2], "Bad": [1]}
    assert default_tiers(get_scale("binary")) == {"Good": [2], "Bad": [1]}
    six = GradeScale.from_dict({"name": "six", "grades": [{"value": v} for v in range(6, 0, -1)]})
    assert default_tiers(six) == {"Good": [6, 5], "Mid": [4, 3], "Bad": [2, 1]}


def test_parse_tiers():
    assert parse_tiers("Good=4,3;Mid=2;Bad=1", TAOSR4) == {"Good": [4, 3], "Mid": [2], "Bad": [1]}
    assert parse_tiers("Top=4;Rest=3,2,1", TAOSR4) == {"Top": [4], "Rest": [3, 2, 1]}
    assert parse_tiers(None, TAOSR4) == default_tiers(TAOSR4)
    for bad, needle in [("Good=4,3;Bad=1", "missing [2]"), ("Good=4,3;Mid=2;Bad=1,0", "not on scale [0]"),
                        ("Good=4,3;Mid=3,2;Bad=1", "repeated [3]"), ("Good 4,3", "NAME=GRADES")]:
        with pytest.raises(UserError, match=None) as e:
            parse_tiers(bad, TAOSR4)
        assert needle in str(e.value)


# -- fitting β ----------------------------------------------------------------------------

# A dev set where argmax is over-confident in grade 4: gold-3 rows put .45 on grade 4.
# Any β in (.45, .6] grades all rows right (4: cum .6; 3: .45 < β ≤ .8; 2: .3 < β ≤ .8; 1: .4 < β).
DEV = np.array([
    [0.60, 0.20, 0.10, 0.10],  # gold 4
    [0.45, 0.35, 0.10, 0.10],  # gold 3
    [0.10, 0.20, 0.50, 0.20],  # gold 2
    [0.10, 0.10, 0.20, 0.60],  # gold 1
] * 2)
DEV_GOLD = np.array([0, 1, 2, 3] * 2)
GOOD = np.array([True, True, False, False])


def test_fit_beta_finds_the_perfect_plateau():
    beta, curve = fit_beta(DEV, DEV_GOLD, GOOD)
    assert 0.45 < beta <= 0.6
    assert beta == pytest.approx((0.45 + 0.6) / 2, abs=1e-6)  # the plateau's midpoint
    assert macro_f1(DEV_GOLD, cumpt_predict(DEV, beta), 4) == pytest.approx(1.0)
    # argmax calls the gold-3 rows 4: F1 = [2·2/(2+4), 0, 1, 1] -> macro (2/3 + 0 + 1 + 1)/4 = 2/3
    assert macro_f1(DEV_GOLD, DEV.argmax(axis=1), 4) == pytest.approx(2 / 3)
    assert curve.macro_f1.max() == pytest.approx(1.0)


def test_fit_beta_to_a_target_good_rate():
    # Good = grades 4, 3. β in (.2, .3]: gold 4, 3 and 2 rows are Good (2's cum(3) = .3), 1 is Mid -> 3/4
    beta, _ = fit_beta(DEV, DEV_GOLD, GOOD, "good_rate", 0.75)
    assert 0.2 < beta <= 0.3
    # rate 1/2 holds on (.45, .6] and (.6, .8]; the tie goes to the higher macro-F1, i.e. (.45, .6]
    beta, _ = fit_beta(DEV, DEV_GOLD, GOOD, "good_rate", 0.5)
    assert 0.45 < beta <= 0.6
    with pytest.raises(UserError, match="target-good-rate"):
        fit_beta(DEV, DEV_GOLD, GOOD, "good_rate", None)


def test_beta_curve_is_exact_against_brute_force():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 4))
    gold = rng.integers(0, 4, size=300)
    logits[np.arange(300), gold] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    curve = beta_curve(probs, gold, GOOD)
    betas = np.r_[np.linspace(0, 1, 501), curve.beta]
    f1, good = curve.at(betas)
    for b, f, g in zip(betas, f1, good):
        pred = cumpt_predict(probs, b)
        assert f == pytest.approx(macro_f1(gold, pred, 4), abs=1e-12)
        assert g == pytest.approx(np.isin(pred, [0, 1]).mean())
    assert np.all(np.diff(curve.good_rate) <= 1e-12)  # Good rate never rises with β
    beta, _ = fit_beta(probs, gold, GOOD)
    assert macro_f1(gold, cumpt_predict(probs, beta), 4) == pytest.approx(max(macro_f1(gold, cumpt_predict(probs, b), 4) for b in betas))


# -- expected-score thresholds ------------------------------------------------------------


def test_expected_score_and_threshold_predict():
    e = expected_scores(DEV[:4], TAOSR4)
    # 4·.6+3·.2+2·.1+1·.1 = 3.3; 4·.45+3·.35+.2+.1 = 3.15; .4+.6+1.0+.2 = 2.2; .4+.3+.4+.6 = 1.7
    assert e.tolist() == pytest.approx([3.3, 3.15, 2.2, 1.7])
    # grade index = number of cuts above the score; a score on a cut gets the better grade
    assert threshold_predict(np.array([3.3, 3.2, 2.0, 1.0, 2.5]), [3.25, 2.5, 1.5]).tolist() == [0, 1, 2, 3, 1]


def test_fit_thresholds_separates_the_constructed_dev_set():
    e = expected_scores(DEV, TAOSR4)
    # rounding cuts 3.5, 2.5, 1.5 give 3, 3, 2, 2 -> macro 1/3; the fit must reach 1.0
    assert macro_f1(DEV_GOLD, threshold_predict(e, [3.5, 2.5, 1.5]), 4) == pytest.approx(1 / 3)
    cuts = fit_thresholds(e, DEV_GOLD, TAOSR4)
    assert macro_f1(DEV_GOLD, threshold_predict(e, cuts), 4) == pytest.approx(1.0)
    assert 3.15 < cuts[0] <= 3.3 and 2.2 < cuts[1] <= 3.15 and 1.7 < cuts[2] <= 2.2
    assert cuts == sorted(cuts, reverse=True)


def test_fit_thresholds_is_at_least_as_good_as_a_coarse_grid():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, size=200)
    logits = rng.normal(size=(200, 3))
    logits[np.arange(200), gold] += 1.2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    three = get_scale("three")
    e = expected_scores(probs, three)
    fitted = macro_f1(gold, threshold_predict(e, fit_thresholds(e, gold, three)), 3)
    grid = np.linspace(1, 3, 41)
    best = max(macro_f1(gold, threshold_predict(e, c), 3) for c in itertools.combinations(grid[::-1], 2))
    assert fitted >= best - 1e-12


# -- the rule file --------------------------------------------------------------------------


def test_fit_rule_compares_methods_and_round_trips(tmp_path):
    rule, _ = fit_rule(DEV, DEV_GOLD, TAOSR4)
    m = rule.dev["methods"]
    assert m["cumpt"]["macro_f1"] == pytest.approx(1.0) and m["argmax"]["macro_f1"] == pytest.approx(2 / 3)
    assert m["expected_score"]["macro_f1"] == pytest.approx(1.0)
    # tiers under argmax: gold 4, 3 -> 4 (Good), 2 Mid, 1 Bad -> Good rate 1/2; tier macro-F1 1.0
    assert m["argmax"]["good_rate"] == pytest.approx(0.5) and m["argmax"]["tier_macro_f1"] == pytest.approx(1.0)
    assert m["cumpt"]["tier_rates"] == pytest.approx({"Good": 0.5, "Mid": 0.25, "Bad": 0.25})
    rule.save(tmp_path / "tiers.json")
    d = json.loads((tmp_path / "tiers.json").read_text())
    assert {"schema", "beta", "objective", "scale", "tiers", "dev", "expected_score_cuts", "tol"} <= set(d)
    assert d["tiers"] == {"Good": [4, 3], "Mid": [2], "Bad": [1]} and d["objective"] == "macro_f1"
    back = TierRule.load(tmp_path)  # the folder works too
    assert back.beta == rule.beta and back.scale == TAOSR4 and back.tiers == rule.tiers
    values, names = back.predict(DEV[:4])
    assert values.tolist() == [4, 3, 2, 1] and names == ["Good", "Good", "Mid", "Bad"]


def test_compare_decisions_on_a_binary_scale():
    binary = get_scale("binary")
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.55, 0.45]])
    gold = np.array([0, 1, 1])
    out = compare_decisions(probs, gold, binary, default_tiers(binary), beta=0.6, cuts=[1.5])
    # CumPT β=.6: .7 ≥ .6 -> 2; .4 -> 1; .55 -> 1: all right
    assert out["cumpt"]["macro_f1"] == pytest.approx(1.0)
    # argmax: 2, 1, 2 -> F1(2) = 2/(1+2) = 2/3, F1(1) = 2/(2+1) = 2/3
    assert out["argmax"]["macro_f1"] == pytest.approx(2 / 3)
    # E = 2p + 1(1-p) = 1 + p: 1.7, 1.4, 1.55 with cut 1.5 -> 2, 1, 2 like argmax
    assert out["expected_score"]["macro_f1"] == pytest.approx(2 / 3)


def test_load_rejects_a_bad_rule_file(tmp_path):
    (tmp_path / "tiers.json").write_text('{"beta": 0.5}')
    with pytest.raises(UserError, match="not a tier rule file"):
        TierRule.load(tmp_path / "tiers.json")
    with pytest.raises(UserError, match="no tier rule here"):
        TierRule.load(tmp_path / "nothing.json")


def test_one_hot_probabilities():
    probs = np.array([[1.0, 0, 0, 0], [0, 0, 0, 1.0]])
    beta, curve = fit_beta(probs, np.array([0, 3]), GOOD)
    # row 1 never moves; row 2 (cum 0, 0, 0) sits at the top grade only while β <= tol, then drops to 1
    assert curve.bounds.tolist() == [0.0, 1e-9, 1.0]
    # plateau [0, tol]: both rows 4 -> F1 [2/3, 0, 0, 0] -> 1/6; plateau (tol, 1]: F1 [1, 0, 0, 1] -> 1/2
    assert curve.macro_f1.tolist() == pytest.approx([1 / 6, 0.5])
    assert beta == pytest.approx(0.5)
