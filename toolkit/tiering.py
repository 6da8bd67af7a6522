"""`toolkit tier fit` and `toolkit tier apply`: the CumPT stages around `toolkit.cumpt`.

fit: dev predictions (gold `grade` + `grade_probs`) -> a folder with tiers.json (the rule serving
loads), fit.md (argmax vs CumPT vs expected-score cuts), beta_curve.png and beta_curve.json.
apply: predictions with `grade_probs` (gold not needed) + tiers.json -> the same rows with
`cumpt_grade` and `tier` added.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.stagefolder.files import PREDICTIONS_FILE, RULE_FILE
from toolkit.core.stagefolder import (input_hashes, Key, recorded_result, StageConfig, StageFolder, StageResult,
                                      write_parquet, write_stage, writes_output)
from toolkit.core.metrics import probs_of, PROB_TOLERANCE, grade_indices

log = logging.getLogger(__name__)

OBJECTIVES = ("macro_f1", "good_rate")


@dataclass
class TierFitConfig(StageConfig):
    predictions: str = opt(type="path", help="Dev predictions: Parquet file or folder with grade and grade_probs.")
    out: str = opt(flags=("-o", "--out"), type="path", help="Output folder (tiers.json, fit.md, beta_curve.png/json).")
    split: str | None = opt(None, help="Fit on rows of this split only (e.g. dev).")
    # macro_f1 | good_rate (either spelling)
    objective: str = opt("macro_f1", choices=("macro-f1", "good-rate"), show_default=True,
                         help="Maximise macro-F1, or hit --target-good-rate (ties: higher macro-F1).")
    target_good_rate: float | None = opt(None, help="Wanted share of Good-tier rows in [0, 1] "
                                                    "(implies --objective good-rate).")
    tiers: str | None = opt(None, help="Tier map, tiers best first, e.g. 'Good=4,3;Mid=2;Bad=1' (default by the "
                                       "scale's size).")
    scale: str | None = opt(None,
                            help="Grade scale (default: the one in the predictions folder's manifest, else taosr4).")
    grid: int = opt(201, show_default=True, help="β values drawn in the plot; the fit is exact over all breakpoints.")
    prob_tolerance: float = opt(PROB_TOLERANCE, show_default=True, help="How far a grade_probs row may sum from 1.")
    plots: bool = opt(True, flags=("--no-plots",), negate=True, help="Skip beta_curve.png.")
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def __post_init__(self):
        self.objective = self.objective.replace("-", "_")
        if self.objective not in OBJECTIVES:
            raise UserError(f"--objective must be macro-f1 or good-rate; got {self.objective!r}")
        if self.objective == "good_rate" and (self.target_good_rate is None
                                              or not 0 <= float(self.target_good_rate) <= 1):
            raise UserError(f"--objective good-rate needs --target-good-rate in [0, 1]; got {self.target_good_rate}")
        if self.objective == "macro_f1" and self.target_good_rate is not None:
            self.objective = "good_rate"  # a target given means hitting it
        if int(self.grid) < 2:
            raise UserError(f"--grid must be at least 2 β values; got {self.grid}")


@dataclass
class TierFitResult(StageResult):
    STAGE = "tier fit"

    def headline(self) -> str:
        c = self.counts
        return (f"{c['rows']} dev rows, β = {c['beta']:.4f}, macro-F1 CumPT {c['cumpt']:.4f} / "
                f"argmax {c['argmax']:.4f} / expected-score {c['expected_score']:.4f}, Good rate {c['good_rate']:.3f}")

    brief = headline


@dataclass
class TierApplyResult(StageResult):
    STAGE = "tier apply"

    def headline(self) -> str:
        c = self.counts
        return (f"{c['rows']} rows tiered with β = {c['beta']:.4f}: "
                + ", ".join(f"{k} {v}" for k, v in c["tiers"].items()))

    brief = headline


TierResult = TierFitResult | TierApplyResult


@writes_output("tier fit")
def fit_tiers(cfg: TierFitConfig) -> TierFitResult:
    from toolkit.cumpt import fit_rule
    from toolkit.evaluation import load_frame, resolve_scale

    inputs = input_hashes([cfg.predictions])
    done = recorded_result(TierFitResult, cfg, inputs)
    if done is not None:
        return done
    df = load_frame(cfg.predictions, [C.GRADE, C.GRADE_PROBS], cfg.split)
    scale = resolve_scale(cfg.scale, cfg.predictions)
    try:
        gold = grade_indices(df[C.GRADE].to_list(), scale, "gold grade")
        probs = probs_of(df, scale, cfg.prob_tolerance)
    except UserError as e:
        raise UserError(f"{cfg.predictions}: {e}") from None
    rule, curve = fit_rule(probs, gold, scale, cfg.tiers, cfg.objective, cfg.target_good_rate)
    scored_by = StageFolder.open(cfg.predictions).get(Key.MODEL)  # the model whose probabilities β fits
    rule.dev.update({"input": cfg.predictions, "split": cfg.split, "model": scored_by})
    grid = np.linspace(0.0, 1.0, int(cfg.grid))
    f1, good = curve.at(grid)
    methods = rule.dev["methods"]
    counts = {"rows": int(len(gold)), "beta": rule.beta, "good_rate": methods["cumpt"]["good_rate"],
              **{k: v["macro_f1"] for k, v in methods.items()}}

    def write(tmp: Path) -> tuple[dict, dict]:
        rule.save(tmp / RULE_FILE)
        (tmp / "beta_curve.json").write_text(json.dumps({
            "grid": {"beta": grid.tolist(), "macro_f1": f1.tolist(), "good_rate": good.tolist()},
            "plateaus": {"bounds": curve.bounds.tolist(), "macro_f1": curve.macro_f1.tolist(),
                         "good_rate": curve.good_rate.tolist()},
        }) + "\n", encoding="utf-8")
        image = None
        if cfg.plots:
            from toolkit.core import plots

            if plots.available():
                baselines = {"argmax": methods["argmax"]["macro_f1"],
                             "expected-score": methods["expected_score"]["macro_f1"]}
                plots.beta_curve_png(grid, f1, good, rule.beta, baselines, tmp / "beta_curve.png")
                image = "beta_curve.png"
        from toolkit.report import render_fit

        (tmp / "fit.md").write_text(render_fit(rule.to_dict(), image), encoding="utf-8")
        return counts, {Key.GRADE_SCALE: scale.to_dict()}

    return write_stage(TierFitResult, cfg, inputs, write)


@dataclass
class TierApplyConfig(StageConfig):
    predictions: str = opt(type="path", help="Predictions Parquet file or folder with grade_probs (gold not needed).")
    rule: str = opt(type="path", help="tiers.json from `toolkit tier fit`, or its folder.")
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder (predictions.parquet with cumpt_grade and tier).")
    split: str | None = opt(None, help="Tier only rows of this split.")
    prob_tolerance: float = opt(PROB_TOLERANCE, show_default=True, help="How far a grade_probs row may sum from 1.")
    force: bool = opt(False, help="Redo even when the output is up to date.")


@writes_output("tier apply")
def apply_tiers(cfg: TierApplyConfig) -> TierApplyResult:
    from toolkit.cumpt import TierRule
    from toolkit.evaluation import load_frame

    rule_path = StageFolder.open(cfg.rule).file(RULE_FILE)
    inputs = input_hashes([cfg.predictions, rule_path])
    done = recorded_result(TierApplyResult, cfg, inputs)
    if done is not None:
        return done
    rule = TierRule.load(rule_path)
    predictions = StageFolder.open(cfg.predictions)
    if predictions.get(Key.GRADE_SCALE):
        theirs = predictions.scale()
        if not theirs.same_grades(rule.scale):
            raise UserError(f"{cfg.predictions}: the predictions are on grade scale `{theirs.name}` "
                            f"({theirs.describe()}) but the tier rule {rule_path} is for `{rule.scale.name}` "
                            f"({rule.scale.describe()}); fit a rule on predictions of this scale")
    df = load_frame(cfg.predictions, [C.GRADE_PROBS], cfg.split)
    try:
        probs = probs_of(df, rule.scale, cfg.prob_tolerance)
    except UserError as e:
        raise UserError(f"{cfg.predictions}: {e} (the tier rule's scale is `{rule.scale.name}`)") from None
    values, tiers = rule.predict(probs)
    df = df.with_columns(pl.Series(C.CUMPT_GRADE, values.tolist(), dtype=pl.Int64),
                         pl.Series(C.TIER, tiers, dtype=pl.String))
    counts = {"rows": df.height, "beta": rule.beta, "tiers": {t: tiers.count(t) for t in rule.tiers}}

    def write(tmp: Path) -> tuple[dict, dict]:
        write_parquet(df, tmp / PREDICTIONS_FILE)
        return counts, {Key.GRADE_SCALE: rule.scale.to_dict(), "tier_rule": rule.to_dict()}

    return write_stage(TierApplyResult, cfg, inputs, write)
