"""Pairs as every stage reads them: one check against the grade scale, one cleaning of their text.

`validate_pairs` is the one rule, applied by `toolkit ingest` (which records what it changed in its
manifest) and by every stage that reads pairs (`load_pairs`: split, retrieve, gen-cot, sample,
score, the baseline), so a pairs file written by hand or by another tool gets the same treatment:

- grades must be integers on the data's grade scale: anything else (9 on taosr4, `"Excellent"`,
  an empty grade) is a one-line error naming the file, the row and the fix;
- control characters (NUL, the other C0 codes but tab/newline/return, DEL, the C1 codes) are
  removed from the text fields, counted and named in a warning;
- a text field longer than `max_field_chars` (default MAX_FIELD_CHARS; `toolkit ingest
  --max-field-chars`) is cut to that length and counted (`attributes`, a JSON object, loses whole
  keys from its end so it stays valid JSON).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale

log = logging.getLogger(__name__)

# ~4x the longest Home Depot description; a 10 MB "query" line is cut, not carried through every prompt
MAX_FIELD_CHARS = 20_000
CONTROL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]"
TEXT_FIELDS = (C.QUERY, C.TITLE, C.DESCRIPTION, C.CATEGORY, C.BRAND, C.ATTRIBUTES)


def _char_name(ch: str) -> str:
    return "NUL" if ch == "\0" else "DEL" if ch == "\x7f" else f"U+{ord(ch):04X}"


def check_grades(df: pl.DataFrame, scale: GradeScale, where: str) -> pl.DataFrame:
    """The pairs with `grade` as integers on `scale`; a one-line error for the first row that is not."""
    if C.GRADE not in df.columns:
        return df
    col = df[C.GRADE]
    as_int = col.cast(pl.Int64, strict=False) if col.dtype != pl.Int64 else col
    if col.dtype == pl.String:  # "4" is a grade, "4.5" or "Excellent" is not
        as_int = pl.Series(C.GRADE, [int(v) if v is not None and v.strip().lstrip("-").isdigit() else None
                                     for v in col.to_list()], dtype=pl.Int64)
    elif col.dtype.is_float():
        as_int = pl.Series(C.GRADE, [int(v) if v is not None and float(v).is_integer() else None
                                     for v in col.to_list()], dtype=pl.Int64)
    allowed = [g.value for g in scale.grades]
    bad = as_int.is_null() | ~as_int.is_in(allowed)
    if bad.any():
        i = int(bad.arg_max())
        n = int(bad.sum())
        raise UserError(
            f"{where}: row {i + 1} has grade {col[i]!r}, which is not a grade of scale `{scale.name}` "
            f"({scale.describe()}) ({n} row{'s' * (n > 1)} like it); fix the file, or map its labels with "
            "`toolkit ingest --grade-map`"
        )
    return df.with_columns(as_int.alias(C.GRADE))


def _cut_attributes(text: str, limit: int) -> str:
    """A JSON object cut to at most `limit` characters by dropping whole keys from its end."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return text[:limit]
    if not isinstance(obj, dict):
        return text[:limit]
    kept: dict = {}
    for k, v in obj.items():
        trial = json.dumps({**kept, k: v}, ensure_ascii=False, sort_keys=True)
        if len(trial) > limit:
            break
        kept[k] = v
    return json.dumps(kept, ensure_ascii=False, sort_keys=True)


def clean_text(df: pl.DataFrame, where: str, max_chars: int = MAX_FIELD_CHARS) -> tuple[pl.DataFrame, dict]:
    """Remove control characters and cut over-long fields; return the pairs and what was changed (empty when
    nothing)."""
    if max_chars < 1:
        raise UserError(f"--max-field-chars must be at least 1; got {max_chars}")
    counts: dict = {}
    for col in (c for c in TEXT_FIELDS if c in df.columns and df.schema[c] == pl.String):
        hits = df[col].str.count_matches(CONTROL).fill_null(0)
        if hits.sum():
            found = "".join(df.filter(hits > 0)[col].str.extract_all(CONTROL)
                            .explode().drop_nulls().unique().sort().to_list())
            counts.setdefault("control_chars_removed", {})[col] = int(hits.sum())
            counts.setdefault("control_chars", [])
            counts["control_chars"] = sorted(set(counts["control_chars"]) | {_char_name(ch) for ch in found})
            df = df.with_columns(pl.col(col).str.replace_all(CONTROL, ""))
        long = df[col].str.len_chars().fill_null(0) > max_chars
        if long.any():
            counts.setdefault("truncated_fields", {})[col] = int(long.sum())
            if col == C.ATTRIBUTES:
                cut = [_cut_attributes(v, max_chars) if is_long else v
                       for v, is_long in zip(df[col].to_list(), long.to_list())]
                df = df.with_columns(pl.Series(col, cut, dtype=pl.String))
            else:
                df = df.with_columns(pl.when(long).then(pl.col(col).str.slice(0, max_chars)).otherwise(pl.col(col))
                                     .alias(col))
    if "control_chars_removed" in counts:
        per = ", ".join(f"{c} {n}" for c, n in counts["control_chars_removed"].items())
        log.warning("%s: removed %d control character(s) (%s) from the text (%s)", where,
                    sum(counts["control_chars_removed"].values()), ", ".join(counts["control_chars"]), per)
    if "truncated_fields" in counts:
        per = ", ".join(f"{c} {n}" for c, n in counts["truncated_fields"].items())
        log.warning("%s: cut %d field(s) longer than %d characters (%s); "
                    "`toolkit ingest --max-field-chars` sets the limit",
                    where, sum(counts["truncated_fields"].values()), max_chars, per)
    return df, counts


def validate_pairs(df: pl.DataFrame, scale: GradeScale, where: str,
                   max_chars: int = MAX_FIELD_CHARS) -> tuple[pl.DataFrame, dict]:
    """The one check of pairs wherever they are read: grades on the scale (else an error), clean text (counted)."""
    df = check_grades(df, scale, where)
    return clean_text(df, where, max_chars)


def query_key(q: str) -> str:
    """Queries that differ only in case and spacing are one query (splits and review caps group by it)."""
    return " ".join(str(q).lower().split())


def select_split(df: pl.DataFrame, split: str | None, where: str) -> pl.DataFrame:
    """The rows of `split`; all rows when the pairs carry no split at all (not split yet); an error when
    they carry splits but not this one."""
    if not split:
        return df
    if C.SPLIT in df.columns and (df[C.SPLIT] == split).any():
        return df.filter(pl.col(C.SPLIT) == split)
    found = sorted(s for s in set(df[C.SPLIT].to_list()) if s) if C.SPLIT in df.columns else []
    if found:
        raise UserError(f"{where}: no rows with split {split!r}; splits found: {', '.join(found)} — "
                        "pass --split with one of them, or --split '' for all rows")
    log.warning("%s: the pairs are not split (no split %r); using all %d rows — pass --split '' to say so",
                where, split, df.height)
    return df


def load_pairs(path: "str | Path", split: str | None = None, limit: int | None = None,
               required: list[str] | None = None) -> pl.DataFrame:
    """Pairs from a stage folder or file, checked against their recorded grade scale (validate_pairs), one split of
    them, the first `limit`."""
    from toolkit.core.tables import read_pairs
    from toolkit.core.stagefolder import scale_of

    df, _ = validate_pairs(read_pairs(path, required), scale_of(path), str(path))
    df = select_split(df, split, str(path))
    return df.head(limit) if limit else df
