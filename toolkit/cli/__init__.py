"""The `toolkit` command: one subcommand per stage.

Run `toolkit STAGE --help` for each stage's options. Every stage takes
`--config file.yaml` (its option names as keys) and flags that override it.
"""

from __future__ import annotations

import click

from toolkit import __version__
from toolkit.cli.common import ToolkitError, setup_logging
from toolkit.errors import UserError


class ToolkitGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise ToolkitError(str(e)) from None


@click.group(cls=ToolkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="toolkit")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output (warnings off).")
def cli(verbose: int, quiet: int) -> None:
    """TaoSR1 relevance toolkit: from labelled query-item pairs to a reasoning relevance judge.

    Stages read and write Parquet folders (Hugging Face `datasets` compatible), each
    with its resolved config.yaml and a manifest.json of inputs, counts and version.
    """
    setup_logging(verbose, quiet)


def _register() -> None:
    """Each stage's commands live in their own module under toolkit/cli/."""
    import importlib

    for name in ("data", "index", "generate", "evaluate", "rollouts", "review", "train", "pipeline", "serve"):
        module = importlib.import_module(f"toolkit.cli.{name}")
        for cmd in module.COMMANDS:
            cli.add_command(cmd)


_register()


def main() -> None:
    cli(prog_name="toolkit")
