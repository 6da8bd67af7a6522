"""Review commands: `toolkit review push` and `toolkit review pull` (human review rounds in Argilla)."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option

KIND_CHOICES = ["cot", "prefs", "hard", "errors"]
KIND_HELP = ("What the input is: cot (gen-cot output: CoT rationales), prefs (make-prefs output: preference pairs), "
             "hard (label-difficulty output: hard cases), errors (eval output: pairs the model got wrong).")


def _server_options(f):
    f = click.option("--timeout", default=30.0, show_default=True, type=float, help="Seconds to wait for each request to Argilla.")(f)
    f = click.option("--api-key", envvar="ARGILLA_API_KEY", show_envvar=True, help="API key of an Argilla owner or admin.")(f)
    f = click.option("--api-url", envvar="ARGILLA_API_URL", show_envvar=True, help="Argilla server URL, e.g. http://127.0.0.1:6900.")(f)
    f = click.option("--workspace", default="review", show_default=True, help="Argilla workspace (created by push when missing).")(f)
    f = click.option("--dataset", help="Argilla dataset name (default: taosr-KIND; created by push when missing).")(f)
    f = click.option("--scale", help="Grade scale (default: the one recorded in the input's manifest, else taosr4).")(f)
    f = click.option("-k", "--kind", type=click.Choice(KIND_CHOICES), required=True, help=KIND_HELP)(f)
    return f


@click.group()
def review():
    """Human review rounds in Argilla: push model output, pull answers, merge.

    The server comes from --api-url / --api-key or ARGILLA_API_URL / ARGILLA_API_KEY.
    A local server for trying it out: `make argilla-up`, then
    `eval "$(annotation/stack/argilla_stack.sh env)"`.
    """


@review.command()
@config_option
@click.argument("input", type=click.Path())
@_server_options
@click.option("--min-submitted", default=1, show_default=True, type=int,
              help="Answers a record needs before it is done (Argilla task distribution); 2+ for agreement figures.")
@click.option("--pairs", type=click.Path(), help="Canonical pairs (`toolkit ingest` output) to show query and item text from, when the input lacks them (gen-cot, make-prefs).")
@click.option("--guidelines", type=click.Path(), help="Markdown file shown to reviewers with the grade scale, e.g. demo/guideline.md.")
@click.option("--limit", type=int, help="Push only the first N rows (after the kind's filter).")
@click.option("--max-pass-rate", type=float, help="prefs/hard: push only rows with pass_rate <= this value.")
@click.option("--blind", is_flag=True, help="Push without the model's suggestion (and, for errors, without its prediction): reviewers judge unprompted.")
def push(input, **opts):
    """Send a dataset to Argilla for review, one record per pair.

    Reviewers see the query, the item, the retrieved rules and the model's output, and
    answer: the correct grade (the model's grade is the suggestion, with its probability
    when known), whether to keep the row, a corrected answer (cot, prefs) and a comment.
    Metadata (pass rate, difficulty, source, model, grades) can be filtered on in the UI.
    Record ids are pair ids: pushing again updates records and keeps their answers.
    Kind errors pushes only the rows whose prediction differs from the gold grade.

    \b
    Examples:
      toolkit review push out/demo/cot --kind cot --pairs out/demo/pairs --dataset demo-cot --guidelines demo/guideline.md
      toolkit review push out/prefs --kind prefs --min-submitted 2 --limit 300
    """
    from annotation.push import PushConfig, push as run

    click.echo(run(PushConfig(input=input, **opts)).summary())


@review.command("select")
@config_option
@click.argument("input", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder for the selection (the source's file name and columns, plus select_score and select_rank).")
@click.option("--policy", type=click.Choice(["entropy", "margin", "disagreement", "boundary", "hard", "random"]), default="entropy", show_default=True,
              help="What comes first: uncertain (entropy, margin), likely label noise (disagreement), near the CumPT cut (boundary), "
                   "hard cases (hard), or a seeded random control.")
@click.option("--tiers", type=click.Path(), help="--policy boundary: a `toolkit tier fit` folder whose fitted β is the cut.")
@click.option("--beta", type=float, help="--policy boundary: the CumPT β, instead of --tiers.")
@click.option("--budget", default="10%", show_default=True, help="Rows to select: N, or P% of the candidate rows.")
@click.option("--stratify", type=click.Choice(["grade", "none"]), default="grade", show_default=True,
              help="Share the budget among the gold grades in proportion to their rows.")
@click.option("--max-per-query", type=int, help="At most this many rows of one query.")
@click.option("--split", help="Select from this split only (e.g. dev, train).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random policy and of tie-breaking.")
@click.option("--honeypots", type=click.Path(), help="Pairs with trusted grades (pair_id, grade): gold records mixed into the round to check reviewers.")
@click.option("--honeypot-rate", default=0.1, show_default=True, type=float, help="With --honeypots: the share of the round's records that are honeypots.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def select_cmd(input, out, **opts):
    """Pick the records worth a reviewer's time, under a budget, from a scored or difficulty folder.

    Scores every row by the policy, takes the highest (ties broken by the seed), shared
    among the gold grades; writes them with the score that chose each one, for `review push`.

    \b
    Examples:
      toolkit review select out/demo/scores -o out/demo/review-uncertain --policy entropy --budget 20
      toolkit review select out/demo/difficulty -o out/demo/review-hard --policy hard --budget 10%
      toolkit review push out/demo/review-uncertain --kind errors --pairs out/demo/pairs
    """
    from annotation.select import SelectConfig, select
    from toolkit.core.errors import UserError

    if not input or not out:
        raise UserError("pass a scored or difficulty folder and -o: `toolkit review select out/demo/scores -o out/demo/review-uncertain`")
    click.echo(select(SelectConfig(input=input, out=out, **opts)).summary())


@review.command()
@config_option
@click.argument("input", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder for the merged dataset and the review files.")
@_server_options
@click.option("--policy", type=click.Choice(["majority", "unanimous", "trust"]), default="majority", show_default=True,
              help="How several reviewers' answers become one decision.")
@click.option("--trusted-reviewer", help="With --policy trust: this username's answers win when they answered.")
@click.option("--min-submitted", type=int, help="Answers a record needs to be decided (default: the dataset's setting); fewer -> pending.")
@click.option("--min-honeypot-accuracy", type=float, help="Leave out of the merge every reviewer whose accuracy on honeypots is below this (0-1).")
@click.option("--min-honeypots", default=3, show_default=True, type=int, help="With --min-honeypot-accuracy: judge only reviewers who answered this many honeypots.")
def pull(input, out, **opts):
    """Fetch reviewers' answers, measure agreement and merge them into the dataset.

    INPUT is the data you pushed. Corrected grades replace the gold grade; rows
    reviewers rejected leave the set (rationales from the SFT set, pairs from the DPO set)
    unless a corrected answer was given; records without enough answers stay, marked
    pending. Writes the merged Parquet files (same names as the input) and review/ with
    responses, the change log, dropped rows and agreement (percent agreement, Cohen's kappa
    for two reviewers, Fleiss' kappa for more).

    \b
    Example:
      toolkit review pull out/demo/cot --kind cot --dataset demo-cot -o out/demo/cot-reviewed
    """
    from annotation.pull import PullConfig, pull as run

    click.echo(run(PullConfig(input=input, out=out, **opts)).summary())


@review.command("apply")
@config_option
@click.argument("pairs", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder: the corrected pairs (the input's files) and review/ with the change log.")
@click.option("-r", "--review", "reviews", multiple=True, type=click.Path(),
              help="A `toolkit review pull` output folder; repeat for several (applied in order).")
@click.option("--allow-missing", is_flag=True, help="Skip review folders that do not exist yet (a pipeline run before the round); with none, the pairs pass unchanged.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def apply_cmd(pairs, out, **opts):
    """Write the next version of the pairs with reviewers' corrections (a review round).

    PAIRS is what the reviewed data was made from (ingest, split or retrieve output, or an
    earlier `review apply`: rounds accumulate). Corrected grades replace `grade` (the original
    stays in `grade_before_review`; `review_round` says which round changed a row); pairs
    reviewers found unjudgeable (kinds hard and errors, accept = no) are left out. Pass the
    output as --gold to make-prefs, label-difficulty and `train sft` to rebuild what the old
    grades made, or as the pairs of the next stages.

    \b
    Examples:
      toolkit review apply out/demo/retrieved -r out/review/hard-reviewed -o out/demo/pairs-r1
      toolkit label-difficulty out/demo/rollouts --gold out/demo/pairs-r1 -o out/demo/difficulty-r1
      toolkit review apply out/demo/pairs-r1 -r out/review/round2 -o out/demo/pairs-r2
    """
    from annotation.apply import ApplyConfig, apply
    from toolkit.core.errors import UserError

    if not pairs or not out:
        raise UserError("pass the pairs and -o: `toolkit review apply out/demo/retrieved -r out/review/hard-reviewed -o out/demo/pairs-r1`")
    click.echo(apply(ApplyConfig(pairs=pairs, out=out, **opts)).summary())


COMMANDS = [review]
