"""Reading input tables with clear errors, atomic output folders and manifests."""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar, Iterator

import polars as pl

from toolkit import __version__
from toolkit.errors import UserError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json"}
MANIFEST = "manifest.json"
CONFIG = "config.yaml"


# -- input ------------------------------------------------------------------


# Config fields added after outputs were made with the version before: at these defaults they are left out of the hash.
ADDED_LATER = {"template_options": {}, "class_weights": "none", "gold": None, "eval_pairs": None, "eval_split": "dev", "eval_index": None,
               "eval_rules_k": 3, "eval_every": 0, "eval_limit": 500, "select_best": "none", "early_stop": None}


class StageConfig:
    """Base of the stages' config dataclasses: `resolved()` is the config as hashed into the
    manifest (what decides whether a rerun is needed), without the fields in NOT_HASHED and
    without a backend's api_key_env (the name of a secret's variable is not the run's config)."""

    NOT_HASHED: ClassVar[tuple[str, ...]] = ("force",)

    def resolved(self) -> dict:
        d = asdict(self)  # type: ignore[call-overload]
        for key in self.NOT_HASHED:
            d.pop(key, None)
        for added, default in ADDED_LATER.items():  # at their defaults, outputs made before these fields stay up to date
            if added in d and d[added] == default:
                d.pop(added)
        if isinstance(d.get("backend"), dict):
            d["backend"].pop("api_key_env", None)
            for added in ("n_per_request", "template_options"):  # added later: at their defaults, outputs made before stay up to date
                if not d["backend"].get(added):
                    d["backend"].pop(added, None)
        return d


def up_to_date_line(stage: str, out, detail: str | None = None) -> str:
    """The one summary line of a stage that found its output up to date."""
    what = f" ({detail})" if detail else ""
    return f"{stage}: {out} is up to date{what}; nothing to do (--force to redo)"

def check_utf8(path: Path, encoding: str = "utf-8") -> None:
    """Fail with the line and byte offset of the first byte that is not valid in `encoding`."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line, offset = 1, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                bad = offset + e.start
                line += chunk[: e.start].count(b"\n")
                raise UserError(
                    f"{path}: line {line} (byte {bad}) is not valid {encoding} "
                    f"(byte 0x{chunk[e.start]:02x}); re-save the file as UTF-8 or pass --encoding latin-1 (or the file's encoding)"
                ) from None
            line += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserError(f"{path}: the file ends in the middle of a {encoding} character; the file looks truncated") from None


def sniff_separator(path: Path, encoding: str = "utf-8") -> str:
    if path.suffix == ".tsv":
        return "\t"
    with open(path, encoding=encoding, errors="replace") as f:
        head = f.readline()
    return "\t" if head.count("\t") > head.count(",") else ","


def read_table(path: "str | Path", encoding: str = "utf-8", separator: str | None = None) -> pl.DataFrame:
    """Read CSV/TSV/JSONL/Parquet into a DataFrame of strings (Parquet keeps its types)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; pass a file (or use a --format that reads a folder)")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path)
    if suffix not in TEXT_SUFFIXES:
        raise UserError(f"{path}: unknown file type `{suffix}`; use .csv, .tsv, .jsonl or .parquet")
    check_utf8(path, encoding)
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty; nothing to ingest")
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path, encoding)
    sep = separator or sniff_separator(path, encoding)
    try:
        if encoding.lower().replace("-", "").replace("_", "") != "utf8":
            return _read_csv_encoded(path, sep, encoding)
        return pl.read_csv(path, separator=sep, infer_schema=False, quote_char='"')
    except pl.exceptions.PolarsError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a valid {'TSV' if sep == chr(9) else 'CSV'} file ({first}); check quoting and the column count of each row") from None


def _read_csv_encoded(path: Path, sep: str, encoding: str) -> pl.DataFrame:
    text = path.read_text(encoding=encoding)
    return pl.read_csv(text.encode("utf-8"), separator=sep, infer_schema=False)


def _read_jsonl(path: Path, encoding: str) -> pl.DataFrame:
    rows = []
    with open(path, encoding=encoding) as f:
        first = f.read(1)
        f.seek(0)
        if first == "[":  # a JSON array of objects
            try:
                rows = json.load(f)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: invalid JSON at line {e.lineno} ({e.msg}); fix the file or write one object per line") from None
        else:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: line {i} is not valid JSON ({e.msg}); write one JSON object per line") from None
                if not isinstance(obj, dict):
                    raise UserError(f"{path}: line {i} is a JSON {type(obj).__name__}, not an object; write one object per line")
                rows.append(obj)
    if not rows:
        raise UserError(f"{path}: no rows; nothing to ingest")
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    data = {c: [_cell(r.get(c)) for r in rows] for c in cols}
    return pl.DataFrame(data, schema={c: pl.String for c in cols})


def _cell(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)
    return str(v)


def read_parquet(path: "str | Path") -> pl.DataFrame:
    path = Path(path)
    check_complete(path.parent)
    try:
        return pl.read_parquet(path)
    except Exception as e:  # polars raises several types for corrupt files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: cannot read Parquet ({msg[:160]}); the file is truncated or corrupt, re-create it") from None


def read_pairs(path: "str | Path", required: list[str] | None = None) -> pl.DataFrame:
    """Read a pairs dataset: a Parquet file or a stage's output folder (all its Parquet files)."""
    from toolkit import columns as C

    path = Path(path)
    if path.is_dir():
        check_complete(path)
        files = sorted(p for p in path.glob("*.parquet"))
        if not files:
            raise UserError(f"{path}: no .parquet files in this folder; pass the output folder of `toolkit ingest` or `toolkit split`")
        df = pl.concat([read_parquet(p) for p in files], how="diagonal_relaxed")
    elif path.exists():
        df = read_parquet(path) if path.suffix == ".parquet" else read_table(path)
    else:
        raise UserError(f"{path}: no such file or folder; check the path")
    need = required if required is not None else C.REQUIRED_PAIR_COLUMNS
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UserError(
            f"{path}: column(s) {', '.join(missing)} missing; found: {', '.join(df.columns)}; "
            + ("pass predictions (the output of `toolkit score` or `toolkit train baseline`)" if C.GRADE_PROBS in need
               else "pass the output of the stage that writes these columns" if required is not None
               else "pass the output of `toolkit ingest` (canonical pairs)")
        )
    return df


# -- output folders: what -o may touch --------------------------------------
#
# The rule (README, "Conventions of every stage"): a stage writes only into its own -o folder, which it
# claims for the whole run (claim_output): -o may not be the working folder, one above it, the root,
# a file, an input or a folder holding or inside an input; the folder is locked, so a second run on it
# fails at once; and an existing folder is replaced only when it is empty (no entry at all, dot-files
# count) or carries this stage's own manifest.json. Finished folders appear in one rename
# (atomic_dir); sharded stages, which keep their finished shards in the folder between runs, mark it
# as theirs (an incomplete manifest) before the first byte and write the complete manifest last.


SHARDS = ".shards"  # the sharded stages' finished work, inside their output folder (toolkit.shards); hidden, so that
# `datasets.load_dataset(<stage folder>)` reads the stage's data, not each row a second time from its shards
LEGACY_SHARDS = "shards"  # where toolkit versions before 0.1.1 kept them (moved on the next run)
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")  # what a killed run of ours leaves beside or inside a folder


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
    """-o must not be the working folder or one above it, the root, an input, or a folder that holds or lies inside an input."""
    o = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if o == cwd or o in cwd.parents:
        raise UserError(f"{out}: -o is the working folder or a folder above it ({o}); a stage replaces its -o folder whole — pass a new "
                        "folder such as -o out/NAME")
    for p in inputs:
        r = Path(p).expanduser().resolve()
        if o == r or o in r.parents:
            raise UserError(f"{out}: -o is or holds the input {p}; a stage replaces its -o folder whole — pass another -o")
        if r.is_dir() and r in o.parents:
            raise UserError(f"{out}: -o lies inside the input folder {p}, whose contents it would change; pass a folder outside it")


def lock_dir() -> Path:
    """Where the output-folder locks live: $TOOLKIT_LOCK_DIR, else a shared folder in the system's temp dir (one machine)."""
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
        raise UserError(f"{out}: another toolkit run ({who}) is writing this folder now; wait for it to finish, or pass another -o") from None
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
                from toolkit.hub import hub_inputs

                hub_inputs(cfg)  # a stage folder published with `toolkit push`, fetched into the toolkit cache
            with claim_output(getattr(cfg, out_field), name, config_paths(cfg, out_field)):
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


def sha256_file(path: "str | Path") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def input_hashes(paths: list["str | Path"]) -> dict[str, str]:
    out = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError(f"{p}: no such file or folder; check the path")
        files = (
            sorted(
                x for x in p.rglob("*")
                if x.is_file() and x.name not in (MANIFEST, CONFIG) and not any(part.startswith(".") for part in x.relative_to(p).parts)
            )
            if p.is_dir()
            else [p]
        )
        for f in files:
            out[str(f)] = sha256_file(f)
    return out


def model_inputs(model: "str | Path | None") -> list[str]:
    """A local model folder counts as an input (its hash changes when it is retrained); hub ids and `default` do not."""
    return [str(model)] if model and Path(model).is_dir() else []


def fingerprint(stage: str, config: dict, inputs: dict[str, str]) -> str:
    """What a stage's output depends on: stage, resolved config, input contents, toolkit version."""
    return sha256_json({"stage": stage, "config": config, "inputs": sorted(inputs.values()), "version": __version__})


def write_manifest(out_dir: Path, stage: str, config: dict, inputs: dict[str, str], counts: dict, extra: dict | None = None) -> dict:
    """Record the resolved config (config.yaml) and a manifest (manifest.json) in an output folder."""
    import yaml

    outputs = {p.name: sha256_file(p) for p in sorted(out_dir.iterdir())
               if p.is_file() and p.name not in (MANIFEST, CONFIG) and not p.name.startswith(".")}
    manifest = {
        "stage": stage,
        "toolkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fingerprint": fingerprint(stage, config, inputs),
        "inputs": inputs,
        "outputs": outputs,
        "counts": counts,
        **(extra or {}),
    }
    atomic_write_text(out_dir / CONFIG, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    fault_point("manifest.before")
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))  # last: it says the folder is complete
    return manifest


def manifest_of(path: "str | Path") -> dict | None:
    """The manifest of a stage folder, or of the folder holding a file of one (e.g. pairs.parquet)."""
    p = Path(path)
    return read_manifest(p if p.is_dir() else p.parent)


def mark_incomplete(out_dir: "str | Path", stage: str) -> None:
    """Before a sharded stage writes its first byte into its folder, and before it rewrites its final files
    in place: a manifest that says whose folder this is and matches no run. A run killed at any instant
    leaves a folder its rerun takes up (and `toolkit run` redoes); readers refuse it (check_complete)."""
    out_dir = Path(out_dir)
    text = json.dumps({"stage": stage, "complete": False}) + "\n"
    if out_dir.is_dir():
        atomic_write_text(out_dir / MANIFEST, text)
    else:  # a new folder appears with its mark in one rename: never as a folder without a manifest
        with atomic_dir(out_dir) as tmp:
            (tmp / MANIFEST).write_text(text, encoding="utf-8")
    fault_point("manifest.incomplete")


def check_complete(folder: "str | Path") -> None:
    """Refuse to read a stage folder whose run was cut off (its manifest says incomplete)."""
    m = read_manifest(folder)
    if m is not None and m.get("complete") is False:
        stage = m.get("stage", "the stage")
        raise UserError(f"{folder}: the run of `toolkit {stage}` that writes this folder was cut off before it finished; "
                        f"rerun `toolkit {stage}` (or `toolkit run`) to complete it")


def read_manifest(out_dir: "str | Path") -> dict | None:
    p = Path(out_dir) / MANIFEST
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return None


def is_up_to_date(out_dir: "str | Path", stage: str, config: dict, inputs: dict[str, str]) -> bool:
    """True when `out_dir` holds complete output of the same stage, config and inputs."""
    m = read_manifest(out_dir)
    if not m or m.get("fingerprint") != fingerprint(stage, config, inputs):
        return False
    out_dir = Path(out_dir)
    return all((out_dir / name).exists() and sha256_file(out_dir / name) == h for name, h in m.get("outputs", {}).items())
