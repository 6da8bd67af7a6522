"""`toolkit ingest`: source files -> canonical pair records (Parquet).

What is an error and what is dropped (documented in the README):

* Always an error (nothing written): a missing file or column, a file that is not
  UTF-8 (or the given --encoding), a truncated/corrupt Parquet file, invalid CSV or
  JSON, an empty file, duplicate explicit ids (`--id-column`, CrowdFlower `id`).
* Row-level problems are errors by default and, with `--drop-invalid`, dropped with a
  warning and counted in the manifest (`dropped_<reason>`): an unknown or empty grade
  value, an empty query, an empty title.
* The same pair (same query and item text) given different grades is label noise that
  real crowd data has (CrowdFlower, Home Depot): by default all its rows are dropped
  with a warning and counted (`dropped_conflicting_grades`); `--on-conflict majority`
  keeps the most frequent grade (ties: the lower), `--on-conflict error` stops.
* Always dropped with a warning (harmless): an exact repeat of a pair with the same grade.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit import formats as F
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.grades import GradeMapper, builtin_mapper, get_scale, parse_grade_map, parse_thresholds
from toolkit.core.progress import progress
from toolkit.core.stagefolder import (dropped_text, input_hashes, Key, run_stage, StageResult, write_parquet,
                                      writes_output)
from toolkit.core.pairs import MAX_FIELD_CHARS, clean_text
from toolkit.core.stagefolder.files import PAIRS_FILE

log = logging.getLogger(__name__)



@dataclass
class IngestConfig:
    inputs: list[str]
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder (gets pairs.parquet, config.yaml, manifest.json).")
    format: str = opt("generic", flags=("-f", "--format"), choices=("generic", "esci", "wands", "wands-binary",
                                                                    "homedepot", "crowdflower", "multicpr", "qbqtc"),
                      show_default=True,
                      help="Input layout. generic: one CSV/TSV/JSONL/Parquet file with column flags; esci: folder "
                           "with the official examples+products Parquet (or one merged file); wands: folder with "
                           "query.csv, product.csv, label.csv; homedepot: train.csv (+ product_descriptions.csv, "
                           "attributes.csv beside it); crowdflower: train.csv; wands-binary, multicpr, qbqtc: the "
                           "files of those names in ../shared/data.")
    scale: str | None = opt(None, help="Grade scale: taosr4 (default for most formats), esci, three, five, binary, or "
                                       "a YAML file.")
    grade_map: str | None = opt(None, help="Source label -> grade value, e.g. 'E=4,S=3,C=2,I=1' (or a YAML file). "
                                           "Overrides the built-in map.")
    thresholds: str | None = opt(None, help="Numeric labels: lower bounds of each grade, best first, e.g. "
                                            "'3.0,2.5,2.0' (Home Depot means).")
    source: str | None = opt(None, help="Value of the `source` column (default: the format name, or the file name for "
                                        "generic).")
    encoding: str = opt("utf-8", show_default=True,
                        help="Text encoding of the input (e.g. latin-1 for the original Home Depot files).")
    separator: str | None = opt(None, help="Field separator for CSV/TSV (default: sniffed from the header).")
    drop_invalid: bool = opt(False, help="Drop rows with an unknown grade, empty query/title or conflicting grades "
                                         "(counted) instead of failing.")
    on_conflict: str = opt("drop", choices=("drop", "majority", "error"), show_default=True,
                           help="The same pair given different grades: drop all its rows (counted), keep the majority "
                                "grade, or fail.")
    max_field_chars: int = opt(MAX_FIELD_CHARS, show_default=True,  # see toolkit.core.pairs
                               help="Cut text fields longer than this many characters (counted in the manifest; "
                                    "`attributes` loses whole keys).")
    columns: F.ColumnMap = field(default_factory=F.ColumnMap)
    esci_locale: str | None = opt("us", show_default=True,
                                  help="[esci] keep this product_locale (us, es, jp); '' keeps all.")
    # None: all
    esci_version: str | None = opt(None, choices=("small", "large"),
                                   help="[esci] keep only the small or large version's rows.")
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def __post_init__(self):
        if self.format not in F.FORMATS:
            raise UserError(f"unknown --format {self.format!r}; use one of {', '.join(F.FORMATS)}")
        if not self.inputs:
            raise UserError("no input given; pass a file (or a folder for --format esci/wands/homedepot)")
        if self.on_conflict not in ("drop", "majority", "error"):
            raise UserError(f"--on-conflict must be drop, majority or error; got {self.on_conflict!r}")
        if self.max_field_chars < 1:
            raise UserError(f"--max-field-chars must be at least 1; got {self.max_field_chars}")
        if self.esci_version not in (None, "small", "large"):
            raise UserError(f"--esci-version must be small or large; got {self.esci_version!r}")
        if isinstance(self.columns, dict):
            unknown = set(self.columns) - set(F.ColumnMap.__dataclass_fields__)
            if unknown:
                raise UserError(f"columns: unknown field(s) {', '.join(sorted(unknown))}; "
                                f"allowed: {', '.join(F.ColumnMap.__dataclass_fields__)}")
            self.columns = F.ColumnMap(**self.columns)

    def resolved(self) -> dict:
        d = asdict(self)
        d.pop("force")
        d["scale"] = self.scale_obj().name if self.scale is None or self.scale in _builtin_names() else self.scale
        return d

    def scale_obj(self):
        return get_scale(self.scale or F.FORMAT_SCALES[self.format])

    def mapper(self) -> GradeMapper:
        scale = self.scale_obj()
        if self.grade_map:
            return GradeMapper(scale, table=parse_grade_map(self.grade_map, scale))
        if self.thresholds:
            return GradeMapper(scale, thresholds=parse_thresholds(self.thresholds))
        m = builtin_mapper(self.format, scale)
        if m is not None:
            return m
        if self.format in ("generic",):
            return GradeMapper(scale)  # identity: labels are grade values or grade labels
        raise UserError(
            f"no built-in mapping from {self.format} labels to scale `{scale.name}`; "
            f"pass --grade-map (e.g. 'a=3,b=2,c=1') or --thresholds"
        )


def _builtin_names():
    from toolkit.core.grades import SCALES

    return SCALES


@dataclass
class IngestResult(StageResult):
    STAGE = "ingest"
    SHOW_DROPPED = False  # in the headline's parentheses

    def brief(self) -> str:
        return f"{self.counts.get('kept', '?')} pairs"

    def headline(self) -> str:
        return (f"read {self.counts['rows_read']} rows, kept {self.counts['kept']} pairs "
                f"({dropped_text(self.counts, full=True) or 'none dropped'})")

    def target(self) -> Path:
        return self.out / PAIRS_FILE


def _from_hub(cfg: IngestConfig) -> IngestConfig:
    """Hub datasets (`hf://datasets/owner/name@revision`) and local folders in the Hub layout, loaded with `datasets`
    into one Parquet file each (its content is what the manifest hashes); other inputs as they are."""
    from toolkit.core.stagefolder.remote import fetch_dataset, is_hub_dataset

    if not any(is_hub_dataset(p) for p in cfg.inputs):
        return cfg
    if cfg.format != "generic":
        raise UserError(f"a Hub dataset is read with --format generic (its columns by name); "
                        f"got --format {cfg.format}")
    first = cfg.inputs[0]
    source = cfg.source or (first.split("/", 3)[-1].split("@")[0].split(":")[0] if first.startswith("hf://")
                            else Path(first).name)
    return replace(cfg, inputs=[str(fetch_dataset(p)) if is_hub_dataset(p) else p for p in cfg.inputs], source=source)


def _load(cfg: IngestConfig) -> F.Loaded:
    paths = [Path(p) for p in cfg.inputs]
    for p in paths:
        if not p.exists():
            raise UserError(f"{p}: no such file or folder; check the path")
    fmt = cfg.format
    if fmt == "generic":
        return F.read_generic(paths, cfg.columns, cfg.encoding, cfg.separator)
    if fmt == "esci":
        return F.read_esci(paths, cfg.encoding, cfg.esci_locale, cfg.esci_version)
    if fmt == "wands":
        return F.read_wands(paths, cfg.encoding)
    readers = {
        "homedepot": F.read_homedepot,
        "crowdflower": F.read_crowdflower,
        "wands-binary": F.read_wands_binary,
        "multicpr": F.read_multicpr,
        "qbqtc": F.read_qbqtc,
    }
    return readers[fmt](paths, cfg.encoding)


def pair_id(query: str, title: str, description: str, attributes: str, category: str, brand: str) -> str:
    """Stable pair id: a content hash of the query and the item's text fields."""
    payload = json.dumps([query, title, description, attributes, category, brand], ensure_ascii=False)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=8).hexdigest()


def _clean_text(col: str) -> pl.Expr:
    return pl.col(col).str.replace_all(r"\s+", " ").str.strip_chars().fill_null("")


def _row_problem(cfg: IngestConfig, loaded: F.Loaded, df: pl.DataFrame, reason: str, column: str, fix: str,
                 counts: dict) -> pl.DataFrame:
    """Raise a one-line error about the first bad row, or drop all of them with --drop-invalid."""
    bad = df.filter(pl.col("_bad"))
    n = bad.height
    if n == 0:
        return df.drop("_bad")
    first = bad.row(0, named=True)
    where = f"{loaded.main}: row {first[F.ROW]}, column `{column}`"
    if not cfg.drop_invalid:
        value = first.get(C.RAW_LABEL) if reason == "unknown_grade" else first.get(column)
        raise UserError(f"{where}: {reason.replace('_', ' ')} {value!r} ({n} row{'s' * (n > 1)}); {fix}, "
                        "or pass --drop-invalid to drop such rows")
    log.warning("%s: dropping %d row(s) with %s (first: row %s)", loaded.main, n, reason.replace("_", " "),
                first[F.ROW])
    counts[f"dropped_{reason}"] = n
    return df.filter(~pl.col("_bad")).drop("_bad")


def build_pairs(cfg: IngestConfig) -> tuple[pl.DataFrame, dict, F.Loaded]:
    """Read, validate and map the input; return canonical pairs and their counts."""
    loaded = _load(cfg)
    scale, mapper = cfg.scale_obj(), cfg.mapper()
    df = loaded.frame.with_columns([_clean_text(c) for c in F.RAW_COLUMNS if c != C.RAW_LABEL])
    counts: dict = {"rows_read": df.height}
    if df.height == 0:
        where = " (after the --esci-locale / --esci-version filters)" if cfg.format == "esci" else ""
        raise UserError(f"{loaded.main}: no data rows{where}; nothing to ingest — check the file")

    # Grades: map each distinct source label once.
    labels = df.select(pl.col(C.RAW_LABEL).unique()).to_series().to_list()
    table = {lab: mapper.map(lab) if lab is not None and str(lab).strip() else None for lab in labels}
    df = df.with_columns(pl.col(C.RAW_LABEL).replace_strict(table, default=None, return_dtype=pl.Int64).alias(C.GRADE))
    counts["grades_read"] = {
        str(g): n for g, n in df.group_by(C.GRADE).len().drop_nulls().sort(C.GRADE, descending=True).iter_rows()}
    known = ", ".join(sorted({str(k) for k, v in table.items() if v is not None})[:12]) or "none"
    df = _row_problem(
        cfg, loaded, df.with_columns(pl.col(C.GRADE).is_null().alias("_bad")), "unknown_grade", loaded.label_column,
        f"known values: {known}; map it with --grade-map (scale `{scale.name}`: {scale.describe()})", counts,
    )
    df = _row_problem(cfg, loaded, df.with_columns((pl.col(C.QUERY) == "").alias("_bad")), "empty_query", C.QUERY,
                      "fill in the query", counts)
    df = _row_problem(cfg, loaded, df.with_columns((pl.col(C.TITLE) == "").alias("_bad")), "empty_title", C.TITLE,
                      "fill in the item title", counts)

    # before the ids: a pair's id is the hash of the text kept
    df, cleaned = clean_text(df, str(loaded.main), cfg.max_field_chars)
    counts.update(cleaned)
    rows = progress(df.select(C.PAIR_ID_FIELDS).iter_rows(), total=df.height, desc="hashing pairs", unit="pair")
    ids = [pair_id(*r) for r in rows]
    df = df.with_columns(pl.Series(C.PAIR_ID, ids, dtype=pl.String))

    # Duplicates: exact repeats are dropped; the same pair with two grades is a conflict.
    conflict = df.group_by(C.PAIR_ID).agg(pl.col(C.GRADE).n_unique().alias("_n")).filter(pl.col("_n") > 1)
    if conflict.height:
        bad_ids = set(conflict[C.PAIR_ID].to_list())
        rows = df.filter(pl.col(C.PAIR_ID).is_in(bad_ids))
        first = rows.row(0, named=True)
        same = rows.filter(pl.col(C.PAIR_ID) == first[C.PAIR_ID])
        if cfg.on_conflict == "error":
            raise UserError(
                f"{loaded.main}: rows {', '.join(map(str, same[F.ROW].to_list()[:4]))} give the same pair "
                f"(query {first[C.QUERY]!r}, title {first[C.TITLE][:40]!r}) different grades "
                f"{sorted(set(same[C.GRADE].to_list()), reverse=True)} "
                f"({conflict.height} pairs conflict); resolve them in the source, or pass --on-conflict drop|majority"
            )
        if cfg.on_conflict == "majority":
            df = _resolve_majority(df, bad_ids, counts)
        else:
            log.warning("%s: dropping %d pairs given conflicting grades (%d rows; --on-conflict majority keeps them)",
                        loaded.main, conflict.height, rows.height)
            counts["dropped_conflicting_grades"] = rows.height
            df = df.filter(~pl.col(C.PAIR_ID).is_in(bad_ids))
    before = df.height
    df = df.unique(subset=[C.PAIR_ID], keep="first", maintain_order=True)
    if before - df.height:
        log.warning("%s: dropping %d exact repeat(s) of a pair with the same grade", loaded.main, before - df.height)
    counts["dropped_duplicate"] = before - df.height

    source = cfg.source or (cfg.format if cfg.format != "generic" else Path(cfg.inputs[0]).stem)
    out = df.with_columns(pl.lit(source).alias(C.SOURCE)).select(C.PAIR_COLUMNS)
    counts["kept"] = out.height
    counts["grades"] = grade_counts(out)
    return out, counts, loaded


def _resolve_majority(df: pl.DataFrame, bad_ids: set, counts: dict) -> pl.DataFrame:
    """Keep the most frequent grade of each conflicting pair; a tie goes to the lower grade."""
    votes = (
        df.filter(pl.col(C.PAIR_ID).is_in(bad_ids))
        .group_by(C.PAIR_ID, C.GRADE).len()
        .sort([C.PAIR_ID, "len", C.GRADE], descending=[False, True, False])
        .unique(C.PAIR_ID, keep="first")
        .select(C.PAIR_ID, pl.col(C.GRADE).alias("_keep"))
    )
    out = df.join(votes, on=C.PAIR_ID, how="left")
    losing = out.filter(pl.col("_keep").is_not_null() & (pl.col("_keep") != pl.col(C.GRADE)))
    counts["dropped_outvoted_grade"] = losing.height
    log.warning("resolved %d conflicting pairs by majority grade (%d outvoted rows dropped)", len(bad_ids),
                losing.height)
    return out.filter(pl.col("_keep").is_null() | (pl.col("_keep") == pl.col(C.GRADE))).drop("_keep")


def grade_counts(df: pl.DataFrame) -> dict[str, int]:
    vc = df.group_by(C.GRADE).len().sort(C.GRADE, descending=True)
    return {str(g): n for g, n in vc.iter_rows()}


@writes_output("ingest")
def ingest(cfg: IngestConfig) -> IngestResult:
    local = _from_hub(cfg)  # the config as given (hub ids, not cache paths) is what the manifest records

    def write(tmp: Path) -> tuple[dict, dict]:
        pairs, counts, loaded = build_pairs(local)
        if pairs.height == 0:
            raise UserError(f"{loaded.main}: every row was dropped ({counts}); nothing to write — "
                            "check the grade mapping and columns")
        write_parquet(pairs, tmp / PAIRS_FILE)
        log.info("wrote %d pairs to %s", pairs.height, cfg.out)
        return counts, {Key.GRADE_SCALE: local.scale_obj().to_dict(), "mapping": local.mapper().describe()}

    return run_stage(IngestResult, cfg, input_hashes(local.inputs), write)
