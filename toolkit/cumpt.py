"""CumPT: cumulative-probability tiering with one threshold β (TaoSR1's deployment rule).

With first-token grade probabilities best first, P(top), …, P(bottom), the predicted grade is
the best grade k whose cumulative probability P(top) + … + P(k) reaches β; the grade then maps
to a tier (Good / Mid / Bad). In scale-index terms (0 = best): pred = min{j : cum[j] ≥ β − tol}.

Edge cases and rounding (our choices):
* "Reaches" is ≥, so a cumulative sum exactly equal to β picks the better grade (ties go up).
* `tol` (1e-9) absorbs float summation error: 0.7 + 0.1 = 0.7999999999999999 still reaches 0.8.
* β = 0: every row gets the top grade (cum[0] ≥ 0 always).
* β = 1: the first grade where the cumulative sum reaches 1 − tol, i.e. the worst grade with
  non-zero probability (up to tol). The bottom grade always qualifies, because rows are
  renormalised to sum to 1 (`toolkit.core.metrics.check_probs`), so every row gets a grade.
* Predictions are piecewise constant in β and move to worse grades as β grows, so the Good rate
  never increases with β.

Fitting (`fit_rule`, used by `toolkit tier fit`): β is exact, not grid-limited — `beta_curve`
sweeps every breakpoint (each row's cumulative sums) and scores each plateau of constant
predictions; the reported β is the best plateau's midpoint. Expected-score cut points are
fitted alongside, for comparison only. Applying: `TierRule.load(path).predict(probs)`.

Default tier maps (scale order, best first; configurable with a spec like `Good=4,3;Mid=2;Bad=1`):
2 grades: Good, Bad · 3: Good, Mid, Bad · 4 (TaoSR1, ESCI): Good, Good, Mid, Bad ·
5: Good, Good, Mid, Bad, Bad · K ≥ 6: the top ⌈K/3⌉ Good, the bottom ⌈K/3⌉ Bad, the rest Mid.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale
from toolkit.core.metrics import f1_from_counts, macro_f1
from toolkit.core.stagefolder.files import RULE_FILE

TOL = 1e-9
GOOD, MID, BAD = "Good", "Mid", "Bad"
RULE_SCHEMA = "toolkit.tiers/1"


def cumpt_predict(probs: np.ndarray, beta: float, tol: float = TOL) -> np.ndarray:
    """Scale indices (0 = best) chosen by CumPT for rows of probabilities (best grade first)."""
    if not 0.0 <= beta <= 1.0:
        raise UserError(f"beta must be in [0, 1]; got {beta}")
    hit = np.cumsum(probs, axis=1) >= beta - tol
    hit[:, -1] = True  # the whole distribution sums to 1 ≥ β
    return hit.argmax(axis=1)


# -- tiers ------------------------------------------------------------------------------


def default_tiers(scale: GradeScale) -> dict[str, list[int]]:
    """Tier name -> grade values (tiers best first), by the number of grades; see module doc."""
    k = len(scale)
    shapes = {2: [GOOD, BAD], 3: [GOOD, MID, BAD], 4: [GOOD, GOOD, MID, BAD], 5: [GOOD, GOOD, MID, BAD, BAD]}
    if k in shapes:
        names = shapes[k]
    else:
        third = math.ceil(k / 3)
        names = [GOOD] * third + [MID] * (k - 2 * third) + [BAD] * third
    tiers: dict[str, list[int]] = {}
    for value, name in zip(scale.values, names):
        tiers.setdefault(name, []).append(value)
    return tiers


def parse_tiers(spec: "str | dict | None", scale: GradeScale) -> dict[str, list[int]]:
    """`Good=4,3;Mid=2;Bad=1` (tiers best first) or a mapping; every grade in exactly one tier."""
    if spec is None or spec == "":
        return default_tiers(scale)
    if isinstance(spec, str):
        tiers: dict[str, list[int]] = {}
        for part in [p for p in spec.split(";") if p.strip()]:
            name, eq, grades = part.partition("=")
            if not eq or not name.strip():
                raise UserError(f"--tiers entry {part.strip()!r} needs the form NAME=GRADES; "
                                "write e.g. 'Good=4,3;Mid=2;Bad=1'")
            try:
                tiers[name.strip()] = [int(g) for g in grades.split(",") if g.strip()]
            except ValueError:
                raise UserError(f"--tiers {part.strip()!r}: grades must be integers of scale "
                                f"`{scale.name}` {scale.values}") from None
    else:
        tiers = {str(k): [int(g) for g in v] for k, v in dict(spec).items()}
    flat = [g for gs in tiers.values() for g in gs]
    missing = [v for v in scale.values if v not in flat]
    extra = sorted({g for g in flat if g not in scale.values})
    dupes = sorted({g for g in flat if flat.count(g) > 1})
    if missing or extra or dupes or any(not gs for gs in tiers.values()):
        raise UserError(
            f"--tiers {spec!r} must put each grade of scale `{scale.name}` {scale.values} in exactly one "
            "non-empty tier "
            f"(missing {missing}, not on scale {extra}, repeated {dupes})"
        )
    return tiers


def tier_of(tiers: dict[str, list[int]]) -> dict[int, str]:
    return {g: name for name, gs in tiers.items() for g in gs}


def good_tier(tiers: dict[str, list[int]]) -> str:
    """The tier counted by the Good rate: `Good` if present, else the first (best) tier."""
    return GOOD if GOOD in tiers else next(iter(tiers))


# -- the β sweep --------------------------------------------------------------------------


@dataclass
class BetaCurve:
    """Exact macro-F1 and Good rate on each plateau of β (predictions are constant in between).

    Plateau i covers β in (bounds[i], bounds[i+1]] (the first also includes 0); `beta` is its
    midpoint, the representative that `fit_beta` reports.
    """

    bounds: np.ndarray  # len m+2: 0, breakpoints…, 1
    macro_f1: np.ndarray  # len m+1
    good_rate: np.ndarray  # len m+1

    @property
    def beta(self) -> np.ndarray:
        return (self.bounds[:-1] + self.bounds[1:]) / 2

    def at(self, betas) -> tuple[np.ndarray, np.ndarray]:
        """(macro-F1, Good rate) at arbitrary β values, e.g. a grid for the plot."""
        i = np.clip(np.searchsorted(self.bounds[1:-1], np.asarray(betas, dtype=float), side="left"), 0,
                    len(self.macro_f1) - 1)
        return self.macro_f1[i], self.good_rate[i]


def beta_curve(probs: np.ndarray, gold: np.ndarray, good_mask: np.ndarray, tol: float = TOL) -> BetaCurve:
    """Sweep β over all breakpoints at once: O(N·K log N·K), exact.

    Row r moves from grade j to j+1 when β passes cum[r, j] + tol. Start with everyone at the
    top grade (β = 0) and apply the moves in order of their breakpoint.
    """
    n, k = probs.shape
    cum = np.cumsum(probs, axis=1)[:, :-1]  # the bottom grade never moves on
    point = cum + tol
    rows, cols = np.nonzero(point < 1.0)  # moves that happen for some β ≤ 1
    at = point[rows, cols]
    order = np.argsort(at, kind="stable")
    rows, cols, at = rows[order], cols[order], at[order]
    g = gold[rows]
    d_tp = np.zeros((len(at), k), dtype=np.int64)
    d_pred = np.zeros((len(at), k), dtype=np.int64)
    idx = np.arange(len(at))
    d_pred[idx, cols] -= 1
    d_pred[idx, cols + 1] += 1
    d_tp[idx, cols] -= (g == cols)
    d_tp[idx, cols + 1] += (g == cols + 1)
    gold_count = np.bincount(gold, minlength=k)
    tp0 = np.zeros(k, dtype=np.int64)
    tp0[0] = gold_count[0]
    pred0 = np.zeros(k, dtype=np.int64)
    pred0[0] = n
    # the state after the last move of each distinct breakpoint
    last = np.r_[np.flatnonzero(np.diff(at) > 0), len(at) - 1] if len(at) else np.array([], dtype=np.int64)
    tp = np.vstack([tp0, tp0 + np.cumsum(d_tp, axis=0)[last]])
    pred = np.vstack([pred0, pred0 + np.cumsum(d_pred, axis=0)[last]])
    f1 = f1_from_counts(tp, gold_count[None, :], pred).mean(axis=1)
    good = pred[:, good_mask].sum(axis=1) / n
    return BetaCurve(np.r_[0.0, at[last], 1.0], f1, good)


def fit_beta(probs, gold, good_mask, objective: str = "macro_f1", target_good_rate: float | None = None,
             tol: float = TOL) -> tuple[float, BetaCurve]:
    """β maximising macro-F1 (ties: the smallest β), or with the Good rate closest to a target
    (ties: higher macro-F1, then the smallest β). Returns (β, curve); β is a plateau midpoint."""
    curve = beta_curve(probs, gold, good_mask, tol)
    if objective == "macro_f1":
        best = int(np.flatnonzero(curve.macro_f1 >= curve.macro_f1.max() - 1e-12)[0])
    elif objective == "good_rate":
        if target_good_rate is None or not 0 <= target_good_rate <= 1:
            raise UserError(f"objective good_rate needs --target-good-rate in [0, 1]; got {target_good_rate}")
        gap = np.abs(curve.good_rate - target_good_rate)
        near = np.flatnonzero(gap <= gap.min() + 1e-12)
        best = int(near[np.argmax(curve.macro_f1[near])])
    else:
        raise UserError(f"unknown objective {objective!r}; use macro_f1 or good_rate")
    return float(curve.beta[best]), curve


# -- expected-score thresholds (the baseline CumPT replaces) -------------------------------


def expected_scores(probs: np.ndarray, scale: GradeScale) -> np.ndarray:
    """E = Σ_k p_k · value_k."""
    return probs @ np.asarray(scale.values, dtype=np.float64)


def threshold_predict(scores: np.ndarray, cuts) -> np.ndarray:
    """Scale index = number of cuts above the score (cuts best first, non-increasing)."""
    return (scores[:, None] < np.asarray(cuts, dtype=np.float64)[None, :]).sum(axis=1)


def fit_thresholds(scores: np.ndarray, gold: np.ndarray, scale: GradeScale, max_rounds: int = 20) -> list[float]:
    """K−1 cut points on the expected score maximising macro-F1, by coordinate ascent.

    Start from the midpoints between grade values (rounding E); then, one cut at a time, try
    every split of the rows lying between its neighbours and keep the best (the cut goes
    midway between the two scores it separates). Repeat until a round improves nothing.
    """
    k = len(scale)
    v = np.asarray(scale.values, dtype=np.float64)
    cuts = list((v[:-1] + v[1:]) / 2)
    best = macro_f1(gold, threshold_predict(scores, cuts), k)
    for _ in range(max_rounds):
        improved = False
        for i in range(k - 1):
            cut, f1 = _best_cut(scores, gold, cuts, i, k)
            if f1 > best + 1e-12:
                cuts[i], best, improved = cut, f1, True
        if not improved:
            break
    return [float(c) for c in cuts]


def _best_cut(scores, gold, cuts, i, k) -> tuple[float, float]:
    """Best position of cut i with the others fixed: rows between the neighbours get grade i or i+1."""
    hi = cuts[i - 1] if i > 0 else np.inf
    lo = cuts[i + 1] if i + 1 < len(cuts) else -np.inf
    inside = (scores < hi) & (scores >= lo)
    if not inside.any():
        return cuts[i], -1.0
    pred = threshold_predict(scores, cuts)
    fixed = ~inside
    tp = np.bincount(gold[fixed & (pred == gold)], minlength=k)
    pred_count = np.bincount(pred[fixed], minlength=k)
    gold_count = np.bincount(gold, minlength=k)
    s = scores[inside]
    order = np.argsort(-s, kind="stable")
    s, g = s[order], gold[inside][order]
    m = np.arange(len(s) + 1)  # the top m rows get grade i, the rest grade i+1
    top_i = np.r_[0, np.cumsum(g == i)]
    top_j = np.r_[0, np.cumsum(g == i + 1)]
    tps = np.tile(tp, (len(m), 1))
    preds = np.tile(pred_count, (len(m), 1))
    tps[:, i] += top_i
    tps[:, i + 1] += top_j[-1] - top_j
    preds[:, i] += m
    preds[:, i + 1] += len(s) - m
    f1 = f1_from_counts(tps, gold_count[None, :], preds).mean(axis=1)
    valid = np.ones(len(m), dtype=bool)
    valid[1:-1] = s[:-1] > s[1:]  # never split rows with equal scores
    f1[~valid] = -1.0
    b = int(np.argmax(f1))
    if b == 0:
        cut = (s[0] + hi) / 2 if np.isfinite(hi) else float(np.nextafter(s[0], np.inf))
    elif b == len(s):
        cut = (s[-1] + lo) / 2 if np.isfinite(lo) else float(s[-1])
    else:
        cut = (s[b - 1] + s[b]) / 2
    return float(cut), float(f1[b])


# -- fit and compare ----------------------------------------------------------------------


def decide(method: str, probs: np.ndarray, scale: GradeScale, beta: float | None = None, cuts=None,
           tol: float = TOL) -> np.ndarray:
    """Scale indices under one decision rule: argmax, cumpt (needs beta) or expected_score (needs cuts)."""
    if method == "argmax":
        return probs.argmax(axis=1)
    if method == "cumpt":
        return cumpt_predict(probs, beta, tol)
    if method == "expected_score":
        return threshold_predict(expected_scores(probs, scale), cuts)
    raise ValueError(method)


def compare_decisions(probs, gold, scale: GradeScale, tiers: dict[str, list[int]], beta: float, cuts,
                      tol: float = TOL) -> dict:
    """Macro-F1, accuracy, tier macro-F1 and the tier distribution under argmax, CumPT and expected-score cuts."""
    names = list(tiers)
    tier_idx = np.array([names.index(tier_of(tiers)[v]) for v in scale.values])
    good = names.index(good_tier(tiers))
    out = {}
    for method, kw in (("argmax", {}), ("cumpt", {"beta": beta}), ("expected_score", {"cuts": cuts})):
        pred = decide(method, probs, scale, tol=tol, **kw)
        tier_pred = tier_idx[pred]
        out[method] = {
            **kw,
            "macro_f1": macro_f1(gold, pred, len(scale)),
            "accuracy": float((pred == gold).mean()),
            "tier_macro_f1": macro_f1(tier_idx[gold], tier_pred, len(names)),
            "tier_rates": {t: float((tier_pred == j).mean()) for j, t in enumerate(names)},
            "good_rate": float((tier_pred == good).mean()),
        }
    return out


def fit_rule(probs, gold, scale: GradeScale, tiers=None, objective: str = "macro_f1",
             target_good_rate: float | None = None, tol: float = TOL) -> tuple[TierRule, BetaCurve]:
    """Fit β on dev rows (and, for comparison, expected-score cuts); returns the rule and the β curve."""
    tiers = parse_tiers(tiers, scale)
    good_mask = np.isin(scale.values, tiers[good_tier(tiers)])
    beta, curve = fit_beta(probs, gold, good_mask, objective, target_good_rate, tol)
    cuts = fit_thresholds(expected_scores(probs, scale), gold, scale)
    dev = {"n": int(len(gold)), "methods": compare_decisions(probs, gold, scale, tiers, beta, cuts, tol)}
    rule = TierRule(beta, scale, tiers, objective, target_good_rate, tol, cuts, dev)
    return rule, curve


# -- the tier rule file (what serving loads) ----------------------------------------------


@dataclass
class TierRule:
    """A fitted CumPT rule: β, the scale and the tier map; JSON on disk (`tiers.json`)."""

    beta: float
    scale: GradeScale
    tiers: dict[str, list[int]]
    objective: str = "macro_f1"
    target_good_rate: float | None = None
    tol: float = TOL
    expected_score_cuts: list[float] | None = None
    dev: dict | None = None

    def predict(self, probs: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(grade values, tier names) for validated probability rows."""
        values = np.asarray(self.scale.values)[cumpt_predict(probs, self.beta, self.tol)]
        names = tier_of(self.tiers)
        return values, [names[int(v)] for v in values]

    def to_dict(self) -> dict:
        from toolkit import __version__

        return {
            "schema": RULE_SCHEMA, "method": "cumpt", "beta": self.beta, "tol": self.tol,
            "rule": "predicted grade = the best grade k with P(top)+...+P(k) >= beta - tol",
            "objective": self.objective, "target_good_rate": self.target_good_rate,
            "scale": self.scale.to_dict(), "tiers": self.tiers, "expected_score_cuts": self.expected_score_cuts,
            "dev": self.dev, "toolkit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save(self, path: "str | Path") -> None:
        from toolkit.core.stagefolder import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: "str | Path") -> "TierRule":
        p = Path(path)
        if p.is_dir():
            p = p / RULE_FILE
        if not p.exists():
            raise UserError(f"{p}: no tier rule here; pass the tiers.json written by `toolkit tier fit` "
                            "(or its folder)")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            scale = GradeScale.from_dict(d["scale"], where=str(p))
            return cls(
                beta=float(d["beta"]), scale=scale, tiers=parse_tiers(d["tiers"], scale),
                objective=d.get("objective", "macro_f1"), target_good_rate=d.get("target_good_rate"),
                tol=float(d.get("tol", TOL)), expected_score_cuts=d.get("expected_score_cuts"), dev=d.get("dev"),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{p}: not a tier rule file ({type(e).__name__}: {e}); "
                            "re-create it with `toolkit tier fit`") from None
