"""Review commands: `toolkit review push` and `toolkit review pull` (human review rounds in Argilla)."""

from __future__ import annotations

import click

from annotation.apply import ApplyConfig
from annotation.pull import PullConfig
from annotation.push import PushConfig
from annotation.select import SelectConfig
from toolkit.cli.common import config_option
from toolkit.cli.options import alias_option, config_from, options_from

# annotation.push.SERVER_OPTIONS, in --help's order
SERVER = ("kind", "scale", "dataset", "workspace", "api_url", "api_key", "timeout")
# deprecated: -k means rules per pair (gen-cot, sample, score, serve, retrieve)
KIND_ALIAS = alias_option("-k", "kind")


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
@options_from(PushConfig, *SERVER, "min_submitted", "pairs", "guidelines", ..., skip=("input",))
@KIND_ALIAS
def push(input, **kw):
    """Send a dataset to Argilla for review, one record per pair.

    Reviewers see the query, the item, the retrieved rules and the model's output, and
    answer: the correct grade (the model's grade is the suggestion, with its probability
    when known), whether to keep the row, a corrected answer (cot, prefs) and a comment.
    Metadata (pass rate, difficulty, source, model, grades) can be filtered on in the UI.
    Record ids are pair ids: pushing again updates records and keeps their answers.
    Kind errors pushes only the rows whose prediction differs from the gold grade.

    \b
    Examples:
      toolkit review push out/demo/cot --kind cot --pairs out/demo/pairs --dataset demo-cot \\
          --guidelines demo/guideline.md
      toolkit review push out/prefs --kind prefs --min-submitted 2 --limit 300
    """
    from annotation.push import push as run

    click.echo(run(config_from(PushConfig, kw, input=input)).summary())


@review.command("select")
@config_option
@click.argument("input", type=click.Path())
@options_from(SelectConfig, "out", "policy", "tiers", "beta", ..., skip=("input",))
def select_cmd(input, **kw):
    """Pick the records worth a reviewer's time, under a budget, from a scored or difficulty folder.

    Scores every row by the policy, takes the highest (ties broken by the seed), shared
    among the gold grades; writes them with the score that chose each one, for `review push`.

    \b
    Examples:
      toolkit review select out/demo/scores -o out/demo/review-uncertain --policy entropy --budget 20
      toolkit review select out/demo/difficulty -o out/demo/review-hard --policy hard --budget 10%
      toolkit review push out/demo/review-uncertain --kind errors --pairs out/demo/pairs
    """
    from annotation.select import select
    from toolkit.core.errors import UserError

    if not input or not kw["out"]:
        raise UserError("pass a scored or difficulty folder and -o: "
                        "`toolkit review select out/demo/scores -o out/demo/review-uncertain`")
    click.echo(select(config_from(SelectConfig, kw, input=input)).summary())


@review.command()
@config_option
@click.argument("input", type=click.Path())
@options_from(PullConfig, "out", *SERVER, ..., skip=("input",))
@KIND_ALIAS
def pull(input, **kw):
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
    from annotation.pull import pull as run

    click.echo(run(config_from(PullConfig, kw, input=input)).summary())


@review.command("apply")
@config_option
@click.argument("pairs", required=False, type=click.Path())
@options_from(ApplyConfig, skip=("pairs",))
def apply_cmd(pairs, **kw):
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
    from annotation.apply import apply
    from toolkit.core.errors import UserError

    if not pairs or not kw["out"]:
        raise UserError("pass the pairs and -o: "
                        "`toolkit review apply out/demo/retrieved -r out/review/hard-reviewed -o out/demo/pairs-r1`")
    click.echo(apply(config_from(ApplyConfig, kw, pairs=pairs)).summary())


COMMANDS = [review]
