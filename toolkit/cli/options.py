"""Click options built from the config dataclasses (fields declared with toolkit.core.options.opt).

    @click.command("sample")
    @config_option
    @click.argument("pairs", required=False, type=click.Path())
    @options_from(SampleConfig, "out", "split", "index", "rules_k", ..., skip=("pairs", "backend"))
    @options_from(BackendConfig, ...)
    def sample_cmd(pairs, **kw):
        cfg = config_from(SampleConfig, kw, pairs=pairs, backend=config_from(BackendConfig, kw))

`options_from(cls, *names, skip=(), override=None, param="{}")` adds one option per field, in the
order given by `names` (`...` stands for every other field, in declaration order; no names: all
fields); `skip` names the fields it leaves to the command (positional arguments, nested configs,
fields a command fills itself). `override` changes one command's option: {field: {key: value}} with
the keys of `opt` plus `default`, for a CLI default that deliberately differs from the dataclass's.
`param` formats the parameter names (e.g. "{}_column"). Stack several for options interleaved with
hand-written ones. `config_from(cls, kwargs, **fixed)` pops those options' values from the command's
keyword arguments and builds the config; `fixed` fields win.

`alias_option` adds a hidden spelling of another option (old short flags; with a deprecation line).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import click

from toolkit.core.options import cli_spec

log = logging.getLogger("toolkit.cli")

SKIPPED = "__toolkit_skipped__"  # on a command's function: {config class: fields left to the command}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


class FieldOption(click.Option):
    """An option that stands for one field of a config dataclass."""

    def __init__(self, decls, *, config_cls: type, field_name: str, negate: bool = False, **kw):
        super().__init__(decls, **kw)
        self.config_cls, self.field_name, self.negate = config_cls, field_name, negate


def _annotation_type(f: dataclasses.Field) -> type | None:
    """int / float / bool / str from a field's annotation (`int | None` -> int); None for anything else."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    parts = {p.strip() for p in text.split("|")} - {"None"}
    return _TYPES.get(parts.pop()) if len(parts) == 1 else None


def _default(f: dataclasses.Field) -> Any:
    # a factory default (list, dict, config): the dataclass fills it
    return None if f.default is dataclasses.MISSING else f.default


def _option(cls: type, f: dataclasses.Field, spec: dict, param_format: str):
    spec = dict(spec)
    help_text = spec.pop("help")
    flags = tuple(spec.pop("flags", ()))
    negate = spec.pop("negate", False)
    choices = spec.pop("choices", None)
    kind = spec.pop("type", None)
    default = spec.pop("default", _default(f))
    param = spec.pop("param", None)
    pytype = _annotation_type(f)
    if negate:  # an off-switch: --no-plots sets plots=False
        if not flags:
            flags = ("--no-" + f.name.replace("_", "-"),)
        param = param or flags[-1].lstrip("-").replace("-", "_")
        spec.update(is_flag=True)
        default = False
    else:
        param = param or param_format.format(f.name)
        flags = flags or ("--" + param.replace("_", "-"),)
        if (pytype is bool or isinstance(default, bool)) and not any("/" in x for x in flags):
            if default:
                flags = tuple(f"{x}/--no-{x[2:]}" if x.startswith("--") else x for x in flags)
            else:
                spec.update(is_flag=True)
                default = False
    if choices is not None:
        spec["type"] = click.Choice(list(choices))
    elif kind == "path":
        spec["type"] = click.Path()
    elif kind is not None:
        spec["type"] = kind
    elif pytype in (int, float) and default is None:
        spec["type"] = pytype  # no default to infer it from
    # else click's "no default", as a hand-written option
    if default is not None and not (spec.get("is_flag") and default is False):
        spec["default"] = default
    return click.option(*flags, param, cls=FieldOption, config_cls=cls, field_name=f.name,
                        negate=negate, help=help_text, **spec)


def options_from(cls: type, *names: Any, skip: tuple[str, ...] = (), override: dict | None = None, param: str = "{}"):
    """A decorator adding the options of `cls`'s fields (see the module's docstring)."""
    # keyword-only fields (an inherited group such as core.executors.ExecutorOptions) come after the class's own
    fields = {f.name: f for f in sorted(dataclasses.fields(cls), key=lambda f: f.kw_only is True)}
    override = override or {}
    unknown = [n for n in (*names, *skip, *override) if n is not Ellipsis and n not in fields]
    if unknown:
        raise TypeError(f"options_from({cls.__name__}): no field(s) {', '.join(unknown)}")
    listed = [n for n in names if n is not Ellipsis]
    chosen: list[str] = []
    for n in names or (...,):
        # the other fields that declare an option (one without `opt` stays out: tests/test_cli_options.py finds it)
        if n is Ellipsis:
            chosen += [k for k, f in fields.items() if k not in listed and k not in skip and cli_spec(f) is not None]
        else:
            chosen.append(n)
    decorators = []
    for n in chosen:
        spec = cli_spec(fields[n])
        if spec is None and "help" not in override.get(n, {}):
            raise TypeError(f"options_from({cls.__name__}): field {n!r} declares no option "
                            "(use toolkit.core.options.opt)")
        decorators.append(_option(cls, fields[n], {**(spec or {}), **override.get(n, {})}, param))

    def decorate(f):
        getattr(f, SKIPPED, None) or setattr(f, SKIPPED, {})
        getattr(f, SKIPPED).setdefault(cls, set()).update(skip)
        for d in reversed(decorators):
            f = d(f)
        return f

    return decorate


def config_from(cls: type, kwargs: dict, *, command: click.Command | None = None, **fixed: Any):
    """`cls` built from the values of its options (popped from `kwargs`), then `fixed`."""
    command = command or click.get_current_context().command
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for p in command.params:
        if not (isinstance(p, FieldOption) and issubclass(cls, p.config_cls) and p.field_name in names
                and p.name in kwargs):
            continue
        value = kwargs.pop(p.name)
        if p.field_name in fixed:
            continue
        if p.negate:
            value = not value
        elif p.multiple:
            if not value:
                continue  # none given: the dataclass's default
            value = list(value)
        values[p.field_name] = value
    return cls(**values, **fixed)


def command_fields(command: click.Command) -> dict[type, tuple[set[str], set[str]]]:
    """{config class: (its fields with an option, its fields the command's options_from calls skip)} for each config
    class the command builds (the most derived one where options come from a class and its base, as in `train sft`)."""
    skipped: dict[type, set[str]] = getattr(command.callback, SKIPPED, {})
    with_option: dict[type, set[str]] = {}
    for p in command.params:
        if isinstance(p, FieldOption):
            with_option.setdefault(p.config_cls, set()).add(p.field_name)
    classes = set(skipped) | set(with_option)
    leaves = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
    return {leaf: ({n for c in leaf.__mro__ for n in with_option.get(c, ())},
                   {n for c in leaf.__mro__ for n in skipped.get(c, ())})
            for leaf in leaves}


# -- hidden aliases -------------------------------------------------------------------------------


class AliasOption(click.Option):
    """A hidden spelling of the option whose parameter is `target`: its value goes to that option
    (a flag given on the command line is processed before the options not given, so the target
    sees it as given); `deprecated`: log a one-line warning naming the new spelling."""

    def __init__(self, decls, *, target: str, deprecated: bool, **kw):
        super().__init__(decls, hidden=True, expose_value=False, **kw)
        self.target, self.deprecated = target, deprecated

    def handle_parse_result(self, ctx, opts, args):
        if opts.get(self.name) is not None:
            value = opts.pop(self.name)
            if self.deprecated:
                new = next((p for p in ctx.command.params if p.name == self.target), None)
                where = " ".join(c.info_name for c in _chain(ctx)[1:]) or ctx.info_name
                spelling = "/".join(new.opts) if new is not None else self.target
                log.warning("%s: %s is now %s; the old spelling still works for now", where, "/".join(self.opts),
                            spelling)
            opts.setdefault(self.target, value)
        return super().handle_parse_result(ctx, opts, args)


def _chain(ctx: click.Context) -> list[click.Context]:
    out = []
    while ctx is not None:
        out.append(ctx)
        ctx = ctx.parent
    return out[::-1]


def alias_option(flag: str, target: str, *, deprecated: bool = True):
    """A hidden `flag` standing for the option with parameter name `target` (e.g. make-prefs' old -k)."""
    name = f"alias_{flag.lstrip('-').replace('-', '_')}_of_{target}"
    return click.option(flag, name, cls=AliasOption, target=target, deprecated=deprecated)
