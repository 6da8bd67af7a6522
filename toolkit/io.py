"""Reading input tables with clear errors, atomic output folders and manifests."""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
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


class StageConfig:
    """Base of the stages' config dataclasses: `resolved()` is the config as hashed into the
    manifest (what decides whether a rerun is needed), without the fields in NOT_HASHED and
    without a backend's api_key_env (the name of a secret's variable is not the run's config)."""

    NOT_HASHED: ClassVar[tuple[str, ...]] = ("force",)

    def resolved(self) -> dict:
        d = asdict(self)  # type: ignore[call-overload]
        for key in self.NOT_HASHED:
            d.pop(key, None)
        if isinstance(d.get("backend"), dict):
            d["backend"].pop("api_key_env", None)
            if not d["backend"].get("n_per_request"):  # added later: at its default, outputs made before it stay up to date
                d["backend"].pop("n_per_request", None)
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


# -- output -----------------------------------------------------------------


SHARDS = "shards"  # the sharded stages' finished work, inside their output folder (toolkit.shards)


def check_output_folder(out: "str | Path", stage: str | None = None) -> None:
    """Refuse an output folder whose contents a stage would destroy: a folder the toolkit did not
    write (no manifest.json; e.g. the input data), or the output of another stage (e.g. the input)."""
    out = Path(out)
    if not out.is_dir():
        return
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if not entries:
        return
    m = read_manifest(out)
    if m is None:
        if all(p.name == SHARDS for p in entries):
            return  # the finished shards of an interrupted sharded stage
        raise UserError(f"{out}: this folder exists and was not written by the toolkit (no manifest.json; it holds "
                        f"{', '.join(sorted(p.name for p in entries)[:3])}{', ...' if len(entries) > 3 else ''}); pass another -o, or empty it first")
    if stage and m.get("stage") and m["stage"] != stage:
        raise UserError(f"{out}: this folder holds the output of `toolkit {m['stage']}`, which `toolkit {stage}` would replace "
                        "(is it this stage's input?); pass another -o")


@contextmanager
def atomic_dir(final: "str | Path") -> Iterator[Path]:
    """Write a folder under a temporary name; it replaces `final` only if the block succeeds, and
    never replaces a folder the toolkit did not write or another stage's output (check_output_folder)."""
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
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: "str | Path", text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_parquet(df: pl.DataFrame, path: "str | Path") -> None:
    """Write Parquet via a temporary file (readable by `datasets` and polars)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.write_parquet(tmp, compression="zstd", statistics=True)
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
    (out_dir / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return manifest


def manifest_of(path: "str | Path") -> dict | None:
    """The manifest of a stage folder, or of the folder holding a file of one (e.g. pairs.parquet)."""
    p = Path(path)
    return read_manifest(p if p.is_dir() else p.parent)


def mark_incomplete(out_dir: "str | Path", stage: str) -> None:
    """Before a stage rewrites its final files in place (sharded stages): a manifest that matches no
    run, so a run killed halfway is redone, by the stage and by `toolkit run`, not taken as done."""
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST).exists():
        atomic_write_text(out_dir / MANIFEST, json.dumps({"stage": stage, "complete": False}) + "\n")


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
