"""`opt(...)`: a config dataclass field that also declares its command-line option, once.

    @dataclass
    class SampleConfig(StageConfig):
        n: int = opt(4, help="Rollouts per pair (N of pass@N; G of GRPO).", flags=("-n", "--samples"),
                     show_default=True)

The help text, the flags and any extra option settings go into the field's `metadata` (under
`CLI`); the field keeps its Python default and type, and `dataclasses.asdict`, equality and the
manifest hash do not see the metadata. toolkit.cli.options builds the click options from it
(`options_from`) and the config from the parsed flags (`config_from`). Nothing here imports click:
the settings are plain values.

Keys the option builder understands (all optional but `help`):
  help           the option's help text
  flags          the option's spellings, e.g. ("-n", "--samples") or ("--dedupe/--no-dedupe",);
                 default: --FIELD-NAME (and --x/--no-x for a bool field that defaults to True)
  param          the click parameter name (the key of a `--config` YAML file); default: the field name
  type           int, float, str, or "path" (a file or folder); default: from the field's annotation
  choices        the allowed values, in the order --help lists them
  negate         a bool field set by an off-switch: the flag (e.g. --no-plots) stores False
  anything else  passed to click.option unchanged: show_default, multiple, metavar, required, envvar ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING
from typing import Any

CLI = "toolkit.cli"  # the metadata key


def opt(default: Any = MISSING, *, help: str, flags: tuple[str, ...] = (), default_factory: Any = MISSING,
        **cli: Any) -> Any:
    """A dataclass field with its command-line option's help, flags and settings in its metadata."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={CLI: {"help": help, "flags": tuple(flags), **cli}})


def cli_spec(f: dataclasses.Field) -> dict | None:
    """The option settings declared with `opt` on a field, or None (a field with no option)."""
    spec = f.metadata.get(CLI)
    return dict(spec) if spec is not None else None
