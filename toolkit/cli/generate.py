"""Generation commands: `toolkit gen-cot` (teacher rationales -> SFT data)."""

from __future__ import annotations

import click

from toolkit.atomize import AtomizeConfig
from toolkit.cli.common import config_option
from toolkit.cli.options import alias_option, config_from, options_from
from toolkit.cot import GenCotConfig
from toolkit.cot_filters import FilterConfig
from toolkit.generation.base import BackendConfig
from toolkit.sample import SampleConfig
from toolkit.scoring import ScoreConfig

# Options that pick and configure a generation backend (shared by generating stages): BackendConfig's fields.
backend_options = options_from(BackendConfig, "kind", "model", "batch_size", "dtype", "base_url", "api_key_env",
                               "concurrency", "n_per_request", "timeout_s", "max_retries", "enforce_eager", ...,
                               skip=("extra",))  # extra: set from Python only


def make_backend_config(kw: dict) -> BackendConfig:
    return config_from(BackendConfig, kw)


@click.command("gen-cot")
@config_option
@click.argument("pairs", required=False, type=click.Path())
# force: after the filters; the teacher's template: Python only
@options_from(GenCotConfig, "out", "split", "index", "rules_k", ...,
              skip=("pairs", "backend", "filters", "force", "teacher_template"))
@options_from(FilterConfig, "min_chars", "max_chars",
              skip=("min_steps", "max_repeat_ratio", "near_duplicate", "max_prompt_copy"))  # Python only
@options_from(GenCotConfig, "force")
@backend_options
def gen_cot(pairs, **kw):
    """Generate teacher rationales and keep those that agree with the gold grade (TaoSR1 stage 1).

    For each pair: retrieve rules, prompt the teacher with the pair, the rules and (by
    default) the gold grade, sample k five-step rationales (query understanding, item
    understanding, category match, attribute match, decision), parse, and filter: format,
    grade agreement, length, repetition, copying the prompt, near-duplicates. Kept rows
    become label-first SFT data in TRL's prompt/completion format; every drop is in
    rejects.parquet with its reason. Rerunning skips finished shards.

    \b
    Example:
      toolkit gen-cot out/demo/retrieved --index out/demo/index -o out/demo/cot
    """
    from toolkit.core.errors import UserError
    from toolkit.cot import gen_cot as run

    if not pairs or not kw["out"]:
        raise UserError("pass the pairs and an output folder: `toolkit gen-cot out/splits -o out/cot`")
    cfg = config_from(GenCotConfig, kw, pairs=pairs, split=kw.pop("split") or None, backend=make_backend_config(kw),
                      filters=config_from(FilterConfig, kw))
    click.echo(run(cfg).summary())


@click.command("sample")
@config_option
@click.argument("pairs", required=False, type=click.Path())
@options_from(SampleConfig, "out", "split", "index", "rules_k", ..., skip=("pairs", "backend"))
# the old long spelling of -n/--samples (pipeline files write `n: 4` as --n 4)
@alias_option("--n", "n", deprecated=False)
@backend_options
def sample_cmd(pairs, **kw):
    """Sample N answers per pair from a policy model and grade them against gold (pass@N).

    Stores per rollout the raw text, parse status, predicted grade, correctness and the
    first-token grade probabilities; prints and writes the pass@k table (k = 1..N) and plot.
    The output feeds `toolkit make-prefs` and `toolkit label-difficulty`. Resumable by shard.

    \b
    Example:
      toolkit sample out/demo/retrieved --model out/demo/sft --index out/demo/index -n 4 -o out/demo/rollouts
    """
    from toolkit.core.errors import UserError
    from toolkit.sample import sample

    if not pairs or not kw["out"]:
        raise UserError("pass the pairs and an output folder: `toolkit sample out/splits -o out/rollouts`")
    cfg = config_from(SampleConfig, kw, pairs=pairs, split=kw.pop("split") or None, backend=make_backend_config(kw))
    result = sample(cfg)
    if result.passk is not None:
        click.echo(result.passk.markdown)
    click.echo(result.summary())


@click.command("score")
@config_option
@click.argument("pairs", required=False, type=click.Path())
@options_from(ScoreConfig, "out", "split", "index", "rules_k", ..., skip=("pairs", "backend"))
@backend_options
def score_cmd(pairs, **kw):
    """Score pairs with a model: first-token grade probabilities (TaoSR1's serving path).

    Writes predictions.parquet (pair_id, grade, split, grade_probs best grade first,
    pred_grade = argmax, and text in generate mode) for `toolkit eval` and `toolkit tier`.

    \b
    Example:
      toolkit score out/demo/retrieved --model out/demo/grpo --index out/demo/index -o out/demo/scores
      toolkit eval --predictions out/demo/scores --split test -o out/demo/eval
    """
    from toolkit.core.errors import UserError
    from toolkit.scoring import score

    if not pairs or not kw["out"]:
        raise UserError("pass the pairs and an output folder: `toolkit score out/splits --model M -o out/scores`")
    cfg = config_from(ScoreConfig, kw, pairs=pairs, backend=make_backend_config(kw))
    click.echo(score(cfg).summary())


@click.command("atomize")
@config_option
@click.argument("guideline", required=False, type=click.Path())
# rule lengths: Python only
@options_from(AtomizeConfig, skip=("guideline", "backend", "min_rule_chars", "max_rule_chars"))
@backend_options
def atomize_cmd(guideline, **kw):
    """Split a prose guideline into candidate atomic rules with an LLM, for review.

    The guideline (.txt or .md) is cut into passages at headings and paragraphs; the LLM
    rewrites each passage as one self-contained rule per line. rules.md lists the candidates
    in the rules format (`## Section`, `- [A01] rule`) that `toolkit build-index` reads once a
    person has reviewed them; rules.jsonl records each rule's source lines and passage.

    \b
    Example:
      toolkit atomize ../shared/data/homedepot/relevance_instructions.txt -o out/atomized
    """
    from toolkit.atomize import atomize
    from toolkit.core.errors import UserError

    if not guideline or not kw["out"]:
        raise UserError("pass a guideline file and an output folder: `toolkit atomize guideline.txt -o out/atomized`")
    cfg = config_from(AtomizeConfig, kw, guideline=guideline, backend=make_backend_config(kw))
    click.echo(atomize(cfg).summary())


COMMANDS = [gen_cot, sample_cmd, score_cmd, atomize_cmd]
