"""Inter-annotator agreement on a label question: percent agreement, Cohen's and Fleiss' kappa.

Input: one label per (item, rater). Only items labelled by two or more raters count.
- percent agreement: the mean over items of the share of rater pairs that agree (for two raters:
  the share of items they labelled alike);
- Cohen's kappa (two raters): (p_o - p_e) / (1 - p_e), p_e from each rater's own label shares;
- Fleiss' kappa (three or more raters; items may have different numbers of raters, as in
  Argilla's task distribution): P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)), P_bar their mean,
  p_j = share of all labels that are j, P_e = sum_j p_j^2, kappa = (P_bar - P_e) / (1 - P_e).
A kappa is None when it is undefined (everyone used one label: 1 - p_e = 0).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Hashable, Iterable


def _by_item(labels: Iterable[tuple[Hashable, str, Hashable]]) -> dict[Hashable, dict[str, Hashable]]:
    items: dict[Hashable, dict[str, Hashable]] = defaultdict(dict)
    for item, rater, label in labels:
        items[item][rater] = label
    return {k: v for k, v in items.items() if len(v) >= 2}


def percent_agreement(items: dict[Hashable, dict[str, Hashable]]) -> float | None:
    if not items:
        return None
    shares = []
    for ratings in items.values():
        n = len(ratings)
        counts = Counter(ratings.values())
        shares.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
    return sum(shares) / len(shares)


def cohen_kappa(pairs: list[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items: [(label_a, label_b), ...]."""
    if not pairs:
        return None
    n = len(pairs)
    p_o = sum(a == b for a, b in pairs) / n
    ca, cb = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    p_e = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    return None if p_e >= 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(items: dict[Hashable, dict[str, Hashable]]) -> float | None:
    if not items:
        return None
    totals: Counter = Counter()
    p_items = []
    for ratings in items.values():
        n = len(ratings)
        counts = Counter(ratings.values())
        totals.update(counts)
        p_items.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
    all_labels = sum(totals.values())
    p_e = sum((c / all_labels) ** 2 for c in totals.values())
    p_bar = sum(p_items) / len(p_items)
    return None if p_e >= 1 else (p_bar - p_e) / (1 - p_e)


def agreement(labels: Iterable[tuple[Hashable, str, Hashable]]) -> dict:
    """Agreement report for (item, rater, label) triples.

    Returns n_items (labelled by 2+ raters), n_raters, percent_agreement, and cohen_kappa (two
    raters) or fleiss_kappa (three or more), plus pairwise Cohen's kappa per rater pair.
    """
    items = _by_item(labels)
    raters = sorted({r for ratings in items.values() for r in ratings})
    out: dict = {"n_items": len(items), "n_raters": len(raters), "percent_agreement": percent_agreement(items)}
    pairwise = {}
    for i, a in enumerate(raters):
        for b in raters[i + 1 :]:
            both = [(r[a], r[b]) for r in items.values() if a in r and b in r]
            if both:
                pairwise[f"{a}|{b}"] = {"n_items": len(both), "cohen_kappa": cohen_kappa(both)}
    if len(raters) == 2:
        out["cohen_kappa"] = pairwise[f"{raters[0]}|{raters[1]}"]["cohen_kappa"]
    elif len(raters) > 2:
        out["fleiss_kappa"] = fleiss_kappa(items)
        out["pairwise_cohen_kappa"] = pairwise
    return out


def ordinal_agreement(labels: Iterable[tuple[Hashable, str, int]], values: list[int]) -> dict:
    """Agreement that counts how far apart two grades are (the grades are ordinal: 3 vs 4 is a smaller miss than
    1 vs 4).

    - quadratic-weighted Cohen's kappa (scikit-learn's `cohen_kappa_score(weights="quadratic")`) per rater pair, and
      their mean weighted by shared items (`quadratic_kappa`);
    - Krippendorff's alpha for ordinal data over all raters (the `krippendorff` package), which takes items with any
      number of raters. Both are None when undefined (fewer than two ratings per item, or one grade throughout).
    """
    import math

    items = _by_item(labels)
    raters = sorted({r for ratings in items.values() for r in ratings})
    out: dict = {"quadratic_kappa": None, "pairwise_quadratic_kappa": {}, "krippendorff_alpha_ordinal": None}
    if not items:
        return out
    import warnings

    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    total, weight = 0.0, 0
    for i, a in enumerate(raters):
        for b in raters[i + 1:]:
            both = [(r[a], r[b]) for r in items.values() if a in r and b in r]
            if not both:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                k = cohen_kappa_score([x for x, _ in both], [y for _, y in both], labels=sorted(values),
                                      weights="quadratic")
            k = None if k is None or not math.isfinite(k) else float(k)
            out["pairwise_quadratic_kappa"][f"{a}|{b}"] = {"n_items": len(both), "quadratic_kappa": k}
            if k is not None:
                total, weight = total + k * len(both), weight + len(both)
    out["quadratic_kappa"] = total / weight if weight else None
    import krippendorff

    keys = sorted(items, key=str)
    data = np.array([[float(items[k].get(r, np.nan)) for k in keys] for r in raters])
    if len({v for ratings in items.values() for v in ratings.values()}) > 1:
        alpha = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=sorted(values))
        out["krippendorff_alpha_ordinal"] = float(alpha) if math.isfinite(alpha) else None
    return out
