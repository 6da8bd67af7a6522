"""How well a judge orders each query's items: tie-aware NDCG@k per query and Spearman's ρ over all pairs.

Macro-F1 asks whether each grade is right; a search team also asks whether, within a query, the items the judge
scores higher are the more relevant ones. The score of a pair is its expected relevance under the grade
probabilities (Σ_j p_j · (K − 1 − j), scale index j, 0 = best grade), or without probabilities its predicted grade
(unparsed answers lowest). Gains are 2^rel − 1 with rel = K − 1 − gold index. Pairs with equal scores share the
mean discount of the positions they occupy (McSherry & Najork, ECIR 2008), so ties give no arbitrary credit: a judge
that gives every pair of a query one score gets the NDCG of a random order in expectation, not of the row order.
A query whose pairs all have one gold grade cannot be ordered wrong; it is left out of the mean and counted.
"""

from __future__ import annotations

import numpy as np

from toolkit.core.metrics import UNPARSED, group_index


def scores_of(probs: "np.ndarray | None", pred: np.ndarray, n_grades: int, unparsed: int = UNPARSED) -> np.ndarray:
    """Higher = more relevant: expected relevance from probabilities (best grade first), else the predicted grade."""
    rel = np.arange(n_grades - 1, -1, -1, dtype=np.float64)
    if probs is not None:
        return np.asarray(probs, dtype=np.float64) @ rel
    pred = np.asarray(pred)
    return np.where(pred == unparsed, -1.0, (n_grades - 1) - pred.astype(np.float64))


def ndcg_at(gains: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Tie-aware NDCG@k of one query: gains in any order, scores the judge's (higher first)."""
    disc = np.zeros(len(gains))
    disc[:k] = 1.0 / np.log2(np.arange(2, min(k, len(gains)) + 2))
    ideal = float(np.sort(gains)[::-1] @ disc)
    if ideal <= 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, g = scores[order], gains[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    dcg = sum(g[a:b].sum() * disc[a:b].mean() for a, b in zip(starts, ends))
    return float(dcg / ideal)


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's ρ with average ranks for ties; None when either side is constant."""
    import polars as pl

    rx = pl.Series(np.asarray(x, dtype=np.float64)).rank("average").to_numpy()
    ry = pl.Series(np.asarray(y, dtype=np.float64)).rank("average").to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def ranking_metrics(gold: np.ndarray, scores: np.ndarray, groups: "list | None", n_grades: int, k: int = 10,
                    resamples: int = 0, seed: int = 0, level: float = 0.95) -> dict:
    """NDCG@k averaged over the queries in `groups` (one id per pair; None: no query column, no NDCG) that have more
    than one gold grade, with a percentile interval over resampled queries; Spearman's ρ of score and gold relevance
    over all pairs."""
    rel = (n_grades - 1) - np.asarray(gold)
    out: dict = {"k": k, "spearman": spearman(scores, rel)}
    if groups is None:
        return out
    ndcg, floor, informative = per_query_ndcg(rel, np.asarray(scores, dtype=np.float64), groups, k)
    vals = ndcg[informative]
    out.update({f"ndcg@{k}": float(vals.mean()) if len(vals) else None,
                f"ndcg@{k}_random": float(floor[informative].mean()) if len(vals) else None,
                "queries": int(informative.sum()), "queries_one_grade": int((~informative).sum())})
    if resamples and len(vals):
        rng = np.random.default_rng(seed)
        means = np.array([vals[rng.integers(0, len(vals), len(vals))].mean() for _ in range(int(resamples))])
        lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
        out[f"ndcg@{k}_interval"] = [float(lo), float(hi)]
    return out


def per_query_ndcg(rel: np.ndarray, scores: np.ndarray, groups: list, k: int) -> tuple[np.ndarray, ...]:
    """For every query at once (one sort, no loop over queries): its tie-aware NDCG@k (ndcg_at), a random order's
    (every pair tied), and whether it has more than one gold grade (else its NDCG is meaningless)."""
    inv = group_index(groups)
    if not len(inv):
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    n_q = int(inv.max()) + 1
    gains = 2.0 ** rel - 1
    size = np.bincount(inv, minlength=n_q)
    first = np.r_[0, np.cumsum(size)[:-1]]  # where each query starts once rows are sorted by query

    def discounts(order):
        pos = np.arange(len(order)) - first[inv[order]]
        return np.where(pos < k, 1.0 / np.log2(pos + 2.0), 0.0)

    ideal_order = np.lexsort((-gains, inv))
    ideal = np.bincount(inv[ideal_order], weights=gains[ideal_order] * discounts(ideal_order), minlength=n_q)
    order = np.lexsort((-scores, inv))
    q, s, g, d = inv[order], scores[order], gains[order], discounts(order)
    tie = np.r_[True, (q[1:] != q[:-1]) | (s[1:] != s[:-1])]  # the first row of each run of equal scores
    starts = np.flatnonzero(tie)
    runs = np.diff(np.r_[starts, len(order)])
    dcg = np.bincount(q[starts], weights=np.add.reduceat(g, starts) * np.add.reduceat(d, starts) / runs,
                      minlength=n_q)
    q_first = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])  # every query tied: its gains times its mean discount
    rand = np.add.reduceat(g, q_first) * np.add.reduceat(d, q_first) / size
    informative = np.maximum.reduceat(rel[order], q_first) > np.minimum.reduceat(rel[order], q_first)
    with np.errstate(invalid="ignore", divide="ignore"):
        return dcg / ideal, rand / ideal, informative & (ideal > 0)
