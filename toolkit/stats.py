"""Grade distributions per split, as a table for humans."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.grades import GradeScale, get_scale
from toolkit.core.stagefolder import scale_of
from toolkit.core.tables import read_pairs


def distribution(df: pl.DataFrame) -> dict[str, dict[int, int]]:
    """split -> grade -> count (rows with no split are under `all`)."""
    if C.SPLIT not in df.columns:
        df = df.with_columns(pl.lit("").alias(C.SPLIT))
    out: dict[str, dict[int, int]] = {}
    for split, grade, n in df.group_by(C.SPLIT, C.GRADE).len().iter_rows():
        out.setdefault(split or "all", {})[grade] = n
    return out


def format_table(dist: dict[str, dict[int, int]], scale: GradeScale) -> str:
    order = ([s for s in (C.TRAIN, C.DEV, C.TEST) if s in dist]
             + sorted(s for s in dist if s not in (C.TRAIN, C.DEV, C.TEST)))
    heads = ["split"] + [f"{g.value} {g.name}" for g in scale.grades] + ["total"]
    rows = []
    for s in order:
        counts = dist[s]
        total = sum(counts.values())
        cells = [f"{counts.get(g.value, 0)} ({100 * counts.get(g.value, 0) / total:.0f}%)" if total else "0"
                 for g in scale.grades]
        rows.append([s] + cells + [str(total)])
    if len(order) > 1:
        allc: dict[int, int] = {}
        for counts in dist.values():
            for g, n in counts.items():
                allc[g] = allc.get(g, 0) + n
        total = sum(allc.values())
        rows.append(["all"]
                    + [f"{allc.get(g.value, 0)} ({100 * allc.get(g.value, 0) / total:.0f}%)" for g in scale.grades]
                    + [str(total)])
    widths = [max(len(r[i]) for r in [heads] + rows) for i in range(len(heads))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(r) for r in rows])


def stats_table(path: "str | Path", scale: "str | None" = None) -> str:
    df = read_pairs(path)
    sc = get_scale(scale) if scale else scale_of(path)
    return format_table(distribution(df), sc)
