"""Progress bars and third-party output: one bar per long stage, and the libraries kept quiet.

Verbosity comes from the CLI's `-v`/`-q` (`toolkit.cli.common.setup_logging` calls `configure`):

- the toolkit's own loggers (toolkit., retrieval_index., annotation., trainers.) log at WARNING,
  INFO with `-v`, DEBUG with `-vv`, ERROR with `-q`;
- every other library logs one step quieter: its warnings (and Python `warnings`, routed to the
  `py.warnings` logger) show with `-v`, its info with `-vv`;
- the stage's own progress bar (`progress()`, the trainer's step bar) shows on a terminal unless
  `-q`; the libraries' secondary bars (transformers' "Loading weights", datasets' map bars, vLLM's
  checkpoint loading) only with `-v` on a terminal. Off whenever stderr is not a terminal.

Libraries are configured without importing them here: environment variables set by `configure`
reach libraries imported later and the processes they spawn (vLLM's engine), and
`quiet_libraries()`, called by the backends and trainers right after they import a library,
applies the levels to loggers and bars that already exist. Variables the user set are left alone.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

# uvicorn: `toolkit serve`'s own lifecycle lines
OWN_LOGGERS = ("toolkit", "retrieval_index", "annotation", "trainers", "uvicorn")

MARK = "TOOLKIT_LIBRARY_ENV"  # JSON of the variables below that a toolkit process set: a child toolkit may change them

_state = {"own": logging.WARNING, "lib": logging.ERROR, "quiet": False, "verbose": 0, "configured": False}


def _inherited() -> dict[str, str]:
    try:
        marked = json.loads(os.environ.get(MARK) or "{}")
    except ValueError:
        return {}
    return {k: v for k, v in marked.items() if isinstance(k, str) and os.environ.get(k) == v}


_ours: dict[str, str] = _inherited()  # environment variables set by the toolkit (not the user): ours to change


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit=unit, disable=not bars_enabled(), leave=False, mininterval=0.5)


def bars_enabled() -> bool:
    """The stage's own progress bar: on a terminal, unless -q."""
    return not _state["quiet"] and _isatty()


def library_bars_enabled() -> bool:
    """Libraries' secondary bars (model loading, dataset maps): only with -v, on a terminal."""
    return bars_enabled() and _state["verbose"] >= 1


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _clamp(level: int) -> int:
    return max(logging.DEBUG, min(level, logging.CRITICAL))


def configure(verbose: int, quiet: int) -> None:
    """Set the toolkit's and the libraries' log levels and bars from -v/-q (called by the CLI)."""
    own = _clamp(logging.WARNING - 10 * verbose + 10 * quiet)
    # one step quieter than the toolkit, before clamping (-vvv: library debug)
    lib = _clamp(logging.WARNING - 10 * verbose + 10 * quiet + 10)
    _state.update(own=own, lib=lib, quiet=quiet > 0, verbose=verbose, configured=True)
    logging.basicConfig(level=own, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_by_origin)
    logging.captureWarnings(True)  # Python warnings -> the `py.warnings` logger, shown at the libraries' level
    _set_env(_library_env(lib, library_bars_enabled()))
    quiet_libraries()


def _by_origin(record: logging.LogRecord) -> bool:
    """The root handler's filter: the toolkit's records at its level, everyone else's one step quieter."""
    return record.name.split(".", 1)[0] in OWN_LOGGERS or record.levelno >= _state["lib"]


def _library_env(lib: int, bars: bool) -> dict[str, str | None]:
    """Environment for libraries imported later and for child processes (None: leave unset)."""
    name = logging.getLevelName(lib).lower()
    quiet = lib > logging.WARNING
    return {
        "HF_HUB_DISABLE_PROGRESS_BARS": None if bars else "1",  # also transformers' bars ("Loading weights")
        "HF_DATASETS_DISABLE_PROGRESS_BARS": None if bars else "1",
        "TRANSFORMERS_VERBOSITY": name,
        "DATASETS_VERBOSITY": name,
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1" if quiet else None,
        "VLLM_LOGGING_LEVEL": name.upper(),
        "VLLM_LOGGING_STREAM": "ext://sys.stderr",  # vLLM logs to stdout by default; stdout is for results
        "TORCH_LOGS": "-torch" if quiet else None,  # torch's Python loggers at ERROR
        "TORCH_CPP_LOG_LEVEL": "ERROR" if quiet else None,  # c10 warnings (e.g. NUMA binding)
        "PYTHONWARNINGS": "ignore" if quiet else None,  # child processes (vLLM's engine): no route to our logger
    }


def _set_env(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if key in os.environ and _ours.get(key) != os.environ[key]:
            continue  # set by the user (or changed since): theirs
        if value is None:
            if key in _ours:
                os.environ.pop(key, None)
                _ours.pop(key)
        else:
            os.environ[key] = value
            _ours[key] = value
    os.environ[MARK] = json.dumps(_ours, sort_keys=True)


def quiet_libraries() -> None:
    """Apply the current levels and bar settings to the libraries already imported (cheap; call after an import).

    Does nothing unless `configure` ran (the CLI): code that uses the toolkit as a library keeps its own logging."""
    if not _state["configured"]:
        return
    lib, mods, env = _state["lib"], sys.modules, os.environ
    # loggers with handlers of their own (the rest propagate to the root handler, whose filter applies the level)
    for name, var in (("vllm", "VLLM_LOGGING_LEVEL"), ("torch", "TORCH_LOGS")):
        if name in mods and not (var in env and var not in _ours):
            logging.getLogger(name).setLevel(lib)
    bars = library_bars_enabled()
    if "huggingface_hub" in mods:  # transformers' bars follow the hub's switch
        from huggingface_hub import constants
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        _switch(bars, constants.HF_HUB_DISABLE_PROGRESS_BARS, enable_progress_bars, disable_progress_bars)
        _through_ours("huggingface_hub", lib)
    if "transformers" in mods:
        from huggingface_hub import constants
        from transformers.utils import logging as tlog

        if "TRANSFORMERS_VERBOSITY" in _ours:
            tlog.set_verbosity(lib)
            tlog.disable_default_handler()  # its records go through the root handler, in our format
            tlog.enable_propagation()
        _switch(bars, constants.HF_HUB_DISABLE_PROGRESS_BARS, tlog.enable_progress_bar, tlog.disable_progress_bar)
    if "datasets" in mods:
        from datasets import config as dconfig
        from datasets.utils import disable_progress_bars, enable_progress_bars, logging as dlog

        if "DATASETS_VERBOSITY" in _ours:
            dlog.set_verbosity(lib)
            _through_ours("datasets", lib)
        _switch(bars, dconfig.HF_DATASETS_DISABLE_PROGRESS_BARS, enable_progress_bars, disable_progress_bars)


def _through_ours(name: str, level: int) -> None:
    """A library logger with a stream handler of its own (huggingface_hub, datasets): its records go through the
    toolkit's handler instead."""
    logger = logging.getLogger(name)
    for h in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
        logger.removeHandler(h)
    logger.setLevel(level)
    logger.propagate = True


def _switch(on: bool, disabled_by_env: bool | None, enable, disable) -> None:
    """A library's bars on or off, unless its *_DISABLE_PROGRESS_BARS variable (read when it was imported,
    and final) says otherwise: the libraries warn when asked to override it."""
    if disabled_by_env is None or disabled_by_env is not on:
        (enable if on else disable)()
