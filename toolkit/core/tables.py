"""Reading input tables (CSV, TSV, JSONL, Parquet) and pairs datasets, with one-line errors naming the file, line
and fix."""

from __future__ import annotations

import codecs
import json
import logging
from pathlib import Path

import polars as pl

from toolkit.core.errors import UserError
from toolkit.core.stagefolder.manifest import check_complete

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json"}


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
                    f"(byte 0x{chunk[e.start]:02x}); re-save the file as UTF-8 or pass --encoding latin-1 "
                    "(or the file's encoding)"
                ) from None
            line += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserError(f"{path}: the file ends in the middle of a {encoding} character; "
                            "the file looks truncated") from None


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
        raise UserError(f"{path}: not a valid {'TSV' if sep == chr(9) else 'CSV'} file ({first}); "
                        "check quoting and the column count of each row") from None


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
                raise UserError(f"{path}: invalid JSON at line {e.lineno} ({e.msg}); "
                                "fix the file or write one object per line") from None
        else:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: line {i} is not valid JSON ({e.msg}); "
                                    "write one JSON object per line") from None
                if not isinstance(obj, dict):
                    raise UserError(f"{path}: line {i} is a JSON {type(obj).__name__}, not an object; "
                                    "write one object per line")
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
        raise UserError(f"{path}: cannot read Parquet ({msg[:160]}); "
                        "the file is truncated or corrupt, re-create it") from None


def read_pairs(path: "str | Path", required: list[str] | None = None) -> pl.DataFrame:
    """Read a pairs dataset: a Parquet file or a stage's output folder (all its Parquet files)."""
    from toolkit.core import columns as C

    path = Path(path)
    if path.is_dir():
        check_complete(path)
        files = sorted(p for p in path.glob("*.parquet"))
        if not files:
            raise UserError(f"{path}: no .parquet files in this folder; "
                            "pass the output folder of `toolkit ingest` or `toolkit split`")
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
