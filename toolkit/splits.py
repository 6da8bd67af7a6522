"""`toolkit split`: train/dev/test by query group, deterministic by seed.

Every row of a query (normalised: lower-case, single spaces) lands in the same split.
Queries are ordered by a seeded hash and cut where the cumulative row count crosses
each split's target fraction, so row fractions come out close to the targets and the
same seed always gives the same split.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.pairs import query_key
from toolkit.core.stagefolder import (Key, StageConfig, StageFolder, StageResult, input_hashes, run_stage,
                                      write_parquet, writes_output)

log = logging.getLogger(__name__)


@dataclass
class SplitConfig(StageConfig):
    input: str
    out: str = opt(flags=("-o", "--out"), type="path", help="Output folder (gets <split>.parquet per split).")
    # or "train=0.8,..."
    fractions: dict[str, float] = opt(default_factory=lambda: {C.TRAIN: 0.8, C.DEV: 0.1, C.TEST: 0.1},
                                      show_default=True, help="Row fraction per split; names are yours.")
    seed: int = opt(0, show_default=True, help="Seed of the query-group assignment (and of --max-rows sampling).")
    # keep a seeded random sample of at most N rows of these splits ("train=2000,dev=500")
    max_rows: dict[str, int] | None = opt(None,
                                          help="Keep a seeded random sample of at most N rows of a split, drawn over "
                                               "all its queries (e.g. train=2000,dev=500): a quick experiment on a "
                                               "large dataset without losing query variety.")
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def __post_init__(self):
        if isinstance(self.fractions, str):
            self.fractions = parse_fractions(self.fractions)
        if isinstance(self.max_rows, str):
            self.max_rows = parse_max_rows(self.max_rows)
        self.max_rows = self.max_rows or None  # "" or {}: no cap
        for name, n in (self.max_rows or {}).items():
            if name not in self.fractions:
                raise UserError(f"--max-rows names split {name!r}, which --fractions does not have "
                                f"({', '.join(self.fractions)})")
            if int(n) < 1:
                raise UserError(f"--max-rows {name}={n}: give a whole number >= 1")
        if not self.fractions:
            raise UserError("--fractions is empty; give e.g. train=0.8,dev=0.1,test=0.1")
        bad = {k: v for k, v in self.fractions.items() if not (0 <= float(v) <= 1)}
        if bad:
            raise UserError(f"--fractions: each fraction must be in [0, 1]; got {bad}")
        total = sum(self.fractions.values())
        if abs(total - 1.0) > 1e-6:
            raise UserError(f"--fractions must sum to 1; got {total:g} ({self.fractions})")

    def resolved(self) -> dict:
        d = super().resolved()
        if d["max_rows"] is None:  # configs written before --max-rows existed hash the same
            d.pop("max_rows")
        return d


def parse_fractions(text: str) -> dict[str, float]:
    """`train=0.8,dev=0.1,test=0.1` or `0.8,0.1,0.1` (train, dev, test)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    out: dict[str, float] = {}
    default_names = [C.TRAIN, C.DEV, C.TEST]
    for i, p in enumerate(parts):
        name, _, val = p.rpartition("=")
        if not name:
            if i >= len(default_names):
                raise UserError(f"--fractions {text!r}: name splits beyond three, "
                                "like train=0.8,dev=0.1,test=0.05,extra=0.05")
            name = default_names[i]
        try:
            out[name.strip()] = float(val)
        except ValueError:
            raise UserError(f"--fractions {text!r}: {val!r} is not a number; "
                            "write e.g. train=0.8,dev=0.1,test=0.1") from None
    return out


def parse_max_rows(text: str) -> dict[str, int]:
    """`train=2000,dev=500` -> {"train": 2000, "dev": 500}."""
    out: dict[str, int] = {}
    for p in (p.strip() for p in text.split(",")):
        if not p:
            continue
        name, _, val = p.partition("=")
        try:
            out[name.strip()] = int(val)
        except ValueError:
            raise UserError(f"--max-rows {text!r}: write split=N pairs, like train=2000,dev=500") from None
    return out


def cap_rows(part: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """A seeded random sample of n rows (drawn over all of the split's queries), in input order."""
    return part.with_row_index("_row").sample(n=n, seed=seed).sort("_row").drop("_row")


def assign_splits(df: pl.DataFrame, fractions: dict[str, float], seed: int) -> pl.DataFrame:
    """Add a `split` column; all rows of a query group get the same split."""
    keyed = df.with_columns(pl.col(C.QUERY).map_elements(query_key, return_dtype=pl.String).alias("_qkey"))
    groups = keyed.group_by("_qkey").len()
    order = sorted(
        groups.iter_rows(),
        key=lambda r: hashlib.blake2b(f"{seed}\x00{r[0]}".encode(), digest_size=8).digest(),
    )
    total = df.height
    names = list(fractions)
    bounds, acc = [], 0.0
    for n in names:
        acc += fractions[n]
        bounds.append(acc * total)
    assignment, cum = {}, 0
    for key, n in order:
        mid = cum + n / 2
        idx = next((i for i, b in enumerate(bounds) if mid < b), len(names) - 1)
        assignment[key] = names[idx]
        cum += n
    return keyed.with_columns(
        pl.col("_qkey").replace_strict(assignment, return_dtype=pl.String).alias(C.SPLIT)).drop("_qkey")


@dataclass
class SplitResult(StageResult):
    STAGE = "split"

    def parts(self) -> str:
        sampled = self.counts.get("sampled", {})
        return ", ".join(f"{k}={v['rows']} rows/{v['queries']} queries"
                         + (f" (sampled from {sampled[k]['from']})" if k in sampled else "")
                         for k, v in self.counts["splits"].items())

    brief = parts

    def headline(self) -> str:
        return f"{self.counts['rows']} pairs, {self.counts['queries']} queries -> {self.parts()}"

    def where(self) -> str:
        return f"in {self.out}"


@writes_output("split")
def split(cfg: SplitConfig) -> SplitResult:
    source = StageFolder.open(cfg.input)  # a folder, or a file in one (pairs.parquet)

    def write(tmp: Path) -> tuple[dict, dict]:
        df = source.pairs()
        if df.height == 0:
            raise UserError(f"{cfg.input}: no pairs to split (0 rows); pass the output of `toolkit ingest`")
        df = assign_splits(df, cfg.fractions, cfg.seed)
        counts = {"rows": df.height, "queries": df[C.QUERY].map_elements(query_key, return_dtype=pl.String).n_unique(),
                  "splits": {}}
        for name in cfg.fractions:
            part = df.filter(pl.col(C.SPLIT) == name)
            cap = (cfg.max_rows or {}).get(name)
            if cap is not None and part.height > cap:
                counts.setdefault("sampled", {})[name] = {"from": part.height, "kept": cap}
                part = cap_rows(part, cap, cfg.seed)
            counts["splits"][name] = {
                "rows": part.height,
                "queries": (part[C.QUERY].map_elements(query_key, return_dtype=pl.String).n_unique() if part.height
                            else 0),
                "grades": {str(g): n
                           for g, n in part.group_by(C.GRADE).len().sort(C.GRADE, descending=True).iter_rows()},
            }
            write_parquet(part, tmp / f"{name}.parquet")
        return counts, ({Key.GRADE_SCALE: source.get(Key.GRADE_SCALE)} if source.get(Key.GRADE_SCALE) else {})

    return run_stage(SplitResult, cfg, input_hashes([cfg.input]), write)
