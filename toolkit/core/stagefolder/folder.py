"""An input folder, opened once: `StageFolder.open(path)` reads its manifest a single time and answers what a
stage asks of its input (grade scale, lineage, counts, files, the pairs of one split), so that stages do not
re-read manifests or reach into the module of the stage that wrote the folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from toolkit.core.grades import GradeScale, get_scale
from toolkit.core.stagefolder.manifest import Key, check_complete, manifest_of


@dataclass(frozen=True)
class StageFolder:
    path: Path  # the folder, or one file of it (pairs.parquet) as given
    manifest: dict = field(default_factory=dict)  # {} where the toolkit did not write it (a user's file)

    @classmethod
    def open(cls, path: "str | Path") -> "StageFolder":
        """A stage folder or a file inside one (`hf://datasets/...` inputs are fetched by the stage's
        `writes_output` before it runs)."""
        return cls(Path(path), manifest_of(path) or {})

    @property
    def folder(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def stage(self) -> str | None:
        return self.manifest.get(Key.STAGE)

    def get(self, key: str, default=None):
        return self.manifest.get(key, default)

    @property
    def counts(self) -> dict:
        return self.manifest.get(Key.COUNTS) or {}

    def scale(self, default: "str | None" = None) -> GradeScale:
        """The recorded grade scale, else `default` (a scale name or file), else the toolkit's default."""
        if Key.GRADE_SCALE in self.manifest:
            return GradeScale.from_dict(self.manifest[Key.GRADE_SCALE], where=str(self.path))
        return get_scale(default)

    @property
    def lineage(self) -> dict | None:
        """How the student prompts of this folder were built (answer order, rules): see toolkit.core.lineage."""
        rec = self.manifest.get(Key.LINEAGE)
        return rec if isinstance(rec, dict) else None

    def file(self, name: str) -> Path:
        """One of the folder's files by name (files.*): the given path itself when it names a file."""
        return self.path if self.path.is_file() else self.folder / name

    def parquet_files(self) -> list[Path]:
        check_complete(self.folder)
        return [self.path] if self.path.is_file() else sorted(self.folder.glob("*.parquet"))

    def pairs(self, split: str | None = None, limit: int | None = None,
              required: list[str] | None = None) -> pl.DataFrame:
        """The pairs, checked against the recorded scale (toolkit.core.pairs.validate_pairs), one split of them, the
        first `limit`."""
        from toolkit.core.pairs import select_split, validate_pairs
        from toolkit.core.tables import read_pairs

        df, _ = validate_pairs(read_pairs(self.path, required), self.scale(), str(self.path))
        df = select_split(df, split, str(self.path))
        return df.head(limit) if limit else df
