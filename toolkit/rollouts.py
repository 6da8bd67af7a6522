"""The rollouts folder: what `toolkit sample` writes and what pass@k, make-prefs and label-difficulty read.

A rollouts folder holds
* `rollouts.parquet`: one row per (pair, sample) with the raw text, finish reason, parse status,
  predicted grade, gold grade, correctness and first-token grade probabilities;
* `prompts.parquet`: one row per pair with the student prompt (chat messages), the gold grade and
  the pair's text columns. A pair may have no rollouts;
* `manifest.json` with the `grade_scale`.

`rollout_rows` turns backend generations into rollouts rows (the parsing half of `toolkit sample`);
`scan_rollouts` / `scan_prompts` read a folder lazily with clear errors; `pass_rates` is the one
per-pair aggregation every consumer shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.generation.base import label_softmax
from toolkit.core.grades import GradeScale
from toolkit.core.parsing import LABEL_FIRST, OK, parse_answer
from toolkit.core.stagefolder.files import PROMPTS_FILE, ROLLOUTS_FILE

if TYPE_CHECKING:
    from toolkit.generation.base import Generation

REQUIRED_ROLLOUT_COLUMNS = [C.PAIR_ID, C.SAMPLE_IDX, C.TEXT, C.PARSE_STATUS, C.PRED_GRADE, C.GRADE, C.CORRECT]
REQUIRED_PROMPT_COLUMNS = [C.PAIR_ID, C.PROMPT, C.GRADE]
ROLLOUT_SCHEMA = {
    C.PAIR_ID: pl.String,
    C.SAMPLE_IDX: pl.Int32,
    C.TEXT: pl.String,
    C.FINISH_REASON: pl.String,
    C.PARSE_STATUS: pl.String,
    C.PRED_GRADE: pl.Int64,
    C.GRADE: pl.Int64,
    C.CORRECT: pl.Boolean,
    C.GRADE_PROBS: pl.List(pl.Float64),
}


# -- writing (the non-model half of `toolkit sample`) ---------------------------------


def grade_probs(logprobs: dict[str, float] | None, scale: GradeScale) -> list[float] | None:
    """Softmax of the grade labels' first-token log-probabilities, in scale order (best first)."""
    return label_softmax(logprobs, scale.labels)


def rollout_rows(pair_ids: Sequence[str], grades: Sequence[int], generations: "Sequence[Generation]",
                 scale: GradeScale, order: str = LABEL_FIRST) -> pl.DataFrame:
    """Rollouts rows for generations of the given pairs: parsed, graded against gold, with grade probabilities."""
    if not len(pair_ids) == len(grades) == len(generations):
        raise ValueError(f"pair_ids, grades and generations differ in length: {len(pair_ids)}, {len(grades)}, "
                         f"{len(generations)}")
    value_of = {g.label: g.value for g in scale.grades}
    rows = []
    for pid, gold, gen in zip(pair_ids, grades, generations):
        lps = gen.grade_logprobs or [None] * len(gen.texts)
        for i, (text, finish) in enumerate(zip(gen.texts, gen.finish_reasons)):
            parsed = parse_answer(text, scale.labels, order, finish)
            pred = value_of[parsed.label] if parsed.status == OK else None
            rows.append((pid, i, text, finish, parsed.status, pred, int(gold), pred is not None and pred == int(gold),
                         grade_probs(lps[i], scale)))
    return pl.DataFrame(rows, schema=ROLLOUT_SCHEMA, orient="row")


# -- reading ------------------------------------------------------------------------


def _scan(folder: "str | Path", name: str, required: list[str], made_by: str) -> pl.LazyFrame:
    folder = Path(folder)
    path = folder / name if folder.is_dir() else folder
    if not folder.exists():
        raise UserError(f"{folder}: no such folder; pass the output folder of `toolkit sample`")
    if not path.exists():
        raise UserError(f"{folder}: no {name} in this folder; pass the output folder of `{made_by}`")
    try:
        lf = pl.scan_parquet(path)
        names = lf.collect_schema().names()
    except Exception as e:  # polars raises several types for corrupt files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: cannot read Parquet ({msg[:160]}); the file is truncated or corrupt, "
                        "re-create it") from None
    missing = [c for c in required if c not in names]
    if missing:
        raise UserError(f"{path}: column(s) {', '.join(missing)} missing; found: {', '.join(names)}; "
                        f"pass a rollouts folder written by `{made_by}`")
    return lf


def scan_rollouts(folder: "str | Path") -> pl.LazyFrame:
    """rollouts.parquet of a rollouts folder (or the file itself), lazily; `correct` null counts as false."""
    lf = _scan(folder, ROLLOUTS_FILE, REQUIRED_ROLLOUT_COLUMNS, "toolkit sample")
    return lf.with_columns(pl.col(C.CORRECT).fill_null(False))


def scan_prompts(folder: "str | Path") -> pl.LazyFrame:
    """prompts.parquet of a rollouts folder, lazily."""
    return _scan(folder, PROMPTS_FILE, REQUIRED_PROMPT_COLUMNS, "toolkit sample")


def scan_regraded(folder: "str | Path", gold: "str | None" = None) -> tuple[pl.LazyFrame, pl.LazyFrame, dict]:
    """Rollouts and prompts of a folder; with `gold` (corrected pairs, `toolkit review apply`), re-marked against
    its grades: `grade` replaced, `correct` recomputed, pairs the gold lacks left out. Returns the counts too."""
    rollouts, prompts = scan_rollouts(folder), scan_prompts(folder)
    if not gold:
        return rollouts, prompts, {}
    from toolkit.core.gold import gold_counts, read_gold, regrade

    g = read_gold(gold)
    counts = gold_counts(prompts.select(C.PAIR_ID, C.GRADE).collect(), g)
    if counts["gold_excluded_pairs"] == prompts.select(pl.len()).collect().item():
        raise UserError(f"--gold {gold}: none of its pair ids are in {folder}; "
                        "pass the corrected version of the pairs these rollouts were sampled from")
    return regrade(rollouts, g, correct=True), regrade(prompts, g), counts


def input_files(folder: "str | Path") -> list[Path]:
    """The files of a rollouts folder a stage depends on (for the manifest's input hashes)."""
    folder = Path(folder)
    return [p for p in (folder / ROLLOUTS_FILE, folder / PROMPTS_FILE) if p.exists()]


def pass_rates(rollouts: pl.LazyFrame) -> pl.LazyFrame:
    """Per pair: gold grade, number of samples, number correct and pass rate (unparseable = wrong)."""
    return rollouts.group_by(C.PAIR_ID).agg(
        pl.col(C.GRADE).first(),
        pl.len().cast(pl.Int64).alias(C.N_SAMPLES),
        pl.col(C.CORRECT).sum().cast(pl.Int64).alias(C.N_CORRECT),
    ).with_columns((pl.col(C.N_CORRECT) / pl.col(C.N_SAMPLES)).alias(C.PASS_RATE))


def check_pairs(prompts: pl.LazyFrame, stats: pl.DataFrame, folder: "str | Path") -> int:
    """Fail on repeated pair ids in prompts.parquet or gold grades that differ between the two files;
    return the number of prompts. `stats` is pass_rates(...) collected."""
    ids = prompts.select(C.PAIR_ID, C.GRADE).collect()
    dup = ids.filter(pl.col(C.PAIR_ID).is_duplicated())
    if dup.height:
        raise UserError(f"{folder}: pair id {dup[C.PAIR_ID][0]!r} has {(dup[C.PAIR_ID] == dup[C.PAIR_ID][0]).sum()} "
                        f"rows in {PROMPTS_FILE}; each pair needs exactly one")
    bad = stats.select(C.PAIR_ID, C.GRADE).join(ids, on=C.PAIR_ID, suffix="_prompt").filter(
        pl.col(C.GRADE) != pl.col(f"{C.GRADE}_prompt"))
    if bad.height:
        pid, g, gp = bad.row(0)
        raise UserError(f"{folder}: pair {pid!r} has gold grade {g} in {ROLLOUTS_FILE} but {gp} in {PROMPTS_FILE} "
                        f"({bad.height} pairs differ); re-run `toolkit sample`")
    return ids.height

