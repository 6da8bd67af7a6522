"""Agreement figures against values computed by hand.

Run: .venv/bin/python -m pytest tests/annotation/test_review_agreement.py -q
"""

import pytest

from annotation.agreement import agreement, cohen_kappa, fleiss_kappa


def test_cohen_kappa_two_raters_by_hand():
    # A: 7 yes / 3 no, B: 6 yes / 4 no; they agree on 7 of 10 items.
    a = list("YYYYYYYNNN")
    b = list("YYYYYNNNNY")
    # p_o = 0.7; p_e = 0.7*0.6 + 0.3*0.4 = 0.54; kappa = 0.16 / 0.46
    assert cohen_kappa(list(zip(a, b))) == pytest.approx(0.16 / 0.46)
    report = agreement([(i, "a", x) for i, x in enumerate(a)] + [(i, "b", x) for i, x in enumerate(b)])
    assert report["n_items"] == 10 and report["n_raters"] == 2
    assert report["percent_agreement"] == pytest.approx(0.7)
    assert report["cohen_kappa"] == pytest.approx(0.347826, abs=1e-6)
    assert "fleiss_kappa" not in report


def test_fleiss_kappa_three_raters_by_hand():
    labels = {1: (1, 1, 1), 2: (1, 2, 2), 3: (2, 2, 2), 4: (1, 2, 3)}
    triples = [(item, rater, lab) for item, labs in labels.items() for rater, lab in zip("abc", labs)]
    report = agreement(triples)
    # P_i = 1, 1/3, 1, 0 -> P_bar = 7/12; p = 5/12, 6/12, 1/12 -> P_e = 62/144; kappa = (11/72) / (41/72)
    assert report["percent_agreement"] == pytest.approx(7 / 12)
    assert report["fleiss_kappa"] == pytest.approx(11 / 41)
    # a = 1,1,2,1 and b = 1,2,2,2: p_o = 0.5, p_e = (3*1 + 1*3)/16 = 0.375 -> 0.2
    assert report["pairwise_cohen_kappa"]["a|b"]["cohen_kappa"] == pytest.approx(0.2)
    assert "cohen_kappa" not in report


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971) as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories -> kappa 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = {}
    for i, row in enumerate(table):
        raters = iter(range(14))
        items[i] = {f"r{next(raters)}": cat for cat, n in enumerate(row) for _ in range(n)}
    assert fleiss_kappa(items) == pytest.approx(0.20993, abs=1e-4)


def test_items_with_one_rater_do_not_count_and_degenerate_kappa_is_none():
    report = agreement([(1, "a", "yes"), (1, "b", "yes"), (2, "a", "yes"), (2, "b", "yes"), (3, "a", "no")])
    assert report["n_items"] == 2
    assert report["percent_agreement"] == 1.0
    assert report["cohen_kappa"] is None  # everyone said yes: chance agreement is 1
    empty = agreement([(1, "a", "yes")])
    assert empty["n_items"] == 0 and empty["percent_agreement"] is None
