"""Tiny inputs for the four review kinds, shaped like the stages' outputs, built from the demo pairs.

- cot: gen-cot's sft.parquet (prompt, completion, pair_id, sample_idx, grade, rationale, teacher;
  no query/title: push joins them from the pairs with --pairs); pair 0 has two samples.
- prefs: make-prefs' preferences.parquet (prompt, chosen, rejected, pair_id, grade, chosen_source,
  chosen_grade, rejected_grade, pass_rate, n_samples, n_correct, chosen/rejected_sample_idx).
- hard: label-difficulty's difficulty.parquet (pair columns + n_samples, n_correct, pass_rate, difficulty).
- errors: eval's predictions.parquet (pair columns + grade_probs, pred_grade, correct).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from toolkit.core import columns as C

MSG = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
NAMES = {4: "Excellent", 3: "Related", 2: "Mismatch", 1: "Irrelevant"}


def demo_pairs(repo: Path, out: Path, n: int = 6) -> pl.DataFrame:
    """The first n demo pairs, ingested the normal way (pairs.parquet under `out`)."""
    from toolkit.ingest import IngestConfig, ingest

    ingest(IngestConfig(inputs=[str(repo / "demo" / "pairs.jsonl")], out=str(out)))
    return pl.read_parquet(out / "pairs.parquet").head(n)


def _user(p: dict) -> list[dict]:
    return [{"role": "system", "content": "You judge search relevance."},
            {"role": "user", "content": f"Query: {p[C.QUERY]}\nItem: {p[C.TITLE]}\nGrade 1-4, grade first."}]


def _answer(grade: int, why: str) -> str:
    return f"{grade}\nReason: {why}"


def cot_frame(pairs: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for i, p in enumerate(pairs.iter_rows(named=True)):
        for s in ([0, 1] if i == 0 else [0]):
            why = f"step {s}: the item is {NAMES[p[C.GRADE]].lower()} for '{p[C.QUERY]}'."
            rows.append({C.PROMPT: _user(p), C.COMPLETION: [{"role": "assistant", "content": _answer(p[C.GRADE], why)}],
                         C.PAIR_ID: p[C.PAIR_ID], C.SAMPLE_IDX: s, C.GRADE: p[C.GRADE], C.RATIONALE: why, "teacher": "demo-teacher"})
    schema = {C.PROMPT: MSG, C.COMPLETION: MSG, C.PAIR_ID: pl.String, C.SAMPLE_IDX: pl.Int64, C.GRADE: pl.Int64, C.RATIONALE: pl.String, "teacher": pl.String}
    return pl.DataFrame(rows, schema=schema)


def prefs_frame(pairs: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for i, p in enumerate(pairs.iter_rows(named=True)):
        g = p[C.GRADE]
        bad = 1 if g != 1 else 4
        teacher = i % 2 == 1
        rows.append({
            C.PROMPT: _user(p), C.CHOSEN: [{"role": "assistant", "content": _answer(g, "matches the query.")}],
            C.REJECTED: [{"role": "assistant", "content": _answer(bad, "wrong reading.")}],
            C.PAIR_ID: p[C.PAIR_ID], C.GRADE: g, C.CHOSEN_SOURCE: "teacher" if teacher else "self", C.CHOSEN_GRADE: g,
            C.REJECTED_GRADE: bad, C.PASS_RATE: 0.0 if teacher else 0.5, C.N_SAMPLES: 4, C.N_CORRECT: 0 if teacher else 2,
            C.CHOSEN_SAMPLE_IDX: None if teacher else 1, C.REJECTED_SAMPLE_IDX: 3,
        })
    schema = {C.PROMPT: MSG, C.CHOSEN: MSG, C.REJECTED: MSG, C.PAIR_ID: pl.String, C.GRADE: pl.Int64, C.CHOSEN_SOURCE: pl.String,
              C.CHOSEN_GRADE: pl.Int64, C.REJECTED_GRADE: pl.Int64, C.PASS_RATE: pl.Float64, C.N_SAMPLES: pl.Int64,
              C.N_CORRECT: pl.Int64, C.CHOSEN_SAMPLE_IDX: pl.Int64, C.REJECTED_SAMPLE_IDX: pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def hard_frame(pairs: pl.DataFrame) -> pl.DataFrame:
    n_correct = [1, 2, 0, 3, 1, 5][: pairs.height]
    return pairs.with_columns(
        pl.lit(16, dtype=pl.Int64).alias(C.N_SAMPLES),
        pl.Series(C.N_CORRECT, n_correct, dtype=pl.Int64),
        (pl.Series(n_correct, dtype=pl.Float64) / 16).alias(C.PASS_RATE),
        pl.Series(C.DIFFICULTY, ["hard" if k <= 2 else "medium" for k in n_correct], dtype=pl.String),
    )


def errors_frame(pairs: pl.DataFrame) -> pl.DataFrame:
    """Every pair predicted one grade off (best grade first probabilities); the last one right."""
    preds, probs = [], []
    for i, g in enumerate(pairs[C.GRADE].to_list()):
        pred = g if i == pairs.height - 1 else (g - 1 if g > 1 else 2)
        p = [0.05, 0.05, 0.05, 0.05]
        p[4 - pred] = 0.85
        preds.append(pred)
        probs.append(p)
    return pairs.with_columns(
        pl.Series(C.GRADE_PROBS, probs, dtype=pl.List(pl.Float64)),
        pl.Series(C.PRED_GRADE, preds, dtype=pl.Int64),
        (pl.Series(preds) == pairs[C.GRADE]).alias(C.CORRECT),
    )


FRAMES = {"cot": (cot_frame, "sft.parquet"), "prefs": (prefs_frame, "preferences.parquet"),
          "hard": (hard_frame, "difficulty.parquet"), "errors": (errors_frame, "predictions.parquet")}


def write_kind(kind: str, pairs: pl.DataFrame, folder: Path) -> Path:
    """A stage-like output folder for `kind` (the kind's file, a second file beside it, a manifest)."""
    make, name = FRAMES[kind]
    folder.mkdir(parents=True, exist_ok=True)
    make(pairs).write_parquet(folder / name)
    pl.DataFrame({C.PAIR_ID: ["other"]}).write_parquet(folder / "zz_other.parquet")  # must be ignored
    scale = {"name": "taosr4", "grades": [{"value": v, "name": n, "label": str(v)} for v, n in NAMES.items()]}
    made_by = {"teacher": "teacher-model", "student_prompt": {"order": "label_first", "rules": True}}  # facts a pull passes on
    (folder / "manifest.json").write_text(json.dumps({"stage": kind, "grade_scale": scale, **made_by}), encoding="utf-8")
    return folder
