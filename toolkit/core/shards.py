"""Sharded, resumable work: each finished shard is one Parquet file written atomically, named by
a key of the stage's config and the shard's inputs, and skipped when a rerun finds it.

A run killed at any moment leaves only complete shard files (plus, at most, a temporary file
that the next run removes); the rerun redoes the missing shards and ends with exactly the rows an
uninterrupted run gives, provided the work of a shard is deterministic (seeded per shard).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import polars as pl

from toolkit.core.stagefolder import LEGACY_SHARDS, SHARDS, atomic_write_text, fault_point, sha256_json, write_parquet
from toolkit.core.stagefolder.aliases import unalias
from toolkit.core.progress import progress

log = logging.getLogger(__name__)


@dataclass
class ShardRun:
    names: list[str]
    done: int
    skipped: int

    def read(self, out: Path) -> pl.DataFrame:
        return pl.concat([pl.read_parquet(out / SHARDS / n) for n in self.names], how="vertical_relaxed")


ON_WRITTEN: list[Callable[[Path], None]] = []  # called with each shard file the moment it is written

RECORD = ".written"  # inside .shards/: the names of the shard files the toolkit wrote there, one a line


def written(folder: Path) -> set[str]:
    """The shard files the toolkit wrote in `folder` (its record); nothing else there is ever deleted."""
    rec = folder / RECORD
    return set(rec.read_text(encoding="utf-8").split()) if rec.exists() else set()


def _record(folder: Path, name: str) -> None:
    # before the shard is written: a kill can leave a name without a file, never a file without its name
    with open(folder / RECORD, "a", encoding="utf-8") as f:
        f.write(name + "\n")


def _forget(folder: Path, names: set[str]) -> None:
    """Delete recorded shard files in `names` and rewrite the record without them."""
    ours = written(folder)
    for name in sorted(names & ours):
        (folder / name).unlink(missing_ok=True)
    atomic_write_text(folder / RECORD, "".join(f"{n}\n" for n in sorted(ours - names)))


SHARD_NAME = re.compile(r"^shard-\d{5}-[0-9a-f]{16}\.parquet$")


def _adopt_legacy(out: Path) -> None:
    """Move the shards an older toolkit kept in a visible `shards/` folder to `.shards/`, when every entry there is
    one of ours."""
    legacy = out / LEGACY_SHARDS
    if not legacy.is_dir() or (out / SHARDS).exists():
        return
    names = [p.name for p in legacy.iterdir()]
    if all(SHARD_NAME.match(n) or n == RECORD or n.startswith(".shard-") for n in names):
        legacy.rename(out / SHARDS)
    else:
        log.warning("%s: holds files the toolkit did not write; left alone (the shards now live in %s)",
                    legacy, SHARDS)


Task = tuple[int, list]  # (shard number, the items of the shard)
Executor = Callable[[Callable[[int, list], pl.DataFrame], list[Task]], Iterator[tuple[int, pl.DataFrame]]]


def run_local(work: Callable[[int, list], pl.DataFrame], tasks: list[Task]) -> Iterator[tuple[int, pl.DataFrame]]:
    """The local executor: the shards one after another in this process, in order."""
    for i, part in tasks:
        yield i, work(i, part)


def run_shards(out: Path, items: list, size: int, key_of: Callable[[int, list], dict],
               work: Callable[[int, list], pl.DataFrame], desc: str, fresh: bool = False,
               executor: Executor | None = None) -> ShardRun:
    """Run `work(i, items_of_shard_i)` for each shard not already on disk; remove stale shards.
    `fresh` (a stage's --force) removes the finished shards first, so every shard is redone.
    `executor(work, tasks)` runs the shards and yields `(i, rows)` as each finishes, in any order (run_local, or
    core.executors' Ray pool); this process writes each shard the moment it arrives, under the same name whatever
    ran it, so a run killed anywhere resumes, with either executor.
    Only shard files the toolkit recorded writing are ever removed; other files in .shards/ are left alone."""
    folder = Path(out) / SHARDS
    _adopt_legacy(Path(out))
    folder.mkdir(parents=True, exist_ok=True)
    if fresh:
        _forget(folder, written(folder))
    n = (len(items) + size - 1) // size
    names, todo, skipped = [], {}, 0
    recorded = written(folder)
    for i in range(n):
        part = items[i * size : (i + 1) * size]
        # a staging folder counts as the URL it stands for (objectstore): shards resume on any machine
        name = f"shard-{i:05d}-{sha256_json(unalias(key_of(i, part)))[:16]}.parquet"
        names.append(name)
        # (a finished shard of a run before the record existed is named by its own key: ours too)
        if name not in recorded:
            _record(folder, name)
            recorded.add(name)
        if (folder / name).exists():
            skipped += 1
        else:
            todo[i] = part
    done = 0
    results = (executor or run_local)(work, list(todo.items()))
    for i, rows in progress(results, total=len(todo), desc=desc, unit="shard"):
        write_parquet(rows, folder / names[i])
        for hook in ON_WRITTEN:  # e.g. the upload of a stage folder on an object store
            hook(folder / names[i])
        fault_point("shard.written")
        done += 1
    stale = written(folder) - set(names)
    if stale:
        _forget(folder, stale)
    return ShardRun(names, done, skipped)
