"""Rollouts commands: `toolkit passk`, `toolkit make-prefs`, `toolkit label-difficulty`.

Each reads a rollouts folder (rollouts.parquet + prompts.parquet + manifest.json, as written by
`toolkit sample`).
"""

from __future__ import annotations

import click

from toolkit.cli.common import config_option
from toolkit.cli.options import alias_option, config_from, options_from
from toolkit.difficulty import LabelDifficultyConfig
from toolkit.passk import PasskConfig
from toolkit.preferences import MakePrefsConfig

BACKEND_CHOICES = ["transformers", "vllm", "openai"]


@click.command()
@config_option
@click.argument("rollouts", required=False, type=click.Path())
@options_from(PasskConfig, skip=("rollouts",))
def passk(rollouts, **kw):
    """pass@k for k = 1..N over a rollouts folder, overall and per gold grade.

    The unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k), averaged over
    pairs with at least k samples; unparseable samples count as wrong. The gap between
    pass@1 and pass@N is the headroom preference training can recover (TaoSR1: 67.4% -> 81.7%).

    \b
    Examples:
      toolkit passk out/demo/rollouts
      toolkit passk out/demo/rollouts -o out/demo/passk
    """
    from pathlib import Path

    from toolkit.core.errors import UserError
    from toolkit.core.stagefolder.files import PASSK_FILES
    from toolkit.passk import passk as run

    if not rollouts:
        raise UserError("pass a rollouts folder: `toolkit passk out/rollouts -o out/passk`")
    cfg = config_from(PasskConfig, kw, rollouts=rollouts)
    result = run(cfg)
    if result.report is not None:
        click.echo(result.report.markdown)
    elif result.skipped:
        click.echo((Path(cfg.out) / PASSK_FILES[0]).read_text(encoding="utf-8").rstrip())
    click.echo(result.summary())


@click.command("make-prefs")
@config_option
@click.argument("rollouts", required=False, type=click.Path())
@options_from(MakePrefsConfig, "out", "pairs_per_prompt", "reject", "unparseable", "dedupe", "balance", "seed",
              skip=("rollouts", "teacher_id"))  # teacher_id: named by the teacher flags below
# deprecated: -k means rules per pair (gen-cot, sample, score, serve, retrieve)
@alias_option("-k", "pairs_per_prompt")
# CLI-only: the teacher (toolkit.teacher.BackendTeacher) that writes the chosen answers of all-wrong groups
@click.option("--no-teacher", is_flag=True,
              help="Drop all-wrong groups (counted) instead of asking a teacher for the chosen answer.")
@click.option("--teacher-backend", type=click.Choice(BACKEND_CHOICES), default="openai", show_default=True,
              help="Generation backend of the teacher.")
@click.option("--teacher-model", help="Teacher model (a folder or hub id; for openai the served model name).")
@click.option("--teacher-base-url",
              help="[openai] base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")
@click.option("--teacher-mode", type=click.Choice(("guided", "free")), default="guided", show_default=True,
              help="guided: the five step headers are written into the answer and the teacher fills each "
                   "(small local teachers follow the format that way, as in gen-cot); free: one generation "
                   "(capable teachers).")
@click.option("--teacher-max-tokens", default=768, show_default=True, type=int,
              help="[free] token limit of a teacher answer.")
@click.option("--teacher-step-tokens", default=48, show_default=True, type=int,
              help="[guided] token budget per step; an answer with a step cut there is dropped.")
@options_from(MakePrefsConfig, "teacher_batch_size", "gold", "part_rows", "force")
def make_prefs(rollouts, no_teacher, teacher_backend, teacher_model, teacher_base_url, teacher_mode,
               teacher_max_tokens, teacher_step_tokens, **kw):
    """Build DPO preference pairs from pass@N rollouts, as TaoSR1 does.

    Mixed groups: chosen = an own correct sample, rejected = an own wrong one. All-wrong
    groups: chosen = a teacher answer written for the gold grade (label first), rejected =
    an own wrong sample; --no-teacher drops them. All-correct groups give no pair. Writes
    TRL's conversational prompt/chosen/rejected columns plus provenance (pair_id,
    chosen_source self|teacher, chosen_grade, rejected_grade, pass_rate, sample indices)
    and counts every drop reason in manifest.json. Teacher answers are kept in
    teacher_answers.parquet and reused on rerun with the same teacher.

    \b
    Examples:
      toolkit make-prefs out/demo/rollouts -o out/demo/prefs --no-teacher
      toolkit make-prefs out/rollouts -o out/prefs -p 2 --reject random --seed 1 \\
          --teacher-backend openai --teacher-base-url http://127.0.0.1:8000/v1 --teacher-model teacher \\
          --teacher-mode free
    """
    from toolkit.core.errors import UserError
    from toolkit.preferences import make_preferences
    from toolkit.teacher import BackendTeacher

    if not rollouts or not kw["out"]:
        raise UserError("pass a rollouts folder and an output folder: `toolkit make-prefs out/rollouts -o out/prefs`")
    teacher = BackendTeacher(teacher_backend, teacher_model, teacher_base_url, teacher_max_tokens, rollouts,
                             mode=teacher_mode, step_tokens=teacher_step_tokens)
    cfg = config_from(MakePrefsConfig, kw, rollouts=rollouts, teacher_id=None if no_teacher else teacher.id)
    try:
        result = make_preferences(cfg, teacher=None if no_teacher else teacher)
    finally:
        teacher.close()
    click.echo(result.summary())


@click.command("label-difficulty")
@config_option
@click.argument("rollouts", required=False, type=click.Path())
@options_from(LabelDifficultyConfig, skip=("rollouts",))
def label_difficulty(rollouts, **kw):
    """Difficulty labels from pass rates, and the GRPO training set.

    Every pair gets n_samples, n_correct, pass_rate and a difficulty bucket
    (difficulty.parquet). The GRPO set (grpo.parquet: prompt, grade, gold_label, pair_id,
    pass_rate, ...) keeps pairs with 0 < n_correct < gamma * G, then (with --balance) the
    same count per gold grade; the coefficient of variation of the grade counts before and
    after balancing is printed and recorded in manifest.json.

    \b
    Examples:
      toolkit label-difficulty out/demo/rollouts -o out/demo/difficulty
      toolkit label-difficulty out/rollouts -o out/difficulty --gamma 1 --no-balance
    """
    from toolkit.difficulty import label_difficulty as run
    from toolkit.core.errors import UserError

    if not rollouts or not kw["out"]:
        raise UserError("pass a rollouts folder and an output folder: "
                        "`toolkit label-difficulty out/rollouts -o out/difficulty`")
    result = run(config_from(LabelDifficultyConfig, kw, rollouts=rollouts))
    click.echo(result.summary())


COMMANDS = [passk, make_prefs, label_difficulty]
