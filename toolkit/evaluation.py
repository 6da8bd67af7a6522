"""`toolkit eval`: metrics, plots and a Markdown report for a predictions file.

The predictions contract (a Parquet file, or a stage folder of them):

* `pair_id`, `grade` (gold, on the scale) — required;
* `grade_probs` — list[float], first-token probabilities of the grade labels, scale order (best
  first), each row summing to 1 (± `prob_tolerance`); and/or
* `pred_grade` — the emitted grade (null = unparseable answer), and/or `text` (the raw answer,
  parsed with `toolkit.core.parsing.parse_answer` when there is no `pred_grade`);
* optional `text` or `rationale` (+ `pred_grade`) for the discriminative-hallucination measure,
  and `split`.

Which grade is evaluated (`decision`): `argmax` of grade_probs, or `parsed` (the emitted grade);
`auto` = argmax when grade_probs exist, else parsed. An argmax tie goes to the better grade. With a
fitted tier rule (`tier_rule`), the report adds CumPT and expected-score cuts side by side, and the
output gets `cumpt_grade` + `tier`.

Model scoring plugs in through `evaluate(cfg, predictions=frame, provenance={...})`: a scoring
backend builds a frame with the columns above and hands it over instead of a file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.grades import GradeScale, get_scale
from toolkit.core.stagefolder import (input_hashes, Key, recorded_result, StageConfig, StageResult, write_parquet,
                                      write_stage, writes_output)
from toolkit.core.pairs import select_split
from toolkit.core.tables import read_pairs
from toolkit.core.metrics import (PROB_TOLERANCE, UNPARSED, probs_of, classification_metrics, grade_indices,
                                  hallucination, reliability)
from toolkit.core.stagefolder.files import METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE

log = logging.getLogger(__name__)

DECISIONS = ("auto", "argmax", "parsed")
METRICS_SCHEMA = "toolkit.eval/1"


# -- reading predictions (shared with `toolkit tier`) --------------------------------------


def resolve_scale(spec: str | None, path: "str | Path | None") -> GradeScale:
    """--scale if given, else the scale recorded in the input folder's manifest, else taosr4."""
    if spec:
        return get_scale(spec)
    if path is not None:
        from toolkit.core.stagefolder import scale_of

        return scale_of(path)
    return get_scale(None)


def load_frame(path: "str | Path", required: list[str], split: str | None = None) -> pl.DataFrame:
    """Read a predictions file or folder, check columns, keep one split if asked."""
    df = read_pairs(path, required=required)
    return select_split(df, split, str(path))


def emitted(df: pl.DataFrame, scale: GradeScale, order: str) -> tuple[list, list] | None:
    """(emitted label or None, rationale) per row for the hallucination measure, or None when no text.

    From `text` (parsed) when present, else from `rationale` + `pred_grade`.
    """
    if C.TEXT in df.columns:
        from toolkit.core.parsing import parse_answer

        finish = df[C.FINISH_REASON].to_list() if C.FINISH_REASON in df.columns else [None] * df.height
        parsed = [parse_answer(t, scale.labels, order, f) for t, f in zip(df[C.TEXT].to_list(), finish)]
        return [p.label for p in parsed], [p.rationale for p in parsed]
    if C.RATIONALE in df.columns and C.PRED_GRADE in df.columns:
        label = {g.value: g.label for g in scale.grades}
        return ([None if v is None else label.get(int(v)) for v in df[C.PRED_GRADE].to_list()],
                df[C.RATIONALE].to_list())
    return None


# -- the stage ----------------------------------------------------------------------------


@dataclass
class EvalConfig(StageConfig):
    predictions: str | None = opt(type="path", help="Predictions Parquet file or folder: pair_id, grade, and "
                                                   "grade_probs and/or pred_grade/text.")
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder (metrics.json, report.md, PNGs, predictions.parquet).")
    scale: str | None = opt(None,
                            help="Grade scale (default: the one in the predictions folder's manifest, else taosr4).")
    split: str | None = opt(None, help="Evaluate only rows of this split (e.g. test).")
    decision: str = opt("auto", choices=DECISIONS, show_default=True,
                        help="Grade to evaluate: argmax of grade_probs, or the parsed/emitted pred_grade; "
                             "auto = argmax when grade_probs exist.")
    tier_rule: str | None = opt(None, type="path",  # tiers.json from `toolkit tier fit`
                                help="tiers.json (or its folder) from `toolkit tier fit`: adds CumPT and "
                                     "expected-score rows and a tier column.")
    bins: int = opt(10, show_default=True, help="Equal-width confidence bins for ECE and the reliability diagram.")
    bootstrap: int = opt(1000, show_default=True,
                         help="Resamples of the 95% interval of macro-F1, over queries (the `query` column; else "
                              "pairs); 0 = none.")
    order: str | None = opt(None, choices=("label_first", "cot_first"),  # None: the predictions' recorded order
                            help="Answer order used to parse a `text` column (for pred_grade and the hallucination "
                                 "measure); default: the order in the predictions' manifest, else label_first.")
    prob_tolerance: float = opt(PROB_TOLERANCE, show_default=True, help="How far a grade_probs row may sum from 1.")
    plots: bool = opt(True, flags=("--no-plots",), negate=True, help="Skip the PNG plots.")
    force: bool = opt(False, help="Redo even when the output is up to date.")
    extra: dict = field(default_factory=dict)  # recorded in the config (e.g. the scoring model's settings)

    def __post_init__(self):
        from toolkit.core import lineage

        if self.decision not in DECISIONS:
            raise UserError(f"--decision must be one of {', '.join(DECISIONS)}; got {self.decision!r}")
        self.order = lineage.resolve_order(self.order, self.predictions)
        if int(self.bins) < 1:
            raise UserError(f"--bins must be a positive number of bins; got {self.bins}")
        if int(self.bootstrap) < 0:
            raise UserError(f"--bootstrap must be >= 0 resamples (0 = no interval); got {self.bootstrap}")
        if not 0 < float(self.prob_tolerance) < 0.5:
            raise UserError(f"--prob-tolerance must be in (0, 0.5); got {self.prob_tolerance}")


@dataclass
class EvalResult(StageResult):
    metrics: dict = field(default_factory=dict)
    STAGE = "eval"

    def headline(self) -> str:
        m = self.metrics
        ci = (m.get("bootstrap") or {}).get("macro_f1")
        ci = f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
        parts = [f"{m['n']} rows", f"macro-F1 {m['macro_f1']:.4f}{ci}", f"accuracy {m['accuracy']:.4f}"]
        if m.get("calibration"):
            parts.append(f"ECE {m['calibration']['ece']:.4f}")
        ndcg = (m.get("ranking") or {}).get("ndcg@10")
        if ndcg is not None:
            parts.append(f"NDCG@10 {ndcg:.4f}")
        h = m.get("hallucination")
        if h and h["denominator"]:
            parts.append(f"hallucination {h['numerator']}/{h['denominator']} ({100 * h['rate']:.1f}%)")
        if m.get("tiering"):
            parts.append(f"CumPT macro-F1 {m['tiering']['methods']['cumpt']['macro_f1']:.4f} "
                         f"(β={m['tiering']['beta']:.3f})")
        return ", ".join(parts)

    brief = headline


@writes_output("eval")
def evaluate(cfg: EvalConfig, predictions: pl.DataFrame | None = None, provenance: dict | None = None) -> EvalResult:
    """Evaluate a predictions file (cfg.predictions) or an in-memory predictions frame.

    `predictions` is the seam for model scoring: a backend scores pairs into a frame with the
    contract's columns and passes it here, with `provenance` (model id, pairs' hashes…) for the
    manifest in place of the input file hashes.
    """
    if predictions is None:
        if not cfg.predictions:
            raise UserError("no predictions given; pass --predictions FILE "
                            "(a Parquet file with grade and grade_probs or pred_grade)")
        inputs = input_hashes([cfg.predictions] + ([cfg.tier_rule] if cfg.tier_rule else []))
        done = recorded_result(EvalResult, cfg, inputs)
        if done is not None:
            done.metrics = json.loads((done.out / METRICS_FILE).read_text(encoding="utf-8"))
            return done
        df = load_frame(cfg.predictions, [C.PAIR_ID, C.GRADE], cfg.split)
        where = cfg.predictions
    else:
        inputs = {str(k): str(v) for k, v in (provenance or {}).items()}
        missing = [c for c in (C.PAIR_ID, C.GRADE) if c not in predictions.columns]
        if missing:
            raise UserError(f"predictions frame: column(s) {', '.join(missing)} missing; "
                            f"found: {', '.join(predictions.columns)}")
        df = select_split(predictions, cfg.split, "predictions")
        where = "predictions"
    scale = resolve_scale(cfg.scale, cfg.predictions if predictions is None else None)
    metrics, frame = compute(df, scale, cfg, where)
    metrics["input"] = where

    def write(tmp: Path) -> tuple[dict, dict]:
        from toolkit.report import render_eval

        write_parquet(frame, tmp / PREDICTIONS_FILE)
        metrics["images"] = _plots(metrics, scale, tmp) if cfg.plots else {}
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / REPORT_FILE).write_text(render_eval(metrics, scale), encoding="utf-8")
        counts = {"rows": metrics["n"], "unparsed": metrics["n_unparsed"], "macro_f1": metrics["macro_f1"],
                  "accuracy": metrics["accuracy"]}
        return counts, {Key.GRADE_SCALE: scale.to_dict()}

    return write_stage(EvalResult, cfg, inputs, write, metrics=metrics)


def compute(df: pl.DataFrame, scale: GradeScale, cfg: EvalConfig,
            where: str = "predictions") -> tuple[dict, pl.DataFrame]:
    """All metrics for one predictions frame, and the frame with the evaluated grade added."""
    try:
        gold = grade_indices(df[C.GRADE].to_list(), scale, "gold grade")
        probs = probs_of(df, scale, cfg.prob_tolerance)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    answers = emitted(df, scale, cfg.order)
    decision = cfg.decision if cfg.decision != "auto" else ("argmax" if probs is not None else "parsed")
    if decision == "argmax":
        if probs is None:
            raise UserError(f"{where}: --decision argmax needs a `{C.GRADE_PROBS}` column; "
                            f"found: {', '.join(df.columns)}")
        pred = probs.argmax(axis=1)
    elif C.PRED_GRADE in df.columns:
        try:
            pred = grade_indices(df[C.PRED_GRADE].to_list(), scale, "pred_grade", allow_missing=True)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    elif answers is not None and C.TEXT in df.columns:
        pos = {g.label: i for i, g in enumerate(scale.grades)}
        pred = np.array([pos[label] if label is not None else UNPARSED for label in answers[0]], dtype=np.int64)
    else:
        raise UserError(
            f"{where}: nothing to evaluate; need `{C.GRADE_PROBS}` (list of grade probabilities), "
            f"`{C.PRED_GRADE}` or `{C.TEXT}`; "
            f"found: {', '.join(df.columns)}"
        )
    metrics = {"schema": METRICS_SCHEMA, "scale": scale.to_dict(), "split": cfg.split, "decision": decision}
    metrics.update(classification_metrics(gold, pred, scale))
    metrics["calibration"] = reliability(probs, gold, int(cfg.bins)) if probs is not None else None
    metrics["hallucination"] = hallucination(answers[0], answers[1], df[C.GRADE].to_list(), scale) if answers else None
    metrics["by_split"] = _by_split(df, gold, pred, scale) if not cfg.split else None
    values = np.asarray(scale.values)
    pred_values = [None if p == UNPARSED else int(values[p]) for p in pred]
    extra = []
    if C.PRED_GRADE in df.columns and decision == "argmax":
        df = df.drop(C.PARSED_GRADE, strict=False).rename({C.PRED_GRADE: C.PARSED_GRADE})
    extra.append(pl.Series(C.PRED_GRADE, pred_values, dtype=pl.Int64))
    extra.append(pl.Series(C.CORRECT, (pred == gold).tolist(), dtype=pl.Boolean))
    metrics["tiering"] = None
    if cfg.tier_rule:
        if probs is None:
            raise UserError(f"{where}: --tier-rule needs a `{C.GRADE_PROBS}` column; found: {', '.join(df.columns)}")
        metrics["tiering"], tier_cols = _tiering(cfg.tier_rule, probs, gold, scale)
        extra += tier_cols
    metrics["bootstrap"] = _intervals(df, gold, pred, extra, scale, int(cfg.bootstrap)) if cfg.bootstrap else None
    metrics["ranking"] = _ranking(df, gold, pred, probs, scale, int(cfg.bootstrap))
    return metrics, df.with_columns(extra)


def _ranking(df: pl.DataFrame, gold: np.ndarray, pred: np.ndarray, probs, scale: GradeScale, resamples: int) -> dict:
    """How the judge orders each query's pairs (toolkit.core.ranking): NDCG@10 over queries, Spearman's ρ."""
    from toolkit.core.ranking import ranking_metrics, scores_of

    groups = df[C.QUERY].to_list() if C.QUERY in df.columns else None
    out = ranking_metrics(gold, scores_of(probs, pred, len(scale)), groups, len(scale), resamples=resamples)
    out["score"] = "expected grade" if probs is not None else "predicted grade"
    return out


def _intervals(df: pl.DataFrame, gold: np.ndarray, pred: np.ndarray, extra: list[pl.Series], scale: GradeScale,
               resamples: int) -> dict:
    """95% bootstrap intervals of macro-F1 over queries (pairs when there is no query column), for the evaluated
    decision and, with a tier rule, CumPT's."""
    from toolkit.core.metrics import bootstrap_macro_f1

    by = C.QUERY if C.QUERY in df.columns else C.PAIR_ID
    groups = df[by].to_list()
    out = {"by": by, **bootstrap_macro_f1(gold, pred, groups, len(scale), resamples)}
    cumpt = next((x for x in extra if x.name == C.CUMPT_GRADE), None)
    if cumpt is not None:
        cum = grade_indices(cumpt.to_list(), scale, C.CUMPT_GRADE, allow_missing=True)
        out["cumpt_macro_f1"] = bootstrap_macro_f1(gold, cum, groups, len(scale), resamples)["macro_f1"]
    return out


def _by_split(df: pl.DataFrame, gold: np.ndarray, pred: np.ndarray, scale: GradeScale) -> dict | None:
    if C.SPLIT not in df.columns:
        return None
    splits = np.asarray([str(s) for s in df[C.SPLIT].to_list()])
    names = sorted(set(splits.tolist()))
    if len(names) < 2:
        return None
    out = {}
    for s in names:
        m = classification_metrics(gold[splits == s], pred[splits == s], scale)
        out[s] = {"n": m["n"], "macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
    return out


def _tiering(rule_path: str, probs: np.ndarray, gold: np.ndarray, scale: GradeScale) -> tuple[dict, list[pl.Series]]:
    from toolkit.cumpt import TierRule, compare_decisions, expected_scores, fit_thresholds

    rule = TierRule.load(rule_path)
    if rule.scale.values != scale.values:
        raise UserError(f"{rule_path}: the tier rule is for scale {rule.scale.values}, the predictions for "
                        f"{scale.values}; pass --scale {rule.scale.name}")
    cuts = rule.expected_score_cuts or fit_thresholds(expected_scores(probs, scale), gold, scale)
    methods = compare_decisions(probs, gold, scale, rule.tiers, rule.beta, cuts, rule.tol)
    values, tiers = rule.predict(probs)
    info = {"rule": str(rule_path), "beta": rule.beta, "tiers": rule.tiers, "methods": methods}
    return info, [pl.Series(C.CUMPT_GRADE, values.tolist(), dtype=pl.Int64), pl.Series(C.TIER, tiers, dtype=pl.String)]


def _plots(metrics: dict, scale: GradeScale, folder: Path) -> dict[str, str]:
    from toolkit.core import plots

    if not plots.available():
        return {}
    images = {}
    cm = metrics["confusion"]
    ticks = [f"{g.label} {g.name}" if g.label != g.name else g.name for g in scale.grades]
    plots.confusion_png(cm["matrix"], ticks, folder / "confusion.png", f"Confusion matrix (n={metrics['n']})")
    images["confusion"] = "confusion.png"
    if metrics["calibration"]:
        cal = metrics["calibration"]
        plots.reliability_png(cal["bins"], cal["ece"], folder / "reliability.png")
        images["reliability"] = "reliability.png"
    return images

