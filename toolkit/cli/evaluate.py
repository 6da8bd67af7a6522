"""Evaluation commands: `toolkit eval`, `toolkit tier fit`, `toolkit tier apply`."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option
from toolkit.cli.options import config_from, options_from
from toolkit.evaluation import EvalConfig
from toolkit.tiering import TierApplyConfig, TierFitConfig


@click.command("eval")
@config_option
@options_from(EvalConfig, skip=("extra",))  # extra: set by Python callers (e.g. the scoring model's settings)
def eval_cmd(**kw):
    """Evaluate predictions: macro-F1, per-grade F1, accuracy, confusion, calibration, hallucination, and
    the order within queries (NDCG@10 by expected grade, beside a random order's; Spearman's rho).

    Reads a predictions Parquet file (gold `grade` plus first-token `grade_probs`, best
    grade first, and/or `pred_grade`; optional `text`/`rationale` and `split`) and writes
    metrics.json, report.md, confusion.png, reliability.png and predictions.parquet
    (with the evaluated `pred_grade` and `correct`). Macro-F1 averages over every grade
    of the scale; a grade absent from gold and predictions counts as 0.

    \b
    Examples:
      toolkit eval --predictions out/demo/scores --split test --tier-rule out/demo/tiers -o out/demo/eval
      toolkit eval --predictions scores.parquet --split test --tier-rule out/tiers -o out/eval-test
    """
    from toolkit.core.errors import UserError
    from toolkit.evaluation import evaluate

    if not kw["predictions"]:
        raise UserError("pass --predictions FILE (a Parquet file with grade and grade_probs or pred_grade)")
    if not kw["out"]:
        raise UserError("no output folder; pass -o/--out FOLDER")
    # Model scoring plugs in here: with `--model`/`--pairs`, score the pairs into a predictions frame
    # (toolkit.scoring.score_pairs) and call evaluate(cfg, predictions=frame, provenance={...}).
    cfg = config_from(EvalConfig, kw)
    click.echo(evaluate(cfg).summary())


@click.group()
def tier():
    """CumPT tiering: fit one threshold β on dev predictions, apply it to new ones.

    The predicted grade is the best grade k with P(top)+...+P(k) >= β; grades map to
    tiers (taosr4: 4,3 Good; 2 Mid; 1 Bad).
    """


@tier.command("fit")
@config_option
@options_from(TierFitConfig, override={"objective": {"default": "macro-f1"}})  # the CLI spells the objectives with `-`
def fit(**kw):
    """Fit CumPT's β on dev predictions; compare with argmax and expected-score cuts.

    \b
    Examples:
      toolkit tier fit --predictions out/demo/scores --split dev -o out/demo/tiers
      toolkit tier fit --predictions scores.parquet --split dev --target-good-rate 0.4 -o out/tiers
    """
    from toolkit.core.errors import UserError
    from toolkit.tiering import fit_tiers

    if not kw["predictions"] or not kw["out"]:
        raise UserError("pass dev predictions and an output folder: "
                        "`toolkit tier fit --predictions dev.parquet -o out/tiers`")
    cfg = config_from(TierFitConfig, kw)
    click.echo(fit_tiers(cfg).summary())


@tier.command("apply")
@config_option
@options_from(TierApplyConfig)
def apply(**kw):
    """Add `cumpt_grade` and `tier` columns with a fitted tier rule.

    \b
    Example:
      toolkit tier apply --predictions scores.parquet --rule out/tiers -o out/tiered
    """
    from toolkit.core.errors import UserError
    from toolkit.tiering import apply_tiers

    if not kw["predictions"] or not kw["rule"] or not kw["out"]:
        raise UserError("pass --predictions, --rule and -o: "
                        "`toolkit tier apply --predictions p.parquet --rule out/tiers -o out/tiered`")
    cfg = config_from(TierApplyConfig, kw)
    click.echo(apply_tiers(cfg).summary())


COMMANDS = [eval_cmd, tier]
