"""Bounded memory for per-pair work on inputs larger than memory: split by pair-id range, one part at a time.

A stage whose work is per pair (make-prefs, label-difficulty) runs it on each part and concatenates the
parts' outputs in order: every pair falls in exactly one part and the parts are pair-id ranges in increasing
order, so per-pair results, and outputs sorted by pair id, are the same as one pass over everything.

    with pair_parts({"rollouts": rollouts, "prompts": prompts}, rows=n, per_part=20_000_000, tmp=tmp) as parts:
        for frames in parts:               # one dict of LazyFrames per part
            ...

An input that fits (rows <= per_part) is one part: the frames themselves, nothing written. Otherwise the
range bounds are quantiles of the pair ids of the frame named by `bounds_from` (one row per pair: prompts),
and one streaming pass per frame writes it to `tmp/<name>/_part=<i>/` (polars' partitioned sink); each part
then reads only its own files, whatever the order of the input rows.
"""

from __future__ import annotations

import math
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError

_PART = "_part"
# make-prefs peaks at about 0.25 GB per million rollouts in one part (label-difficulty at half that)
PART_ROWS = 20_000_000
PART_HELP = ("Rollouts handled at once: a larger input is cut into pair-id ranges of about this many rows, "
             "one at a time (memory: about 0.25 GB per million rows). Results do not depend on it.")


def check_part_rows(value) -> int:
    """--part-rows as an int >= 1, or a one-line error."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or (isinstance(value, float) and value != n):
        raise UserError(f"part_rows must be a whole number >= 1; got {value!r}")
    return n


def n_rows(lf: pl.LazyFrame) -> int:
    """Rows of a lazy frame (from Parquet metadata when it is a plain scan)."""
    return int(lf.select(pl.len()).collect().item())


def bounds(ids: pl.LazyFrame, parts: int, key: str = C.PAIR_ID) -> pl.Series:
    """parts - 1 increasing pair ids that cut the ids into parts of about equal size."""
    s = ids.select(pl.col(key).unique()).collect(engine="streaming")[key].sort()
    if parts <= 1 or s.len() == 0:
        return s.clear()
    cuts = sorted({s.len() * i // parts for i in range(1, parts)} - {0})
    return s.gather(cuts)


def part_of(cuts: pl.Series, key: str = C.PAIR_ID) -> pl.Expr:
    """The part number of each row: ids below cuts[0] -> 0, in [cuts[i-1], cuts[i]) -> i, from cuts[-1] -> len.
    A sum of comparisons: elementwise, so the streaming engine runs it (search_sorted on a literal is not, and
    made polars hold the whole input: 18 GB for 100M rollouts)."""
    return pl.sum_horizontal([(pl.col(key) >= c).cast(pl.UInt32) for c in cuts]).alias(_PART)


def _read(folder: Path, i: int, schema: pl.Schema) -> pl.LazyFrame:
    d = folder / f"{_PART}={i}"
    files = sorted(d.glob("*.parquet")) if d.is_dir() else []
    return pl.scan_parquet(files) if files else pl.LazyFrame(schema=schema)


def part_file(tmp: Path, name: str, i: int, parts: int) -> Path:
    """Where part i of an output file goes: the file itself when there is one part, else a file under tmp/_parts
    that `join_parts` concatenates."""
    return tmp / name if parts == 1 else tmp / "_parts" / f"{Path(name).stem}-{i:05d}.parquet"


def join_parts(files: list[Path], dest: Path) -> None:
    """The parts' files, concatenated in order (increasing pair-id ranges: the result is in order) into `dest`;
    nothing to do for one part written as `dest` itself."""
    if files != [dest]:
        pl.scan_parquet(files).sink_parquet(dest, compression="zstd", statistics=True)


@contextmanager
def pair_parts(frames: dict[str, pl.LazyFrame], rows: int, per_part: int, tmp: "str | Path",
               bounds_from: str | None = None, key: str = C.PAIR_ID) -> Iterator[list[dict[str, pl.LazyFrame]]]:
    """The frames cut into pair-id ranges of about `per_part` rows of the largest input (`rows`); see above.
    The part files live under `tmp` (removed on exit)."""
    parts = max(1, math.ceil(rows / max(1, int(per_part))))
    cuts = bounds(frames[bounds_from or next(iter(frames))], parts, key) if parts > 1 else None
    if cuts is None or cuts.len() == 0:
        yield [frames]
        return
    tmp = Path(tmp)
    try:
        schemas = {}
        for name, lf in frames.items():
            schemas[name] = lf.collect_schema()
            lf.with_columns(part_of(cuts, key)).sink_parquet(
                pl.PartitionBy(tmp / name, key=_PART, include_key=False), mkdir=True)
        yield [{name: _read(tmp / name, i, schemas[name]) for name in frames} for i in range(cuts.len() + 1)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
