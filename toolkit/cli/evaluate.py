"""Evaluation commands: `toolkit eval`, `toolkit tier fit`, `toolkit tier apply`."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option

DECISION_HELP = "Grade to evaluate: argmax of grade_probs, or the parsed/emitted pred_grade; auto = argmax when grade_probs exist."


@click.command("eval")
@config_option
@click.option("--predictions", type=click.Path(), help="Predictions Parquet file or folder: pair_id, grade, and grade_probs and/or pred_grade/text.")
@click.option("-o", "--out", type=click.Path(), help="Output folder (metrics.json, report.md, PNGs, predictions.parquet).")
@click.option("--scale", help="Grade scale (default: the one in the predictions folder's manifest, else taosr4).")
@click.option("--split", help="Evaluate only rows of this split (e.g. test).")
@click.option("--decision", type=click.Choice(["auto", "argmax", "parsed"]), default="auto", show_default=True, help=DECISION_HELP)
@click.option("--tier-rule", type=click.Path(), help="tiers.json (or its folder) from `toolkit tier fit`: adds CumPT and expected-score rows and a tier column.")
@click.option("--bins", default=10, show_default=True, type=int, help="Equal-width confidence bins for ECE and the reliability diagram.")
@click.option("--order", type=click.Choice(["label_first", "cot_first"]),
              help="Answer order used to parse a `text` column (for pred_grade and the hallucination measure); default: the order in the predictions' manifest, else label_first.")
@click.option("--prob-tolerance", default=1e-3, show_default=True, type=float, help="How far a grade_probs row may sum from 1.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def eval_cmd(predictions, out, scale, split, decision, tier_rule, bins, order, prob_tolerance, no_plots, force):
    """Evaluate predictions: macro-F1, per-grade F1, accuracy, confusion, calibration, hallucination.

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
    from toolkit.evaluation import EvalConfig, evaluate

    if not predictions:
        raise UserError("pass --predictions FILE (a Parquet file with grade and grade_probs or pred_grade)")
    if not out:
        raise UserError("no output folder; pass -o/--out FOLDER")
    # Model scoring plugs in here: with `--model`/`--pairs`, score the pairs into a predictions frame
    # (toolkit.scoring.score_pairs) and call evaluate(cfg, predictions=frame, provenance={...}).
    cfg = EvalConfig(predictions=predictions, out=out, scale=scale, split=split, decision=decision, tier_rule=tier_rule,
                     bins=bins, order=order, prob_tolerance=prob_tolerance, plots=not no_plots, force=force)
    click.echo(evaluate(cfg).summary())


@click.group()
def tier():
    """CumPT tiering: fit one threshold β on dev predictions, apply it to new ones.

    The predicted grade is the best grade k with P(top)+...+P(k) >= β; grades map to
    tiers (taosr4: 4,3 Good; 2 Mid; 1 Bad).
    """


@tier.command("fit")
@config_option
@click.option("--predictions", type=click.Path(), help="Dev predictions: Parquet file or folder with grade and grade_probs.")
@click.option("-o", "--out", type=click.Path(), help="Output folder (tiers.json, fit.md, beta_curve.png/json).")
@click.option("--split", help="Fit on rows of this split only (e.g. dev).")
@click.option("--objective", type=click.Choice(["macro-f1", "good-rate"]), default="macro-f1", show_default=True,
              help="Maximise macro-F1, or hit --target-good-rate (ties: higher macro-F1).")
@click.option("--target-good-rate", type=float, help="Wanted share of Good-tier rows in [0, 1] (implies --objective good-rate).")
@click.option("--tiers", help="Tier map, tiers best first, e.g. 'Good=4,3;Mid=2;Bad=1' (default by the scale's size).")
@click.option("--scale", help="Grade scale (default: the one in the predictions folder's manifest, else taosr4).")
@click.option("--grid", default=201, show_default=True, type=int, help="β values drawn in the plot; the fit is exact over all breakpoints.")
@click.option("--prob-tolerance", default=1e-3, show_default=True, type=float, help="How far a grade_probs row may sum from 1.")
@click.option("--no-plots", is_flag=True, help="Skip beta_curve.png.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def fit(predictions, out, split, objective, target_good_rate, tiers, scale, grid, prob_tolerance, no_plots, force):
    """Fit CumPT's β on dev predictions; compare with argmax and expected-score cuts.

    \b
    Examples:
      toolkit tier fit --predictions out/demo/scores --split dev -o out/demo/tiers
      toolkit tier fit --predictions scores.parquet --split dev --target-good-rate 0.4 -o out/tiers
    """
    from toolkit.core.errors import UserError
    from toolkit.tiering import TierFitConfig, fit_tiers

    if not predictions or not out:
        raise UserError("pass dev predictions and an output folder: `toolkit tier fit --predictions dev.parquet -o out/tiers`")
    cfg = TierFitConfig(predictions=predictions, out=out, split=split, objective=objective, target_good_rate=target_good_rate,
                        tiers=tiers, scale=scale, grid=grid, prob_tolerance=prob_tolerance, plots=not no_plots, force=force)
    click.echo(fit_tiers(cfg).summary())


@tier.command("apply")
@config_option
@click.option("--predictions", type=click.Path(), help="Predictions Parquet file or folder with grade_probs (gold not needed).")
@click.option("--rule", type=click.Path(), help="tiers.json from `toolkit tier fit`, or its folder.")
@click.option("-o", "--out", type=click.Path(), help="Output folder (predictions.parquet with cumpt_grade and tier).")
@click.option("--split", help="Tier only rows of this split.")
@click.option("--prob-tolerance", default=1e-3, show_default=True, type=float, help="How far a grade_probs row may sum from 1.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def apply(predictions, rule, out, split, prob_tolerance, force):
    """Add `cumpt_grade` and `tier` columns with a fitted tier rule.

    \b
    Example:
      toolkit tier apply --predictions scores.parquet --rule out/tiers -o out/tiered
    """
    from toolkit.core.errors import UserError
    from toolkit.tiering import TierApplyConfig, apply_tiers

    if not predictions or not rule or not out:
        raise UserError("pass --predictions, --rule and -o: `toolkit tier apply --predictions p.parquet --rule out/tiers -o out/tiered`")
    cfg = TierApplyConfig(predictions=predictions, rule=rule, out=out, split=split, prob_tolerance=prob_tolerance, force=force)
    click.echo(apply_tiers(cfg).summary())


COMMANDS = [eval_cmd, tier]
