"""Tiny rollouts folders written by the tests (not a test file).

A group spec maps a pair id to (gold grade, samples); a sample is a predicted grade, None for an
unparseable answer, or (predicted grade or None, text) to choose the text.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.grades import get_scale
from toolkit.rollouts import PROMPTS_FILE, ROLLOUT_SCHEMA, ROLLOUTS_FILE


def sample_text(pred, i: int) -> str:
    return f"{pred}\nReason: sample {i} says {pred}." if pred is not None else f"I am not sure (sample {i})."


def rollouts_frame(groups: dict) -> pl.DataFrame:
    rows = []
    for pid, (gold, samples) in groups.items():
        for i, s in enumerate(samples):
            pred, text = s if isinstance(s, tuple) else (s, sample_text(s, i))
            status = "ok" if pred is not None else "missing_label"
            rows.append((pid, i, text, "stop", status, pred, gold, pred is not None and pred == gold, None))
    return pl.DataFrame(rows, schema=ROLLOUT_SCHEMA, orient="row")


def prompt_messages(pid: str) -> list[dict]:
    return [{"role": "system", "content": "Grade relevance."}, {"role": "user", "content": f"Query and item of {pid}"}]


def prompts_frame(grades: dict[str, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            C.PAIR_ID: list(grades),
            C.PROMPT: [prompt_messages(p) for p in grades],
            C.GRADE: list(grades.values()),
            C.QUERY: [f"query {p}" for p in grades],
            C.TITLE: [f"title {p}" for p in grades],
        },
        schema_overrides={C.GRADE: pl.Int64},
    )


def write_rollouts(folder: Path, groups: dict, no_rollouts: dict[str, int] | None = None, scale: str = "taosr4") -> Path:
    """A rollouts folder: rollouts.parquet, prompts.parquet (groups + pairs without rollouts), manifest.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rollouts_frame(groups).write_parquet(folder / ROLLOUTS_FILE)
    grades = {pid: gold for pid, (gold, _) in groups.items()} | dict(no_rollouts or {})
    prompts_frame(grades).write_parquet(folder / PROMPTS_FILE)
    manifest = {"stage": "sample", "grade_scale": get_scale(scale).to_dict(), "counts": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder
