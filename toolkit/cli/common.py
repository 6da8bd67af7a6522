"""Shared CLI plumbing: `--config file.yaml` with flag overrides, one-line errors, logging."""

from __future__ import annotations

from pathlib import Path

import click



class ToolkitError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def read_config_text(path: Path) -> str:
    """The text of a --config file; a missing, unreadable or non-file path is a one-line error."""
    if not path.exists():
        raise ToolkitError(f"{path}: no such file; check the path given to --config (a YAML file of option values)")
    if path.is_dir():
        raise ToolkitError(f"{path}: is a folder; --config takes a YAML file of option values")
    try:
        return path.read_text(encoding="utf-8")
    except PermissionError:
        raise ToolkitError(f"{path}: cannot read the config file (permission denied); check its permissions") from None
    except UnicodeDecodeError as e:
        raise ToolkitError(f"{path}: the config file is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ToolkitError(f"{path}: cannot read the config file ({e.strerror or type(e).__name__})") from None


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    import yaml

    path = Path(value)
    try:
        data = yaml.safe_load(read_config_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ToolkitError(f"{path}:{where} invalid YAML ({getattr(e, 'problem', e)}); fix the file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ToolkitError(f"{path}: a config file must be a mapping of option names to values; "
                           f"got a {type(data).__name__}")
    allowed = {p.name: p for p in ctx.command.params if p.name and p.expose_value}
    norm = {}
    for key, val in data.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            raise ToolkitError(f"{path}: unknown field `{key}` for `toolkit {ctx.info_name}`; "
                               f"allowed: {', '.join(sorted(allowed))}")
        p = allowed[name]
        if getattr(p, "multiple", False) or getattr(p, "nargs", 1) == -1:
            val = val if isinstance(val, list) else [val]
        norm[name] = val
    ctx.default_map = {**(ctx.default_map or {}), **norm}


def config_option(f):
    """`--config FILE.yaml`: option values from a YAML file; flags given on the command line win."""
    return click.option(
        "--config",
        type=click.Path(),  # checked in _load_config: a bad path is a one-line error, not click's usage text
        is_eager=True,
        expose_value=False,
        metavar="FILE",
        callback=_load_config,
        help="YAML file of option values (keys are the option names, `-` or `_`, "
             "e.g. `out: out/x` or `max_steps: 20`); command-line flags override it.",
    )(f)


VERBOSE_HELP = ("More log output: the toolkit's info and the libraries' warnings "
                "(-vv: debug, library info; -vvv: library debug too).")
QUIET_HELP = "Less log output: warnings and progress bars off."
VERBOSITY = "toolkit.verbosity"  # ctx.meta key (shared by nested contexts): the -v/-q counts given so far


def _more_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if not value:
        return
    counts = ctx.meta.setdefault(VERBOSITY, {"verbose": 0, "quiet": 0})
    counts[param.name] += value
    setup_logging(counts["verbose"], counts["quiet"])


def add_verbosity_options(cmd: click.Command) -> None:
    """`-v`/`-q` after the stage name too (`toolkit sample ... -v`): added to the counts given before it."""
    for decls, help_text in ((("-v", "--verbose"), VERBOSE_HELP), (("-q", "--quiet"), QUIET_HELP)):
        cmd.params.append(click.Option(decls, count=True, expose_value=False, is_eager=True, callback=_more_verbosity,
                                       help=help_text))


def setup_logging(verbose: int, quiet: int) -> None:
    """Log levels from -v/-q: the toolkit's own at WARNING (-v INFO, -vv DEBUG, -q ERROR); other libraries one
    step quieter (their warnings and Python warnings show with -v), their secondary progress bars only with
    -v on a terminal. Imports no library: see toolkit.core.progress."""
    from toolkit.core.progress import configure

    configure(verbose, quiet)

