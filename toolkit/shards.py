"""Sharded, resumable work: each finished shard is one Parquet file written atomically, named by
a key of the stage's config and the shard's inputs, and skipped when a rerun finds it.

A run killed at any moment leaves only complete shard files (plus, at most, a temporary file
that is ignored); the rerun redoes the missing shards and ends with exactly the rows an
uninterrupted run gives, provided the work of a shard is deterministic (seeded per shard).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl

from toolkit.io import SHARDS, sha256_json, write_parquet
from toolkit.progress import progress



@dataclass
class ShardRun:
    names: list[str]
    done: int
    skipped: int

    def read(self, out: Path) -> pl.DataFrame:
        return pl.concat([pl.read_parquet(out / SHARDS / n) for n in self.names], how="vertical_relaxed")


def run_shards(out: Path, items: list, size: int, key_of: Callable[[int, list], dict], work: Callable[[int, list], pl.DataFrame], desc: str,
               fresh: bool = False) -> ShardRun:
    """Run `work(i, items_of_shard_i)` for each shard not already on disk; remove stale shards.
    `fresh` (a stage's --force) removes the finished shards first, so every shard is redone."""
    folder = Path(out) / SHARDS
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    n = (len(items) + size - 1) // size
    names, done, skipped = [], 0, 0
    for i in progress(range(n), total=n, desc=desc, unit="shard"):
        part = items[i * size : (i + 1) * size]
        name = f"shard-{i:05d}-{sha256_json(key_of(i, part))[:16]}.parquet"
        names.append(name)
        if (folder / name).exists():
            skipped += 1
            continue
        write_parquet(work(i, part), folder / name)
        done += 1
    for stale in folder.glob("shard-*.parquet"):
        if stale.name not in names:
            stale.unlink()
    return ShardRun(names, done, skipped)
