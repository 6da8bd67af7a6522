"""The `toolkit` command: one subcommand per stage.

Run `toolkit STAGE --help` for each stage's options. Every stage takes
`--config file.yaml` (its option names as keys) and flags that override it.
"""

from __future__ import annotations

import click

from toolkit import __version__
from toolkit.cli.common import QUIET_HELP, VERBOSE_HELP, VERBOSITY, ToolkitError, add_verbosity_options, setup_logging
from toolkit.core.errors import UserError
from toolkit.core.stagefolder.aliases import in_text


_depth = 0  # toolkit commands running in this process (`toolkit run` invokes each stage in-process)


class ToolkitGroup(click.Group):
    def invoke(self, ctx):
        global _depth
        _depth += 1
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise ToolkitError(in_text(str(e))) from None  # a staging or mirror folder named by its URL
        # a bad flag or value: one line like every other mistake, not click's usage block
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "toolkit"
            # one line (click lists a choice's values on lines of their own)
            msg = " ".join(e.format_message().split()).rstrip(".")
            raise ToolkitError(f"{msg}{' —' if msg.endswith('?') else ';'} see `{where} --help`") from None
        finally:
            _depth -= 1


@click.group(cls=ToolkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="toolkit")
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)
@click.option("-q", "--quiet", count=True, help=QUIET_HELP)
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """TaoSR1 relevance toolkit: from labelled query-item pairs to a reasoning relevance judge.

    Stages read and write Parquet folders (Hugging Face `datasets` compatible), each
    with its resolved config.yaml and a manifest.json of inputs, counts and version.
    """
    # a stage's own -v/-q add to these (common.add_verbosity_options)
    ctx.meta[VERBOSITY] = {"verbose": verbose, "quiet": quiet}
    if _depth > 1 and not (verbose or quiet):
        return  # a stage of `toolkit run`: keeps the run's -v/-q
    setup_logging(verbose, quiet)


def _register() -> None:
    """Each stage's commands live in their own module under toolkit/cli/."""
    import importlib

    for name in ("data", "index", "generate", "evaluate", "rollouts", "review", "train", "pipeline", "serve"):
        module = importlib.import_module(f"toolkit.cli.{name}")
        for cmd in module.COMMANDS:
            cli.add_command(cmd)
            for leaf in _leaves(cmd):
                add_verbosity_options(leaf)


def _leaves(cmd: click.Command) -> list[click.Command]:
    if isinstance(cmd, click.Group):
        return [leaf for sub in cmd.commands.values() for leaf in _leaves(sub)]
    return [cmd]


_register()


def main() -> None:
    cli(prog_name="toolkit")
