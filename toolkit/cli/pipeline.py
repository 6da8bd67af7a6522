"""Whole-pipeline commands: `toolkit run pipeline.yaml`, `toolkit push`."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option
from toolkit.cli.options import config_from, options_from
from toolkit.hub import PushConfig


@click.command("run")
@click.argument("pipeline", type=click.Path())
@click.option("--redo", multiple=True,
              help="Run this stage again even if it is up to date (repeatable); later stages follow.")
@click.option("--list", "list_only", is_flag=True, help="Print the stages and their commands, run nothing.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the model stages (gen-cot, sample, score; retrieve and build-index's embedding) run: "
                   "here, or on a Ray cluster.")
@click.option("--ray-address", default="auto", show_default=True,
              help="[ray] the cluster: auto, HOST:PORT, or local (a private one for this run).")
def run_cmd(pipeline, redo, list_only, executor, ray_address):
    """Run a pipeline file: every stage in order, skipping those whose inputs and config are unchanged.

    Each stage is a toolkit command writing <out>/<stage name>; `{name}` in a stage's
    arguments or options is an earlier stage's folder. After a crash or an edit, a rerun
    redoes only the stages that changed and the stages after them whose inputs changed
    (a stage that wrote the same files again leaves them be). Ends with a table of
    what ran, what was skipped, and where each dataset was written.

    With --executor ray the model stages' shards run on a Ray cluster (one model per
    actor) and land in the same folders as a local run's; the trainers keep
    `accelerate launch` (docs/training.md).

    \b
    Examples:
      toolkit run demo/pipeline.yaml
      ray start --head && toolkit run demo/pipeline.yaml --executor ray
    """
    from toolkit.cli.runner import Pipeline, run_pipeline, summary_table

    pipe = Pipeline.load(pipeline)
    if list_only:
        for st in pipe.stages:
            click.echo(f"{st.name:18s} toolkit {' '.join(pipe.argv(st))}")
        return
    outcomes = run_pipeline(pipe, only=list(redo), echo=click.echo, executor=executor, ray_address=ray_address)
    click.echo("")
    click.echo(summary_table(outcomes))
    ran = sum(o.status == "ran" for o in outcomes)
    click.echo(f"run: {len(outcomes)} stages, {ran} ran, {len(outcomes) - ran} up to date -> {pipe.out}")


@click.command("push")
@config_option
@click.argument("folder", required=False, type=click.Path())
@options_from(PushConfig, "repo_id", "private", "license", "source_license_note", "token_env", "dry_run",
              "build_dir", ..., skip=("folder",))
def push_cmd(folder, **kw):
    """Publish a stage's dataset to the Hugging Face Hub with a generated dataset card.

    Uploads the stage's Parquet files (one per split) and a README.md card with valid YAML
    metadata: what produced the data (stage, config, models), the source data and its
    license, row counts, grade distribution and drop reasons. Private unless --public.

    \b
    Example:
      toolkit push out/demo/cot --repo me/demo-cot --license other --dry-run
    """
    from toolkit.core.errors import UserError
    from toolkit.hub import push

    if not folder or not kw["repo_id"]:
        raise UserError("pass a stage folder and --repo owner/name: `toolkit push out/demo/cot --repo me/demo-cot`")
    cfg = config_from(PushConfig, kw, folder=folder)
    built, up = push(cfg)
    repo_id, revision, tag = cfg.repo_id, cfg.revision, cfg.tag
    where = f"{repo_id}{'@' + revision if revision else ''} ({'private' if cfg.private else 'public'})"
    if up is None:
        click.echo(f"push: dry run, upload folder ready at {built} "
                   f"({'private' if cfg.private else 'public'} {repo_id})")
    elif not up.changed:
        click.echo(f"push: {where} already holds exactly these files; "
                   f"no new commit{f', tagged {tag}' if tag else ''}: {up.url}")
    else:
        click.echo(f"push: uploaded {folder} to {where}{f', tagged {tag}' if tag else ''}: {up.url}")


COMMANDS = [run_cmd, push_cmd]
