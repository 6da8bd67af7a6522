"""Whole-pipeline commands: `toolkit run pipeline.yaml`, `toolkit push`."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option


@click.command("run")
@click.argument("pipeline", type=click.Path())
@click.option("--redo", multiple=True, help="Run this stage again even if it is up to date (repeatable); later stages follow.")
@click.option("--list", "list_only", is_flag=True, help="Print the stages and their commands, run nothing.")
def run_cmd(pipeline, redo, list_only):
    """Run a pipeline file: every stage in order, skipping those whose inputs and config are unchanged.

    Each stage is a toolkit command writing <out>/<stage name>; `{name}` in a stage's
    arguments or options is an earlier stage's folder. After a crash or an edit, a rerun
    redoes only the stages that changed and the stages after them. Ends with a table of
    what ran, what was skipped, and where each dataset was written.

    \b
    Example:
      toolkit run demo/pipeline.yaml
    """
    from toolkit.pipeline import Pipeline, run_pipeline, summary_table

    pipe = Pipeline.load(pipeline)
    if list_only:
        for st in pipe.stages:
            click.echo(f"{st.name:18s} toolkit {' '.join(pipe.argv(st))}")
        return
    outcomes = run_pipeline(pipe, only=list(redo), echo=click.echo)
    click.echo("")
    click.echo(summary_table(outcomes))
    ran = sum(o.status == "ran" for o in outcomes)
    click.echo(f"run: {len(outcomes)} stages, {ran} ran, {len(outcomes) - ran} up to date -> {pipe.out}")


@click.command("push")
@config_option
@click.argument("folder", required=False, type=click.Path())
@click.option("--repo", "repo_id", help="Hub dataset repository, owner/name.")
@click.option("--public", is_flag=True, help="Make the repository public (default: private).")
@click.option("--license", "license_", help="License of the source data (SPDX id, e.g. apache-2.0, mit; or other).")
@click.option("--license-note", help="One paragraph on the source data and its terms, for the card.")
@click.option("--token-env", default="HF_TOKEN", show_default=True, help="Environment variable holding the Hub token (else your `hf auth login`).")
@click.option("--dry-run", is_flag=True, help="Build the upload folder (Parquet + README card) and stop.")
@click.option("-o", "--out", "build_dir", type=click.Path(),
              help="Where to build the upload folder (default: FOLDER/.hub-STAGE-ID); replaced only if push built it.")
@click.option("--revision", help="Branch to commit to (created from main when missing); default: main.")
@click.option("--tag", help="Tag the new commit (e.g. round-3 after a review round, v1): consumers pin load_dataset(repo, revision=TAG).")
@click.option("--create-pr", is_flag=True, help="Open a pull request with the commit instead of committing (for teams that review data changes).")
@click.option("--eval", "eval_dir", type=click.Path(), help="[model] A `toolkit eval` folder: its metrics go into the model card.")
@click.option("--tiers", "tiers_dir", type=click.Path(), help="[model] A `toolkit tier fit` folder: its CumPT β goes into the model card.")
@click.option("--data-repo", "data_repos", multiple=True, help="[model] A Hub dataset it was trained on, owner/name[@revision] (repeatable).")
def push_cmd(folder, repo_id, public, license_, license_note, token_env, dry_run, build_dir, revision, tag, create_pr, eval_dir, tiers_dir, data_repos):
    """Publish a stage's dataset to the Hugging Face Hub with a generated dataset card.

    Uploads the stage's Parquet files (one per split) and a README.md card with valid YAML
    metadata: what produced the data (stage, config, models), the source data and its
    license, row counts, grade distribution and drop reasons. Private unless --public.

    \b
    Example:
      toolkit push out/demo/cot --repo me/demo-cot --license other --dry-run
    """
    from toolkit.core.errors import UserError
    from toolkit.hub import PushConfig, push

    if not folder or not repo_id:
        raise UserError("pass a stage folder and --repo owner/name: `toolkit push out/demo/cot --repo me/demo-cot`")
    cfg = PushConfig(folder=folder, repo_id=repo_id, private=not public, license=license_, source_license_note=license_note,
                     token_env=token_env, dry_run=dry_run, build_dir=build_dir, revision=revision, tag=tag, create_pr=create_pr,
                     eval_dir=eval_dir, tiers_dir=tiers_dir, data_repos=list(data_repos))
    built, up = push(cfg)
    where = f"{repo_id}{'@' + revision if revision else ''} ({'private' if cfg.private else 'public'})"
    if up is None:
        click.echo(f"push: dry run, upload folder ready at {built} ({'private' if cfg.private else 'public'} {repo_id})")
    elif not up.changed:
        click.echo(f"push: {where} already holds exactly these files; no new commit{f', tagged {tag}' if tag else ''}: {up.url}")
    else:
        click.echo(f"push: uploaded {folder} to {where}{f', tagged {tag}' if tag else ''}: {up.url}")


COMMANDS = [run_cmd, push_cmd]
