"""One result type for every stage, with one summary format, and the one way a stage skips or writes.

    <stage>: <what it did>; dropped: <reason>=<n>, ... -> <target>         (a run)
    <stage>: <out> is up to date (<what it holds>); nothing to do (--force to redo)   (a skip)

A stage subclasses StageResult only to say what it did (`headline`) and what an up-to-date folder holds
(`brief`); the counts are the manifest's, `dropped_<reason>` counts (or a `dropped` mapping) listed once.
`run_stage` is the prologue and epilogue every non-sharded stage shares: up to date → the recorded result;
else the stage's files are written into a temporary folder with the manifest last, swapped in in one step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, TypeVar

from toolkit.core.stagefolder.aliases import in_text
from toolkit.core.stagefolder.atomic import atomic_dir
from toolkit.core.stagefolder.config import is_up_to_date, write_manifest
from toolkit.core.stagefolder.manifest import Key, read_manifest

R = TypeVar("R", bound="StageResult")


def up_to_date_line(stage: str, out, detail: str | None = None) -> str:
    """The one summary line of a stage that found its output up to date."""
    what = f" ({detail})" if detail else ""
    return f"{stage}: {out} is up to date{what}; nothing to do (--force to redo)"


def dropped_text(counts: dict, full: bool = False) -> str:
    """`reason=n, ...` of the non-zero `dropped_<reason>` counts and of a `dropped` mapping; '' when none.
    `full` keeps the `dropped_` prefix (the key as in the manifest)."""
    drops = {(k if full else k.removeprefix("dropped_")): v for k, v in counts.items()
             if k.startswith("dropped_") and isinstance(v, int) and v}
    if isinstance(counts.get("dropped"), dict):
        drops.update({k: v for k, v in counts["dropped"].items() if v})
    return ", ".join(f"{k}={v}" for k, v in drops.items())


@dataclass
class StageResult:
    out: Path
    counts: dict = field(default_factory=dict)
    skipped: bool = False
    manifest: dict | None = field(default=None, repr=False)

    STAGE: ClassVar[str] = ""
    SHOW_DROPPED: ClassVar[bool] = True  # list the dropped_* counts after the headline

    @property
    def stage(self) -> str:
        return self.STAGE

    def headline(self) -> str:
        """What the run did, from its counts (one phrase)."""
        return ", ".join(f"{k} {v}" for k, v in self.counts.items()
                         if isinstance(v, (int, float)) and not k.startswith("dropped_"))

    def brief(self) -> str | None:
        """What an up-to-date folder holds, for the skip line."""
        return None

    def target(self) -> Path:
        """Where the output is (the folder, or its main file)."""
        return self.out

    def where(self) -> str:
        return f"-> {self.target()}"

    @classmethod
    def recorded(cls: "type[R]", out: Path, manifest: dict, skipped: bool = False, **fields) -> R:
        """The result of the complete run whose manifest this is (just written, or found up to date: `skipped`)."""
        return cls(out, manifest.get(Key.COUNTS) or {}, skipped=skipped, manifest=manifest, **fields)

    def summary(self) -> str:
        if self.skipped:
            return in_text(up_to_date_line(self.stage, self.out, self.brief()))
        drops = dropped_text(self.counts) if self.SHOW_DROPPED else ""
        line = f"{self.stage}: {self.headline()}" + (f"; dropped: {drops}" if drops else "") + f" {self.where()}"
        return in_text(line)


def recorded_result(cls: "type[R]", cfg, inputs: dict[str, str], out: "str | Path | None" = None,
                    stage: str | None = None, resolved: dict | None = None, **fields) -> "R | None":
    """The result of the run already in `out` when it is up to date with this config (`resolved`, default
    cfg.resolved()) and these inputs, and the config has no `force`; None when the stage has work to do."""
    out = Path(out if out is not None else cfg.out)
    stage = stage or cls.STAGE
    if getattr(cfg, "force", False) or not is_up_to_date(out, stage,
                                                         resolved if resolved is not None else cfg.resolved(), inputs):
        return None
    return cls.recorded(out, read_manifest(out) or {}, skipped=True, **fields)


def run_stage(cls: "type[R]", cfg, inputs: dict[str, str], write: Callable[[Path], "tuple[dict, dict | None]"],
              out: "str | Path | None" = None, stage: str | None = None, resolved: dict | None = None, **fields) -> R:
    """Skip when up to date, else `write(tmp)` the stage's files into a temporary folder (it returns the counts
    and the manifest's extra keys), write the manifest last and swap the folder in (atomic_dir)."""
    out = Path(out if out is not None else cfg.out)
    stage = stage or cls.STAGE
    done = recorded_result(cls, cfg, inputs, out, stage, resolved, **fields)
    if done is not None:
        return done
    return write_stage(cls, cfg, inputs, write, out, stage, resolved, **fields)


def write_stage(cls: "type[R]", cfg, inputs: dict[str, str], write: Callable[[Path], "tuple[dict, dict | None]"],
                out: "str | Path | None" = None, stage: str | None = None, resolved: dict | None = None,
                **fields) -> R:
    """run_stage's writing half, for a stage that has already asked recorded_result."""
    out = Path(out if out is not None else cfg.out)
    stage = stage or cls.STAGE
    with atomic_dir(out) as tmp:
        counts, extra = write(tmp)
        manifest = write_manifest(tmp, stage, resolved if resolved is not None else cfg.resolved(),
                                  inputs, counts, extra)
    return cls.recorded(out, manifest, **fields)
