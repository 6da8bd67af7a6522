"""Rollouts commands: `toolkit passk`, `toolkit make-prefs`, `toolkit label-difficulty`.

Each reads a rollouts folder (rollouts.parquet + prompts.parquet + manifest.json, as written by
`toolkit sample`).
"""

from __future__ import annotations

import click

from toolkit.cli.common import config_option

BACKEND_CHOICES = ["transformers", "vllm", "openai"]


@click.command()
@config_option
@click.argument("rollouts", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder (gets passk.md, passk.json, passk.csv, passk.png). Without it the table is only printed.")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Also draw passk.png (needs matplotlib: pip install 'taosr-toolkit[plots]').")
@click.option("--scale", help="Grade scale naming the grades (default: the one recorded in the folder's manifest).")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def passk(rollouts, out, plot, scale, force):
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
    from toolkit.passk import PasskConfig, passk as run

    if not rollouts:
        raise UserError("pass a rollouts folder: `toolkit passk out/rollouts -o out/passk`")
    result = run(PasskConfig(rollouts=rollouts, out=out, plot=plot, scale=scale, force=force))
    if result.report is not None:
        click.echo(result.report.markdown)
    elif result.skipped:
        click.echo((Path(out) / PASSK_FILES[0]).read_text(encoding="utf-8").rstrip())
    click.echo(result.summary())


@click.command("make-prefs")
@config_option
@click.argument("rollouts", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder (gets preferences.parquet, teacher_answers.parquet).")
@click.option("-k", "--pairs-per-prompt", default=1, show_default=True, type=int, help="Up to this many preference pairs per query-item pair.")
@click.option("--reject", type=click.Choice(["farthest", "nearest", "random"]), default="farthest", show_default=True,
              help="Which wrong sample is rejected: the grade farthest from gold, the nearest (3-vs-4 confusions; ties: lowest sample index) "
                   "or a seeded random one.")
@click.option("--unparseable", type=click.Choice(["fallback", "never", "always"]), default="fallback", show_default=True,
              help="Unparseable samples (always wrong) as rejected: after all parseable wrong ones, never, or first.")
@click.option("--dedupe/--no-dedupe", default=True, show_default=True, help="Identical texts within a group count once.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of --reject random.")
@click.option("--no-teacher", is_flag=True, help="Drop all-wrong groups (counted) instead of asking a teacher for the chosen answer.")
@click.option("--teacher-backend", type=click.Choice(BACKEND_CHOICES), default="openai", show_default=True, help="Generation backend of the teacher.")
@click.option("--teacher-model", help="Teacher model (a folder or hub id; for openai the served model name).")
@click.option("--teacher-base-url", help="[openai] base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")
@click.option("--teacher-max-tokens", default=768, show_default=True, type=int, help="Token limit of a teacher answer.")
@click.option("--teacher-batch-size", default=64, show_default=True, type=int, help="Rows per teacher call.")
@click.option("--gold", type=click.Path(), help="Corrected pairs from `toolkit review apply`: rollouts are re-marked correct against their grades and pairs they exclude are left out.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def make_prefs(rollouts, out, pairs_per_prompt, reject, unparseable, dedupe, seed, no_teacher, teacher_backend, teacher_model,
               teacher_base_url, teacher_max_tokens, teacher_batch_size, gold, force):
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
      toolkit make-prefs out/rollouts -o out/prefs -k 2 --reject random --seed 1 \\
          --teacher-backend openai --teacher-base-url http://127.0.0.1:8000/v1 --teacher-model teacher
    """
    from toolkit.core.errors import UserError
    from toolkit.preferences import MakePrefsConfig, make_preferences
    from toolkit.teacher import BackendTeacher

    if not rollouts or not out:
        raise UserError("pass a rollouts folder and an output folder: `toolkit make-prefs out/rollouts -o out/prefs`")
    teacher = BackendTeacher(teacher_backend, teacher_model, teacher_base_url, teacher_max_tokens, rollouts)
    cfg = MakePrefsConfig(
        rollouts=rollouts, out=out, pairs_per_prompt=pairs_per_prompt, reject=reject, unparseable=unparseable, dedupe=dedupe,
        seed=seed, teacher_id=None if no_teacher else teacher.id, teacher_batch_size=teacher_batch_size, gold=gold, force=force,
    )
    try:
        result = make_preferences(cfg, teacher=None if no_teacher else teacher)
    finally:
        teacher.close()
    click.echo(result.summary())


@click.command("label-difficulty")
@config_option
@click.argument("rollouts", required=False, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Output folder (gets difficulty.parquet and grpo.parquet).")
@click.option("--gamma", default=0.9, show_default=True, type=float, help="GRPO keeps pairs with 0 < n_correct < gamma * G (TaoSR1's team: pass-rate window [0.01, 0.9]).")
@click.option("--buckets", default="unsolved=0,hard=0.4,medium=0.8,easy=1", show_default=True,
              help="Difficulty buckets: names with inclusive upper bounds of the pass rate.")
@click.option("--balance/--no-balance", default=True, show_default=True, help="Downsample the GRPO set to equal counts per gold grade.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the class-balanced downsampling.")
@click.option("--gold", type=click.Path(), help="Corrected pairs from `toolkit review apply`: rollouts are re-marked correct against their grades and pairs they exclude are left out.")
@click.option("--force", is_flag=True, help="Redo even when the output is up to date.")
def label_difficulty(rollouts, out, gamma, buckets, balance, seed, gold, force):
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
    from toolkit.difficulty import LabelDifficultyConfig, label_difficulty as run
    from toolkit.core.errors import UserError

    if not rollouts or not out:
        raise UserError("pass a rollouts folder and an output folder: `toolkit label-difficulty out/rollouts -o out/difficulty`")
    result = run(LabelDifficultyConfig(rollouts=rollouts, out=out, gamma=gamma, buckets=buckets, balance=balance, seed=seed, gold=gold, force=force))
    click.echo(result.summary())


COMMANDS = [passk, make_prefs, label_difficulty]
