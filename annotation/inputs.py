"""Reading what a review round pushes and merges: the kind's file(s), pair text, record ids."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from annotation.settings import KindSpec
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.tables import read_pairs

FILE_COL = "__review_file"  # which input file a row came from (pull writes the same files back)
ID_COL = "__record_id"  # the Argilla record id of a row
PAIR_TEXT = [C.QUERY, C.TITLE, C.DESCRIPTION, C.ATTRIBUTES, C.CATEGORY, C.BRAND, C.SOURCE, C.SPLIT]


def input_files(spec: KindSpec, path: "str | Path") -> list[Path]:
    """A file as given; in a folder, the kind's file of a stage folder, else all its Parquet files."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or folder; check the path")
    if p.is_file():
        return [p]
    if (p / spec.main_file).is_file():
        return [p / spec.main_file]
    files = sorted(p.glob("*.parquet"))
    if not files:
        raise UserError(f"{p}: no .parquet files in this folder; "
                        "pass the output folder (or file) of the stage to review")
    return files


def output_name(f: Path) -> str:
    return f.name if f.suffix == ".parquet" else f.stem + ".parquet"


def record_id_expr(spec: KindSpec, columns: list[str]) -> pl.Expr:
    """`<pair_id>` plus `-<tag><value>` for each of the kind's key columns present in the data."""
    parts = [pl.col(C.PAIR_ID).cast(pl.String)]
    for col, tag in spec.key:
        if col in columns:
            parts += [pl.lit(f"-{tag}"), pl.col(col).cast(pl.String).fill_null("")]
    return pl.concat_str(parts).alias(ID_COL)


def join_pairs(df: pl.DataFrame, pairs: "str | Path") -> pl.DataFrame:
    """Add the pair text columns that `df` lacks from canonical pairs (by pair_id)."""
    src = read_pairs(pairs, required=[C.PAIR_ID])
    cols = [c for c in PAIR_TEXT + [C.GRADE] if c in src.columns and c not in df.columns]
    # `toolkit retrieve`'s rules, for reviewers
    cols += [c for c in (C.RULE_TEXTS, C.RULE_IDS) if c in src.columns and c not in df.columns]
    if not cols:
        return df
    src = src.select([pl.col(C.PAIR_ID).cast(pl.String)] + cols).unique(C.PAIR_ID, keep="first", maintain_order=True)
    if not df[C.PAIR_ID].cast(pl.String).is_in(src[C.PAIR_ID].implode()).any():
        raise UserError(f"--pairs {pairs}: none of its pair ids match the input's; "
                        "pass the pairs the stage was run on")
    key = "__pair_key"
    joined = df.with_columns(pl.col(C.PAIR_ID).cast(pl.String).alias(key)).join(
        src.rename({C.PAIR_ID: key}), on=key, how="left", maintain_order="left"
    ).drop(key)
    return joined


def read_rows(spec: KindSpec, path: "str | Path", pairs: "str | Path | None" = None) -> tuple[pl.DataFrame, list[str]]:
    """The input rows with FILE_COL and ID_COL, and the output file name of each input file."""
    files = input_files(spec, path)
    parts = [read_pairs(f, required=list(spec.required)).with_columns(pl.lit(i, dtype=pl.Int32).alias(FILE_COL))
             for i, f in enumerate(files)]
    df = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
    if spec.name == "cot" and C.COMPLETION not in df.columns and C.RATIONALE not in df.columns:
        raise UserError(f"{path}: kind cot needs a `{C.COMPLETION}` or `{C.RATIONALE}` column; found: "
                        f"{', '.join(df.columns)}")
    if pairs:
        df = join_pairs(df, pairs)
    df = df.with_columns(record_id_expr(spec, df.columns))
    dupes = df.filter(pl.col(ID_COL).is_duplicated())[ID_COL].unique().sort()
    if dupes.len():
        raise UserError(
            f"{path}: record id {dupes[0]!r} appears {df.filter(pl.col(ID_COL) == dupes[0]).height} times "
            f"({dupes.len()} duplicated ids); each row of a review dataset needs its own pair id (and sample index)"
        )
    return df, [output_name(f) for f in files]
