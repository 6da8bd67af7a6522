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
from toolkit.core.grades import GradeScale
from toolkit.core.stagefolder import (StageConfig, atomic_dir, input_hashes, is_up_to_date, manifest_of, read_manifest, up_to_date_line,
    write_manifest, write_parquet, writes_output)
from toolkit.core.metrics import PROB_TOLERANCE, grade_indices

log = logging.getLogger(__name__)

OBJECTIVES = ("macro_f1", "good_rate")


@dataclass
class TierFitConfig(StageConfig):
    predictions: str
    out: str
    split: str | None = None  # fit on this split's rows only (e.g. dev)
    objective: str = "macro_f1"  # macro_f1 | good_rate
    target_good_rate: float | None = None  # for objective good_rate
    tiers: str | None = None  # `Good=4,3;Mid=2;Bad=1`; default by the scale's size
    scale: str | None = None
    grid: int = 201  # β values drawn in the plot (the fit itself is exact over all breakpoints)
    prob_tolerance: float = PROB_TOLERANCE
    plots: bool = True
    force: bool = False

    def __post_init__(self):
        self.objective = self.objective.replace("-", "_")
        if self.objective not in OBJECTIVES:
            raise UserError(f"--objective must be macro-f1 or good-rate; got {self.objective!r}")
        if self.objective == "good_rate" and (self.target_good_rate is None or not 0 <= float(self.target_good_rate) <= 1):
            raise UserError(f"--objective good-rate needs --target-good-rate in [0, 1]; got {self.target_good_rate}")
        if self.objective == "macro_f1" and self.target_good_rate is not None:
            self.objective = "good_rate"  # a target given means hitting it
        if int(self.grid) < 2:
            raise UserError(f"--grid must be at least 2 β values; got {self.grid}")


@dataclass
class TierResult:
    out: Path
    counts: dict
    skipped: bool = False
    stage: str = "tier fit"

    def summary(self) -> str:
        c = self.counts
        if self.stage == "tier fit":
            text = (f"{c['rows']} dev rows, β = {c['beta']:.4f}, macro-F1 CumPT {c['cumpt']:.4f} / argmax {c['argmax']:.4f} / "
                    f"expected-score {c['expected_score']:.4f}, Good rate {c['good_rate']:.3f}")
        else:
            text = f"{c['rows']} rows tiered with β = {c['beta']:.4f}: " + ", ".join(f"{k} {v}" for k, v in c["tiers"].items())
        if self.skipped:
            return up_to_date_line(self.stage, self.out, text)
        return f"{self.stage}: {text} -> {self.out}"


@writes_output("tier fit")
def fit_tiers(cfg: TierFitConfig) -> TierResult:
    from toolkit.cumpt import RULE_FILE, fit_rule
    from toolkit.evaluation import load_frame, probs_of, resolve_scale

    out = Path(cfg.out)
    inputs = input_hashes([cfg.predictions])
    resolved = cfg.resolved()
    if not cfg.force and is_up_to_date(out, "tier fit", resolved, inputs):
        return TierResult(out, read_manifest(out)["counts"], skipped=True)
    df = load_frame(cfg.predictions, [C.GRADE, C.GRADE_PROBS], cfg.split)
    scale = resolve_scale(cfg.scale, cfg.predictions)
    try:
        gold = grade_indices(df[C.GRADE].to_list(), scale, "gold grade")
        probs = probs_of(df, scale, cfg.prob_tolerance)
    except UserError as e:
        raise UserError(f"{cfg.predictions}: {e}") from None
    rule, curve = fit_rule(probs, gold, scale, cfg.tiers, cfg.objective, cfg.target_good_rate)
    scored_by = (manifest_of(cfg.predictions) or {}).get("model")  # the model whose probabilities β fits
    rule.dev.update({"input": cfg.predictions, "split": cfg.split, "model": scored_by})
    grid = np.linspace(0.0, 1.0, int(cfg.grid))
    f1, good = curve.at(grid)
    methods = rule.dev["methods"]
    counts = {"rows": int(len(gold)), "beta": rule.beta, "good_rate": methods["cumpt"]["good_rate"],
              **{k: v["macro_f1"] for k, v in methods.items()}}
    with atomic_dir(out) as tmp:
        rule.save(tmp / RULE_FILE)
        (tmp / "beta_curve.json").write_text(json.dumps({
            "grid": {"beta": grid.tolist(), "macro_f1": f1.tolist(), "good_rate": good.tolist()},
            "plateaus": {"bounds": curve.bounds.tolist(), "macro_f1": curve.macro_f1.tolist(), "good_rate": curve.good_rate.tolist()},
        }) + "\n", encoding="utf-8")
        image = None
        if cfg.plots:
            from toolkit.core import plots

            if plots.available():
                baselines = {"argmax": methods["argmax"]["macro_f1"], "expected-score": methods["expected_score"]["macro_f1"]}
                plots.beta_curve_png(grid, f1, good, rule.beta, baselines, tmp / "beta_curve.png")
                image = "beta_curve.png"
        from toolkit.report import render_fit

        (tmp / "fit.md").write_text(render_fit(rule.to_dict(), image), encoding="utf-8")
        write_manifest(tmp, "tier fit", resolved, inputs, counts, {"grade_scale": scale.to_dict()})
    return TierResult(out, counts)


@dataclass
class TierApplyConfig(StageConfig):
    predictions: str
    rule: str  # tiers.json or the `toolkit tier fit` folder holding it
    out: str
    split: str | None = None
    prob_tolerance: float = PROB_TOLERANCE
    force: bool = False


@writes_output("tier apply")
def apply_tiers(cfg: TierApplyConfig) -> TierResult:
    from toolkit.cumpt import RULE_FILE, TierRule
    from toolkit.evaluation import PREDICTIONS_FILE, load_frame, probs_of

    out = Path(cfg.out)
    rule_path = Path(cfg.rule) / RULE_FILE if Path(cfg.rule).is_dir() else Path(cfg.rule)
    inputs = input_hashes([cfg.predictions, rule_path])
    resolved = cfg.resolved()
    if not cfg.force and is_up_to_date(out, "tier apply", resolved, inputs):
        return TierResult(out, read_manifest(out)["counts"], skipped=True, stage="tier apply")
    rule = TierRule.load(rule_path)
    recorded = (manifest_of(cfg.predictions) or {}).get("grade_scale")
    if recorded:
        theirs = GradeScale.from_dict(recorded, where=str(cfg.predictions))
        if not theirs.same_grades(rule.scale):
            raise UserError(f"{cfg.predictions}: the predictions are on grade scale `{theirs.name}` ({theirs.describe()}) but the tier rule "
                            f"{rule_path} is for `{rule.scale.name}` ({rule.scale.describe()}); fit a rule on predictions of this scale")
    df = load_frame(cfg.predictions, [C.GRADE_PROBS], cfg.split)
    try:
        probs = probs_of(df, rule.scale, cfg.prob_tolerance)
    except UserError as e:
        raise UserError(f"{cfg.predictions}: {e} (the tier rule's scale is `{rule.scale.name}`)") from None
    values, tiers = rule.predict(probs)
    df = df.with_columns(pl.Series(C.CUMPT_GRADE, values.tolist(), dtype=pl.Int64), pl.Series(C.TIER, tiers, dtype=pl.String))
    counts = {"rows": df.height, "beta": rule.beta, "tiers": {t: tiers.count(t) for t in rule.tiers}}
    with atomic_dir(out) as tmp:
        write_parquet(df, tmp / PREDICTIONS_FILE)
        write_manifest(tmp, "tier apply", resolved, inputs, counts, {"grade_scale": rule.scale.to_dict(), "tier_rule": rule.to_dict()})
    return TierResult(out, counts, stage="tier apply")
