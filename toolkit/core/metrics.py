"""Classification and calibration metrics over a grade scale, in numpy.

Grades are handled as *indices* into the scale, best grade first (index 0 = the top
grade); `UNPARSED` (-1) marks a prediction that has no grade (an unparseable answer).

Definitions (the same as scikit-learn's with `labels=scale.values, zero_division=0`):

* Confusion matrix: rows = gold grade, columns = predicted grade, both in scale order
  (best first). Unparsed predictions are kept in a separate per-gold-grade count.
* Precision/recall/F1 per grade; a 0/0 ratio is 0. An unparsed prediction is a miss
  for its gold grade (it lowers that grade's recall) and no grade's false positive;
  accuracy counts it as wrong. Rows are never dropped for being unparseable.
* **Macro-F1 (headline)** = the unweighted mean of the per-grade F1 over *all* grades of
  the scale. A grade absent from both gold and predictions scores F1 = 0 and still counts
  in the mean (that is what `f1_score(..., labels=scale.values, average="macro")` does).
  Such grades are listed in `absent_grades`, and `macro_f1_present` gives the mean over
  the grades that occur in gold or predictions (scikit-learn's default without `labels=`).
* Calibration is top-label: confidence = the largest grade probability, correct = its
  grade equals gold. ECE = sum over bins of (n_bin / N) * |accuracy_bin - confidence_bin|,
  with `n_bins` equal-width bins; bin i holds confidences in (i/n_bins, (i+1)/n_bins] (a
  confidence within 1e-9 of an edge counts as on it; 0 goes to bin 0). MCE = the largest gap.
  Brier score = mean over rows of sum_k (p_k - [k == gold])^2.
"""

from __future__ import annotations

import logging

import numpy as np
from typing import TYPE_CHECKING

from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

UNPARSED = -1
PROB_TOLERANCE = 1e-3  # |sum(probs) - 1| allowed per row before renormalising


# -- inputs ------------------------------------------------------------------------------


def grade_indices(values, scale: GradeScale, what: str = "grade", allow_missing: bool = False) -> np.ndarray:
    """Grade values -> scale indices (0 = best). Missing values become UNPARSED when allowed."""
    pos = {v: i for i, v in enumerate(scale.values)}
    out = np.empty(len(values), dtype=np.int64)
    for row, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            if not allow_missing:
                raise UserError(f"row {row + 1}: {what} is missing; "
                                f"every row needs a {what} on scale `{scale.name}` {scale.values}")
            out[row] = UNPARSED
            continue
        try:
            out[row] = pos[int(v)]
        except (KeyError, TypeError, ValueError):
            raise UserError(
                f"row {row + 1}: {what} {v!r} is not on scale `{scale.name}` (values {scale.values}); "
                "pass --scale with the scale the predictions were made on"
            ) from None
    return out


def check_probs(rows, scale: GradeScale, tolerance: float = PROB_TOLERANCE, ids=None) -> np.ndarray:
    """Validate grade-probability rows (best grade first) and renormalise each to sum to exactly 1.

    A row must be a list of len(scale) finite numbers >= 0 (tiny negatives from float error are
    clipped) whose sum is within `tolerance` of 1.
    """
    k = len(scale)
    order = ",".join(map(str, scale.values))
    where = lambda i: f"row {i + 1}" + (f" (pair_id {ids[i]})" if ids is not None else "")  # noqa: E731
    lengths = [None if r is None else len(r) for r in rows] if not hasattr(rows, "list") else rows.list.len().to_list()
    wrong = [i for i, n in enumerate(lengths) if n != k]
    if wrong:
        i, n = wrong[0], lengths[wrong[0]]
        got = "nothing" if n is None else f"{n} numbers"
        raise UserError(
            f"{where(i)}: grade_probs has {got}; need {k} probabilities, one per grade of scale `{scale.name}` "
            f"in order {order} ({len(wrong)} such row(s)); pass --scale if the predictions use another scale"
        )
    if hasattr(rows, "list"):  # a polars list column: flatten without a Python loop
        flat = rows.explode().cast(float).fill_null(float("nan")).to_numpy()
    else:
        flat = np.array([np.nan if x is None else x for r in rows for x in r], dtype=np.float64)
    out = flat.reshape(len(lengths), k).astype(np.float64)
    bad = ~np.isfinite(out).all(axis=1) | (out < -tolerance).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{where(i)}: grade_probs {list(out[i])} has a missing, infinite or negative value; "
                        "give softmax probabilities")
    out = np.clip(out, 0.0, None)
    sums = out.sum(axis=1)
    off = np.abs(sums - 1.0) > tolerance
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise UserError(
            f"{where(i)}: grade_probs sums to {sums[i]:.6g} (must be 1 ± {tolerance:g}); give softmax probabilities "
            f"over the {k} grade labels in scale order {order} ({off.sum()} such row(s))"
        )
    return out / sums[:, None]


# -- classification ----------------------------------------------------------------------


def confusion_matrix(gold: np.ndarray, pred: np.ndarray, n_grades: int) -> np.ndarray:
    """Counts, rows = gold index, columns = predicted index (unparsed predictions left out)."""
    ok = pred != UNPARSED
    cm = np.zeros((n_grades, n_grades), dtype=np.int64)
    np.add.at(cm, (gold[ok], pred[ok]), 1)
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def f1_from_counts(tp: np.ndarray, gold_count: np.ndarray, pred_count: np.ndarray) -> np.ndarray:
    """Per-grade F1 = 2·tp / (gold + predicted), 0 when both are 0. Broadcasts over leading axes."""
    return _ratio(2 * np.asarray(tp), np.asarray(gold_count) + np.asarray(pred_count))


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_grades: int) -> float:
    """Unweighted mean F1 over all n_grades grades (absent grades count as 0)."""
    cm = confusion_matrix(gold, pred, n_grades)
    gold_count = np.bincount(gold, minlength=n_grades)
    return float(f1_from_counts(np.diag(cm), gold_count, cm.sum(axis=0)).mean())


def classification_metrics(gold: np.ndarray, pred: np.ndarray, scale: GradeScale) -> dict:
    """Macro-F1, accuracy, per-grade precision/recall/F1 and the confusion matrix."""
    k = len(scale)
    n = len(gold)
    if n == 0:
        raise UserError("no rows to evaluate; check the input file and --split")
    cm = confusion_matrix(gold, pred, k)
    tp = np.diag(cm)
    gold_count = np.bincount(gold, minlength=k)
    pred_count = cm.sum(axis=0)
    precision = _ratio(tp, pred_count)
    recall = _ratio(tp, gold_count)
    f1 = f1_from_counts(tp, gold_count, pred_count)
    present = (gold_count + pred_count) > 0
    absent = [scale.values[i] for i in np.flatnonzero(~present)]
    if absent:
        log.warning("grade(s) %s occur neither in gold nor in predictions; they count as F1 = 0 in macro-F1", absent)
    unparsed = np.bincount(gold[pred == UNPARSED], minlength=k)
    return {
        "n": n,
        "n_unparsed": int(unparsed.sum()),
        "macro_f1": float(f1.mean()),
        "macro_f1_present": float(f1[present].mean()) if present.any() else 0.0,
        "absent_grades": absent,
        "accuracy": float(tp.sum() / n),
        "per_grade": [
            {
                "grade": g.value, "name": g.name, "precision": float(precision[i]), "recall": float(recall[i]),
                "f1": float(f1[i]), "support": int(gold_count[i]), "predicted": int(pred_count[i]),
            }
            for i, g in enumerate(scale.grades)
        ],
        "confusion": {"grades": scale.values, "matrix": cm.tolist(), "unparsed": unparsed.tolist()},
    }


def group_index(groups) -> np.ndarray:
    """Each row's group (query) as an index 0..G-1, groups in sorted order of their ids read as text."""
    return np.unique(np.asarray([str(x) for x in groups]), return_inverse=True)[1].reshape(-1)


def bootstrap_macro_f1(gold: np.ndarray, pred: np.ndarray, groups, n_grades: int, resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> dict:
    """A percentile interval of macro-F1 over `resamples` bootstrap samples of whole groups (e.g. queries: pairs of
    one query are not independent), drawn with replacement, seeded. Each resample's macro-F1 is computed exactly as
    macro_f1 does, from the summed per-group confusion counts."""
    inv = group_index(groups)
    g, k = int(inv.max()) + 1 if len(inv) else 0, n_grades
    if g == 0:
        raise UserError("no rows to bootstrap; check the input file and --split")
    ok = pred != UNPARSED
    cell, inv_ok = gold[ok] * k + pred[ok], inv[ok]  # each parsed row's confusion cell, and its group
    rng = np.random.default_rng(seed)
    f1 = np.empty(int(resamples))
    for r in range(len(f1)):  # one resample at a time: memory in rows, not resamples x groups x cells
        drawn = np.bincount(rng.integers(0, g, g), minlength=g).astype(np.float64)  # times each group is drawn
        cm = np.bincount(cell, weights=drawn[inv_ok], minlength=k * k).reshape(k, k)
        f1[r] = f1_from_counts(np.diag(cm), np.bincount(gold, weights=drawn[inv], minlength=k),
                               cm.sum(axis=0)).mean()
    lo, hi = np.quantile(f1, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"level": level, "resamples": int(resamples), "seed": seed, "groups": g, "macro_f1": [float(lo), float(hi)]}


# -- calibration -------------------------------------------------------------------------


def reliability(probs: np.ndarray, gold: np.ndarray, n_bins: int = 10) -> dict:
    """Top-label reliability-diagram data, ECE and Brier score."""
    if n_bins < 1:
        raise UserError(f"--bins must be >= 1; got {n_bins}")
    n, k = probs.shape
    if n == 0:
        raise UserError("no rows to calibrate; check the input file and --split")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds (i/B, (i+1)/B]; rounding first puts 0.3 (= 3.0000000000000004/10) on its edge
    bins = np.clip(np.ceil(np.round(conf * n_bins, 9)).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    mean_conf = _ratio(conf_sum, count)
    mean_acc = _ratio(acc_sum, count)
    gaps = np.abs(mean_acc - mean_conf)
    onehot = np.eye(k)[gold]
    return {
        "n_bins": n_bins,
        "ece": float((count / n * gaps).sum()),
        "mce": float(gaps[count > 0].max()),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "mean_confidence": float(conf.mean()),
        "bins": [
            {
                "lo": float(edges[i]), "hi": float(edges[i + 1]), "count": int(count[i]),
                "confidence": float(mean_conf[i]) if count[i] else None,
                "accuracy": float(mean_acc[i]) if count[i] else None,
            }
            for i in range(n_bins)
        ],
    }


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, n_bins: int = 10) -> float:
    return reliability(probs, gold, n_bins)["ece"]


# -- discriminative hallucination --------------------------------------------------------


def hallucination(emitted: list, rationales: list, gold: list, scale: GradeScale) -> dict:
    """Disagreement between a rationale's decision step and the grade the answer emits.

    For each *parsed* answer (emitted label not None), `toolkit.core.parsing.decision_label` reads
    the grade named by the rationale's decision step ("5. Decision: Related" -> 3). Answers
    whose decision step names a grade form the denominator; those naming a grade other than
    the emitted one form the numerator. rate = numerator / denominator (None when 0).
    `rationale_right_label_wrong` counts the numerator rows whose decision-step grade equals
    gold: a sound rationale with a wrong final grade, the paper's wording.
    """
    from toolkit.core.parsing import decision_label

    labels, names = scale.labels, scale.names
    parsed = no_decision = den = num = right = 0
    for label, rationale, g in zip(emitted, rationales, gold):
        if label is None:
            continue
        parsed += 1
        said = decision_label(rationale or "", labels, names)
        if said is None:
            no_decision += 1
            continue
        den += 1
        if said != label:
            num += 1
            right += int(g is not None and said == scale.by_value(int(g)).label)
    return {
        "rate": num / den if den else None,
        "numerator": num,
        "denominator": den,
        "n_answers": len(emitted),
        "n_parsed": parsed,
        "no_decision": no_decision,
        "rationale_right_label_wrong": right,
    }


def probs_of(df: "pl.DataFrame", scale: GradeScale, tolerance: float = PROB_TOLERANCE) -> np.ndarray | None:
    """The `grade_probs` column of a predictions frame as a rows x grades array (checked: check_probs); None when
    absent."""
    import polars as pl

    from toolkit.core import columns as C

    if C.GRADE_PROBS not in df.columns or df[C.GRADE_PROBS].null_count() == df.height:
        # none at all (e.g. `toolkit score --mode generate` of a CoT-first model): the parsed grades are evaluated
        return None
    dtype = df.schema[C.GRADE_PROBS]
    if not isinstance(dtype, (pl.List, pl.Array)) or not (dtype.inner.is_numeric() or dtype.inner == pl.Null):
        raise UserError(f"column `{C.GRADE_PROBS}` holds {dtype}, not lists of numbers; "
                        "write it as list[float] in Parquet")
    col = df[C.GRADE_PROBS]
    col = col.cast(pl.List(pl.Float64)) if isinstance(col.dtype, pl.Array) else col
    ids = df[C.PAIR_ID].to_list() if C.PAIR_ID in df.columns else None
    return check_probs(col, scale, tolerance, ids)
