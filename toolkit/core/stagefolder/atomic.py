"""What -o may touch, and writing it atomically."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import polars as pl

from toolkit.core.errors import UserError
from toolkit.core.stagefolder.manifest import read_manifest

log = logging.getLogger(__name__)


# -- output folders: what -o may touch --------------------------------------
#
# The rule (README, "Conventions of every stage"): a stage writes only into its own -o folder, which it
# claims for the whole run (claim_output): -o may not be the working folder, one above it, the root,
# a file, an input or a folder holding or inside an input; the folder is locked, so a second run on it
# fails at once; and an existing folder is replaced only when it is empty (no entry at all, dot-files
# count) or carries this stage's own manifest.json. Finished folders appear in one rename
# (atomic_dir); sharded stages, which keep their finished shards in the folder between runs, mark it
# as theirs (an incomplete manifest) before the first byte and write the complete manifest last.


# the sharded stages' finished work, inside their output folder (toolkit.core.shards); hidden, so that
# `datasets.load_dataset(<stage folder>)` reads the stage's data, not each row a second time from its shards
SHARDS = ".shards"
LEGACY_SHARDS = "shards"  # where toolkit versions before 0.1.1 kept them (moved on the next run)
# what a killed run of ours leaves beside or inside a folder
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")


def listing(names: list[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:4]) + (f", ... ({len(names)} entries)" if len(names) > 4 else "")


def check_output_folder(out: "str | Path", stage: str | None = None) -> None:
    """Refuse an output folder whose contents a stage would destroy: an existing folder that is not
    empty (dot-files count) and holds no manifest.json (the toolkit did not write it), or that holds
    the output of another stage (e.g. this stage's input)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a folder; -o names the folder a stage writes, pass another -o")
    if not out.is_dir():
        return
    entries = [p.name for p in out.iterdir()]
    if not entries:
        return
    m = read_manifest(out)
    if m is None:
        raise UserError(f"{out}: this folder exists and was not written by the toolkit (no manifest.json; it holds "
                        f"{listing(entries)}); pass another -o, or empty it first")
    if stage and m.get("stage") != stage:
        other = f"the output of `toolkit {m['stage']}`" if m.get("stage") else "a manifest.json of no stage"
        raise UserError(f"{out}: this folder holds {other}, which `toolkit {stage}` would replace "
                        "(is it this stage's input?); pass another -o")


def check_output_path(out: "str | Path", inputs: "list[str | Path]" = ()) -> None:
    """-o must not be the working folder or one above it, the root, an input, or a folder that holds or lies inside an
    input."""
    o = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if o == cwd or o in cwd.parents:
        raise UserError(f"{out}: -o is the working folder or a folder above it ({o}); "
                        "a stage replaces its -o folder whole — pass a new folder such as -o out/NAME")
    for p in inputs:
        r = Path(p).expanduser().resolve()
        if o == r or o in r.parents:
            raise UserError(f"{out}: -o is or holds the input {p}; "
                            "a stage replaces its -o folder whole — pass another -o")
        if r.is_dir() and r in o.parents:
            raise UserError(f"{out}: -o lies inside the input folder {p}, whose contents it would change; "
                            "pass a folder outside it")


def lock_dir() -> Path:
    """Where the output-folder locks live: $TOOLKIT_LOCK_DIR, else a shared folder in the system's temp dir (one
    machine)."""
    import tempfile

    d = Path(os.environ.get("TOOLKIT_LOCK_DIR") or Path(tempfile.gettempdir()) / "taosr-toolkit-locks")
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        try:
            d.chmod(0o1777)  # like /tmp: every user may lock, none may remove another's lock
        except OSError:
            pass
    return d


_HELD: dict[Path, list] = {}  # folders this process has claimed: [lock, depth]


def _worker_rank() -> bool:
    """A non-main process of a distributed run (accelerate/torchrun): the main process claims and writes."""
    return os.environ.get("RANK", "0") not in ("", "0")


@contextmanager
def claim_output(out: "str | Path", stage: str | None, inputs: "list[str | Path]" = ()) -> Iterator[Path]:
    """Hold `out` for one stage run: check the path and the folder (check_output_path/_folder), take the
    folder's lock (a second run on it fails at once with a one-line error) and remove what killed runs left.
    Creates nothing in or beside `out`; re-entrant within a process."""
    out = Path(out)
    key = out.expanduser().resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield out
        finally:
            _HELD[key][1] -= 1
        return
    check_output_path(out, inputs)
    if _worker_rank():
        yield out
        return
    from filelock import FileLock, Timeout

    name = hashlib.sha256(str(key).encode()).hexdigest()[:32]
    lock = FileLock(str(lock_dir() / f"{name}.lock"), timeout=0)
    owner = lock_dir() / f"{name}.owner"
    try:
        lock.acquire()
    except Timeout:
        who = owner.read_text(encoding="utf-8").strip() if owner.exists() else "another process"
        raise UserError(f"{out}: another toolkit run ({who}) is writing this folder now; "
                        "wait for it to finish, or pass another -o") from None
    _HELD[key] = [lock, 1]
    try:
        import sys

        cmd = " ".join(["toolkit", *sys.argv[1:3]]) if Path(sys.argv[0]).name == "toolkit" else Path(sys.argv[0]).name
        atomic_write_text(owner, f"pid {os.getpid()}, {cmd}, since {time.strftime('%H:%M:%S')}\n")
        check_output_folder(out, stage)
        remove_leftovers(out)
        yield out
    finally:
        del _HELD[key]
        lock.release()


def config_paths(cfg, skip: str = "out") -> list[str]:
    """The existing files and folders a stage config names (its inputs, for check_output_path)."""
    found: list[str] = []

    def walk(v) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, (str, Path)) and str(v) and Path(v).expanduser().exists():
            found.append(str(v))

    walk({k: v for k, v in (asdict(cfg) if hasattr(cfg, "__dataclass_fields__") else vars(cfg)).items() if k != skip})
    return found


def writes_output(stage, out_field: str = "out"):
    """Decorate a stage function `fn(cfg, ...)`: it runs holding claim_output on `cfg.out` (the stage
    name, or a function of the config giving it)."""
    import functools

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(cfg, *args, **kwargs):
            name = stage(cfg) if callable(stage) else stage
            if any(isinstance(v, str) and v.startswith("hf://datasets/") for v in vars(cfg).values()):
                from toolkit.core.stagefolder.remote import hub_inputs

                hub_inputs(cfg)  # a stage folder published with `toolkit push`, fetched into the toolkit cache
            from toolkit.core.stagefolder import objectstore as store

            out = getattr(cfg, out_field)
            urls = {k: v for k, v in vars(cfg).items() if k != out_field and store.is_url(v)}
            if store.is_url(out):
                store.check_apart(out, list(urls.values()))
            for key, value in urls.items():
                setattr(cfg, key, str(store.fetch_input(value)))  # a complete stage folder, mirrored locally
            if not store.is_url(out):
                with claim_output(out, name, config_paths(cfg, out_field)):
                    return fn(cfg, *args, **kwargs)
            remote = store.pull(out, name)  # -o on an object store: the commit protocol in objectstore's docstring
            setattr(cfg, out_field, str(remote[-1]))
            with claim_output(remote[-1], name, config_paths(cfg, out_field)):
                with store.remote_output(out, name, *remote):
                    return fn(cfg, *args, **kwargs)

        return wrapper

    return deco


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours from an earlier claim in this process: done with
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(out: "str | Path") -> list[Path]:
    """Remove what killed runs of the toolkit left: `.NAME.tmp-PID` / `.NAME.old-PID` beside `out` and
    `.FILE.tmp-PID` files inside it and its .shards/ (only those of processes no longer alive)."""
    out = Path(out)
    found = []
    if out.parent.is_dir():
        found += [p for p in out.parent.iterdir() if (m := _LEFTOVER.match(p.name)) and m["name"] == out.name]
    for folder in (out, out / SHARDS):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if _LEFTOVER.match(p.name) and p.is_file()]
    removed = []
    for p in found:
        if _pid_alive(int(_LEFTOVER.match(p.name)["pid"])):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        log.info("removed %d leftover(s) of killed runs: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


def fault_point(name: str) -> None:
    """A named instant of a write, for the fault-injection tests: with TOOLKIT_FAULT_LOG set each point
    reached is appended to that file; with TOOLKIT_FAULT_AT=NAME:K the process kills itself (SIGKILL,
    no cleanup) the K-th time it reaches NAME. Costs one dict lookup otherwise."""
    trace, at = os.environ.get("TOOLKIT_FAULT_LOG"), os.environ.get("TOOLKIT_FAULT_AT")
    if not (trace or at):
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{name}:{_FAULT_HITS[name]}\n")
    if at == f"{name}:{_FAULT_HITS[name]}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_HITS: dict[str, int] = {}


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


@contextmanager
def atomic_dir(final: "str | Path") -> Iterator[Path]:
    """Write a folder under a temporary name beside `final`; it replaces `final` in one step only if the
    block succeeds (an atomic swap on Linux), and never replaces a folder the toolkit did not write or
    another stage's output (check_output_folder)."""
    final = Path(final)
    check_output_folder(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        check_output_folder(final, (read_manifest(tmp) or {}).get("stage"))
    except UserError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fault_point("dir.before_swap")
    if final.exists() and _exchange(tmp, final):
        fault_point("dir.swapped")
        shutil.rmtree(tmp, ignore_errors=True)  # the old folder, now under the temporary name
        return
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        fault_point("dir.old_moved")
    tmp.rename(final)
    fault_point("dir.swapped")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: "str | Path", text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    fault_point(f"text.tmp:{path.name}")
    os.replace(tmp, path)


def write_parquet(df: pl.DataFrame, path: "str | Path") -> None:
    """Write Parquet via a temporary file (readable by `datasets` and polars)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.write_parquet(tmp, compression="zstd", statistics=True)
    fault_point(f"parquet.tmp:{path.name}")
    os.replace(tmp, path)
