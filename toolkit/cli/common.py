"""Shared CLI plumbing: `--config file.yaml` with flag overrides, one-line errors, logging."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from toolkit.errors import UserError


class ToolkitError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    import yaml

    path = Path(value)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ToolkitError(f"{path}:{where} invalid YAML ({getattr(e, 'problem', e)}); fix the file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ToolkitError(f"{path}: a config file must be a mapping of option names to values; got a {type(data).__name__}")
    allowed = {p.name: p for p in ctx.command.params if p.name and p.expose_value}
    norm = {}
    for key, val in data.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            raise ToolkitError(f"{path}: unknown field `{key}` for `toolkit {ctx.info_name}`; allowed: {', '.join(sorted(allowed))}")
        p = allowed[name]
        if getattr(p, "multiple", False) or getattr(p, "nargs", 1) == -1:
            val = val if isinstance(val, list) else [val]
        norm[name] = val
    ctx.default_map = {**(ctx.default_map or {}), **norm}


def config_option(f):
    """`--config FILE.yaml`: option values from a YAML file; flags given on the command line win."""
    return click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        help="YAML file of option values (keys are the option names, `-` or `_`, e.g. `out: out/x` or `max_steps: 20`); command-line flags override it.",
    )(f)


def setup_logging(verbose: int, quiet: int) -> None:
    level = logging.WARNING - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(logging.DEBUG, min(level, logging.CRITICAL)), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def run_stage(fn, *args, **kwargs):
    """Call a stage; a UserError becomes a one-line message and a non-zero exit."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        raise ToolkitError(str(e)) from None
