"""Corrected gold: re-mark rows that were graded against an older gold grade.

A review round (`toolkit review apply`) writes the next version of the canonical pairs: some grades
corrected, some pairs excluded as unjudgeable. Rows made before it — rollouts marked `correct`
against the old gold, CoT rationales written for the old grade — are re-marked here instead of
being regenerated: `--gold PAIRS` on make-prefs, label-difficulty and `train sft` reads the new
grades by pair id, replaces `grade`, recomputes `correct`, and leaves out pairs the gold no longer
holds (excluded by reviewers). Any pairs folder or file with `pair_id` and `grade` works as gold.
"""

from __future__ import annotations

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.tables import read_pairs

GOLD_GRADE = "__gold_grade"  # the column of read_gold's grades (beside the rows' own `grade` when joined)


def read_gold(path: str) -> pl.DataFrame:
    """pair_id (String) -> grade (Int64) of a pairs folder or file; a pair id given two grades is an error."""
    df = read_pairs(path, required=[C.PAIR_ID, C.GRADE]).select(pl.col(C.PAIR_ID).cast(pl.String),
                                                                pl.col(C.GRADE).cast(pl.Int64))
    df = df.filter(pl.col(C.GRADE).is_not_null()).unique()
    dup = df.filter(pl.col(C.PAIR_ID).is_duplicated())
    if dup.height:
        raise UserError(f"--gold {path}: pair {dup[C.PAIR_ID][0]!r} has {dup.height} different grades; "
                        "pass one version of the pairs")
    return df.rename({C.GRADE: GOLD_GRADE})


def regrade(lf: pl.LazyFrame, gold: pl.DataFrame, correct: bool = False) -> pl.LazyFrame:
    """Rows of pairs the gold holds, with `grade` from the gold (and `correct` = pred_grade == grade when asked)."""
    cols = lf.collect_schema().names()
    key_type = lf.collect_schema()[C.PAIR_ID]
    g = gold.lazy().with_columns(pl.col(C.PAIR_ID).cast(key_type))
    out = (lf.join(g, on=C.PAIR_ID, how="inner", maintain_order="left")
           .with_columns(pl.col(GOLD_GRADE).alias(C.GRADE)).drop(GOLD_GRADE))
    if correct and C.CORRECT in cols:
        out = out.with_columns((pl.col(C.PRED_GRADE).is_not_null() & (pl.col(C.PRED_GRADE) == pl.col(C.GRADE)))
                               .alias(C.CORRECT))
    return out.select(cols)


def gold_counts(before: pl.DataFrame, gold: pl.DataFrame) -> dict:
    """How many of `before`'s pairs (pair_id, grade) the gold regrades and excludes."""
    b = before.select(pl.col(C.PAIR_ID).cast(pl.String), pl.col(C.GRADE).cast(pl.Int64)).unique(C.PAIR_ID)
    j = b.join(gold, on=C.PAIR_ID, how="left")
    return {
        "gold_regraded_pairs": int((j[GOLD_GRADE].is_not_null() & (j[GOLD_GRADE] != j[C.GRADE])).sum()),
        "gold_excluded_pairs": int(j[GOLD_GRADE].is_null().sum()),
    }


def regrade_cot(df: pl.DataFrame, gold_path: str, label_only: bool) -> tuple[pl.DataFrame, dict]:
    """SFT rows under corrected gold: pairs the gold excludes leave; a rationale written for a grade the gold
    corrected leaves too (it argues for the old grade), unless only the label is trained (then it takes the new
    grade)."""
    if C.PAIR_ID not in df.columns or C.GRADE not in df.columns:
        raise UserError(f"--gold needs `{C.PAIR_ID}` and `{C.GRADE}` in the SFT rows; found: {', '.join(df.columns)}")
    gold = read_gold(gold_path)
    j = df.with_columns(pl.col(C.PAIR_ID).cast(pl.String).alias("__pid")).join(
        gold.rename({C.PAIR_ID: "__pid"}), on="__pid", how="left", maintain_order="left")
    excluded = j[GOLD_GRADE].is_null()
    changed = ~excluded & (j[GOLD_GRADE] != j[C.GRADE].cast(pl.Int64))
    if bool(excluded.all()):
        raise UserError(f"--gold {gold_path}: none of its pair ids are in the SFT rows; "
                        "pass the corrected version of the pairs gen-cot ran on")
    counts = {"gold_excluded_rows": int(excluded.sum()), "gold_regraded_rows": int(changed.sum())}
    if label_only:
        out = j.filter(~excluded).with_columns(pl.col(GOLD_GRADE).cast(df[C.GRADE].dtype).alias(C.GRADE))
    else:
        out = j.filter(~excluded & ~changed)
        counts["dropped_grade_corrected"] = counts["gold_regraded_rows"]
    return out.drop("__pid", GOLD_GRADE), counts
