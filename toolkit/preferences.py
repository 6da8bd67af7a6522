"""`toolkit make-prefs`: DPO preference pairs from pass@N rollouts, exactly as TaoSR1.

Per pair (a group of N rollouts of one query-item pair):
* some correct, some wrong -> chosen = an own correct sample, rejected = an own wrong sample;
* all wrong -> chosen = a teacher answer written for the gold grade, rejected = an own wrong sample
  (no teacher: the group is dropped and counted);
* all correct -> no pair (paper-silent; our default).

Choices (MakePrefsConfig):
* `pairs_per_prompt` k: up to k pairs per group. Pair i takes the (i mod #chosen)-th chosen and the
  (i mod #rejected)-th rejected candidate, for i < min(k, max(#chosen, #rejected)): every wrong sample
  is used at most once while there are enough; a lone correct sample (or the teacher answer) is reused.
* `reject`: `farthest` ranks wrong samples by |predicted - gold| grade, largest first, ties by lowest
  sample index (deterministic); `nearest` smallest first (the wrong grade closest to gold: the 3-vs-4
  confusions TaoSR1 targets); `random` ranks them by a seeded hash of (pair id, sample index).
* A correct sample cut at the token limit (`finish_reason` length) is never chosen: it would teach the
  model to stop mid-sentence (`dropped_chosen_truncated` counts mixed groups left without a chosen
  sample). The manifest reports the mean length in characters of chosen and rejected answers, overall and
  per chosen source (`length_chars`): teacher answers much longer than own rollouts are a length confound.
  Chosen samples go in sample order (`farthest`) or by the same seeded hash (`random`).
* `unparseable`: unparseable samples are always wrong. `fallback` (default) ranks them after every
  parseable wrong sample, so they are rejected only when a group has fewer than k parseable wrong
  ones (with k=1: none): grade mistakes, the signal TaoSR1 targets, come first, and a group whose
  only mistakes are format errors still teaches "prefer a well-formed correct answer". `never`
  excludes them (a group left without a rejectable sample is dropped, `dropped_no_rejectable`);
  `always` treats them as the farthest wrong answers.
* `dedupe`: identical texts within a group count once (`duplicate_samples`), so no two pairs repeat.
* `balance`: equal numbers of query-item pairs per gold grade (`dropped_balance`); off by default.

Teacher answers come from a callable `teacher(rows) -> texts`: rows are prompts.parquet rows as
dicts (pair id, prompt, gold grade, pair text columns), texts are label-first answers for the gold
grade. An answer that does not parse to the gold grade is dropped, counted by cause (`teacher_status`:
wrong_grade, truncated_step, or a parse status). Answers, with the raw output of dropped ones, are kept in
teacher_answers.parquet and reused for the same `teacher_id`, also after the teacher fails midway.

The heavy part is two lazy passes over rollouts.parquet: ranking without the texts, then fetching the picked
texts. Inputs over `part_rows` rollouts go by pair-id ranges (toolkit.core.parts), so memory stays bounded
(100M rollouts: 5.7 GB peak, benchmarks/README.md); the pairs are the same as in one pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.stagefolder import (input_hashes, Key, recorded_result, scale_of, StageConfig, StageFolder,
                                      StageResult, write_parquet, write_stage, writes_output)
from toolkit.core.parsing import OK
from toolkit.core.parts import check_part_rows, join_parts, n_rows, pair_parts, part_file, PART_HELP, PART_ROWS
from toolkit.rollouts import check_pairs, input_files, pass_rates, scan_regraded
from toolkit.core.stagefolder.files import PREFS_FILE, TEACHER_FILE
from toolkit.teacher import ANSWERS_SCHEMA, dropped_summary, partial_file, Teacher, teacher_answers, teacher_cache

log = logging.getLogger(__name__)

REJECT_MODES = ("farthest", "nearest", "random")
UNPARSEABLE_MODES = ("fallback", "never", "always")
SELF, TEACHER = "self", "teacher"
STAGE = "make-prefs"
_KIND = "_kind"
MIXED, ALL_WRONG, ALL_CORRECT = "mixed", "all_wrong", "all_correct"


@dataclass
class MakePrefsConfig(StageConfig):
    rollouts: str  # a rollouts folder (rollouts.parquet + prompts.parquet)
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder (gets preferences.parquet, teacher_answers.parquet).")
    pairs_per_prompt: int = opt(1, flags=("-p", "--pairs-per-prompt"), show_default=True,
                                help="Up to this many preference pairs per query-item pair.")
    reject: str = opt("farthest", choices=REJECT_MODES, show_default=True,
                      help="Which wrong sample is rejected: the grade farthest from gold, the nearest (3-vs-4 "
                           "confusions; ties: lowest sample index) or a seeded random one.")
    # may unparseable samples be rejected?
    unparseable: str = opt("fallback", choices=UNPARSEABLE_MODES, show_default=True,
                           help="Unparseable samples (always wrong) as rejected: after all parseable wrong ones, "
                                "never, or first.")
    dedupe: bool = opt(True, show_default=True, help="Identical texts within a group count once.")
    seed: int = opt(0, show_default=True, help="Seed of --reject random and of --balance.")
    balance: bool = opt(False, help="Keep equal numbers of query-item pairs per gold grade (seeded; a pair's rows "
                                    "stay together): else DPO learns the majority grade from the label token.")
    teacher_id: str | None = None  # names the teacher in the manifest; cached answers are reused only for the same id
    teacher_batch_size: int = opt(64, show_default=True, help="Rows per teacher call.")
    gold: str | None = opt(None, type="path",  # rollouts re-marked against their grades
                           help="Corrected pairs from `toolkit review apply`: rollouts are re-marked correct against "
                                "their grades and pairs they exclude are left out.")
    part_rows: int = opt(PART_ROWS, show_default=True, help=PART_HELP)
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def __post_init__(self):
        self.rollouts, self.out = str(self.rollouts), str(self.out)
        self.part_rows = check_part_rows(self.part_rows)
        if int(self.pairs_per_prompt) < 1:
            raise UserError(f"pairs_per_prompt must be >= 1; got {self.pairs_per_prompt}")
        if self.reject not in REJECT_MODES:
            raise UserError(f"reject must be one of {', '.join(REJECT_MODES)}; got {self.reject!r}")
        if self.unparseable not in UNPARSEABLE_MODES:
            raise UserError(f"unparseable must be one of {', '.join(UNPARSEABLE_MODES)}; got {self.unparseable!r}")
        if int(self.teacher_batch_size) < 1:
            raise UserError(f"teacher_batch_size must be >= 1; got {self.teacher_batch_size}")

    NOT_HASHED = ("force", "teacher_batch_size", "part_rows")


@dataclass
class MakePrefsResult(StageResult):
    STAGE = STAGE

    def brief(self) -> str:
        return f"{self.counts.get('pairs', 0)} pairs"

    def headline(self) -> str:
        c = self.counts
        gap = (c.get("length_chars") or {}).get("gap_mean")
        gap = f"; chosen - rejected length {gap:+.0f} chars" if gap is not None else ""
        return (f"{c['prompts']} prompts -> {c['pairs']} preference pairs ({c['pairs_self']} self, "
                f"{c['pairs_teacher']} teacher{gap}{dropped_summary(c.get('teacher_status'))})")


# -- ranking (pass 1, no texts) ------------------------------------------------------
# Group keys on the 10M-row side are a 64-bit hash of the pair id (`_gid`): grouping on it is several
# times faster than on strings. A collision between two of the pairs would be caught in group_kinds.

USED_COLUMNS = [C.PAIR_ID, C.SAMPLE_IDX, C.TEXT, C.FINISH_REASON, C.PARSE_STATUS, C.PRED_GRADE, C.GRADE, C.CORRECT]
_GID = "_gid"
_GID_SEED = 20250817
_DIST_CAP = 2047  # |pred - gold| is capped here; "always" puts unparseable samples at the cap (farthest)


def _gid() -> pl.Expr:
    return pl.col(C.PAIR_ID).hash(seed=_GID_SEED).alias(_GID)


def group_kinds(rollouts: pl.LazyFrame, prompt_ids: pl.LazyFrame) -> pl.DataFrame:
    """Per pair with rollouts: grade, n_samples, n_correct, pass_rate, kind, whether it has a prompt, and `_gid`."""
    kinds = (
        pass_rates(rollouts)
        .join(prompt_ids.select(C.PAIR_ID).unique().with_columns(pl.lit(True).alias("_has_prompt")), on=C.PAIR_ID,
              how="left")
        .with_columns(
            pl.col("_has_prompt").fill_null(False),
            pl.when(pl.col(C.N_CORRECT) == 0).then(pl.lit(ALL_WRONG))
            .when(pl.col(C.N_CORRECT) == pl.col(C.N_SAMPLES)).then(pl.lit(ALL_CORRECT))
            .otherwise(pl.lit(MIXED)).alias(_KIND),
            _gid(),
        )
        .collect()
    )
    if kinds[_GID].n_unique() != kinds.height:  # about 1 in 10^7 for a million pairs
        raise RuntimeError("two pair ids share a 64-bit hash; change _GID_SEED in toolkit/preferences.py")
    return kinds


def _useful(kinds: pl.DataFrame) -> pl.DataFrame:
    return kinds.filter(pl.col("_has_prompt") & (pl.col(_KIND) != ALL_CORRECT))


def _candidates(rollouts: pl.LazyFrame, kinds: pl.DataFrame, cfg: MakePrefsConfig) -> pl.LazyFrame:
    """Samples of groups that can give pairs, with a ranking key `_key` (smaller = first); duplicates
    removed when dedupe is on. Correct samples only occur in mixed groups of these."""
    parsed = ((pl.col(C.PARSE_STATUS) == OK) & pl.col(C.PRED_GRADE).is_not_null()).fill_null(False)
    has_finish = C.FINISH_REASON in rollouts.collect_schema().names()
    cut = (pl.col(C.FINISH_REASON) == "length").fill_null(False) if has_finish else pl.lit(False)
    lf = rollouts.select(
        _gid(), pl.col(C.SAMPLE_IDX).cast(pl.Int64), C.CORRECT, C.PRED_GRADE, C.GRADE, parsed.alias("_parsed"),
        cut.alias("_cut"), pl.col(C.TEXT).fill_null("").hash(seed=0).alias("_text_hash"),
    ).filter(pl.col(_GID).is_in(_useful(kinds)[_GID].implode()))
    if cfg.dedupe:
        lf = lf.filter(pl.col(C.SAMPLE_IDX) == pl.col(C.SAMPLE_IDX).min().over(_GID, "_text_hash"))
    prio = pl.when(pl.col("_parsed")).then(0).otherwise(1) if cfg.unparseable == "fallback" else pl.lit(0)
    dist = (pl.col(C.PRED_GRADE) - pl.col(C.GRADE)).abs().clip(0, _DIST_CAP - 1).fill_null(0)
    if cfg.unparseable == "always":
        dist = pl.when(pl.col("_parsed")).then(dist).otherwise(_DIST_CAP)
    if cfg.reject == "farthest":  # prio, then distance (largest first), then sample index
        key = (_DIST_CAP - dist).cast(pl.UInt64) * (1 << 48) + pl.col(C.SAMPLE_IDX).cast(pl.UInt64)
        chosen_key = pl.col(C.SAMPLE_IDX).cast(pl.UInt64)
    elif cfg.reject == "nearest":  # prio, then distance (smallest first), then sample index
        key = dist.cast(pl.UInt64) * (1 << 48) + pl.col(C.SAMPLE_IDX).cast(pl.UInt64)
        chosen_key = pl.col(C.SAMPLE_IDX).cast(pl.UInt64)
    else:  # prio, then a seeded hash of (pair, sample)
        key = chosen_key = pl.struct(_GID, C.SAMPLE_IDX).hash(seed=cfg.seed) // 32
    key = prio.cast(pl.UInt64) * (1 << 59) + key
    return lf.with_columns(pl.when(pl.col(C.CORRECT)).then(chosen_key).otherwise(key).alias("_key"))


def _ranked(lf: pl.LazyFrame, k: int, name: str) -> pl.LazyFrame:
    """Per group: the sample indices of the first k candidates by `_key`."""
    return lf.group_by(_GID).agg(pl.col(C.SAMPLE_IDX).sort_by("_key", C.SAMPLE_IDX).head(k).alias(f"_{name}_idx"))


def pick(rollouts: pl.LazyFrame, kinds: pl.DataFrame, cfg: MakePrefsConfig) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Ranked chosen candidates (mixed groups) and rejected candidates (all groups), at most k each,
    keyed by `_gid`, and the number of duplicate samples skipped."""
    k = int(cfg.pairs_per_prompt)
    cand = _candidates(rollouts, kinds, cfg)
    wrong = cand.filter(~pl.col(C.CORRECT))
    if cfg.unparseable == "never":
        wrong = wrong.filter(pl.col("_parsed"))
    # never a correct answer cut mid-sentence
    chosen = _ranked(cand.filter(pl.col(C.CORRECT) & ~pl.col("_cut")), k, "chosen")
    rejected = _ranked(wrong, k, "rejected")
    chosen_df, rejected_df, kept = pl.collect_all([chosen, rejected, cand.select(pl.len())])
    return chosen_df, rejected_df, int(_useful(kinds)[C.N_SAMPLES].sum() - kept.item())


# -- assembling the pairs (pass 2: texts of the picked samples) -----------------------------


def _pair_index(chosen: pl.DataFrame, rejected: pl.DataFrame, teacher: pl.DataFrame,
                kinds: pl.DataFrame) -> pl.DataFrame:
    """One row per preference pair, sorted: pair id, pair number, source, chosen/rejected sample index,
    teacher text, and the pair's stats."""
    nc, nr = pl.col("_chosen_idx").list.len(), pl.col("_rejected_idx").list.len()
    own = (
        chosen.join(rejected, on=_GID, how="inner")
        .with_columns(pl.int_ranges(0, pl.max_horizontal(nc, nr)).alias("_i"))
        .explode("_i")
        .select(
            _GID, "_i", pl.lit(SELF).alias(C.CHOSEN_SOURCE),
            pl.col("_chosen_idx").list.get(pl.col("_i") % nc).alias(C.CHOSEN_SAMPLE_IDX),
            pl.col("_rejected_idx").list.get(pl.col("_i") % nr).alias(C.REJECTED_SAMPLE_IDX),
            pl.lit(None, dtype=pl.String).alias("_teacher_text"),
        )
    )
    answers = teacher.filter("valid").join(kinds.select(C.PAIR_ID, _GID), on=C.PAIR_ID).select(
        _GID, pl.col(C.TEXT).alias("_teacher_text"))
    taught = (
        rejected.join(answers, on=_GID, how="inner")
        .with_columns(pl.int_ranges(0, nr).alias("_i"))
        .explode("_i")
        .select(
            _GID, "_i", pl.lit(TEACHER).alias(C.CHOSEN_SOURCE),
            pl.lit(None, dtype=pl.Int64).alias(C.CHOSEN_SAMPLE_IDX),
            pl.col("_rejected_idx").list.get(pl.col("_i")).alias(C.REJECTED_SAMPLE_IDX), "_teacher_text",
        )
    )
    stats = kinds.select(_GID, C.PAIR_ID, C.GRADE, C.PASS_RATE, C.N_SAMPLES, C.N_CORRECT)
    return pl.concat([own, taught]).join(stats, on=_GID).sort(C.PAIR_ID, "_i")


def _assistant(col: str) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), pl.col(col).alias("content")))


def assemble(index: pl.DataFrame, rollouts: pl.LazyFrame, prompts: pl.LazyFrame) -> pl.LazyFrame:
    """The preference rows in TRL's conversational format plus provenance, in index order."""
    picked = pl.concat([
        index.select(_GID, pl.col(C.CHOSEN_SAMPLE_IDX).alias(C.SAMPLE_IDX)).drop_nulls(),
        index.select(_GID, pl.col(C.REJECTED_SAMPLE_IDX).alias(C.SAMPLE_IDX)),
    ]).unique()
    # A streaming filter on a hash of (pair, sample) keeps memory low; the joins below are exact.
    row_key = pl.struct(_GID, C.SAMPLE_IDX).hash(seed=1)
    texts = (
        rollouts.select(_gid(), pl.col(C.SAMPLE_IDX).cast(pl.Int64), C.TEXT, C.PRED_GRADE, C.PARSE_STATUS)
        .filter(row_key.is_in(picked.select(row_key).to_series().implode()))
        .collect(engine="streaming")
    )
    chosen = texts.lazy().select(_GID, pl.col(C.SAMPLE_IDX).alias(C.CHOSEN_SAMPLE_IDX),
                                 pl.col(C.TEXT).alias("_chosen_text"))
    rejected = texts.lazy().select(
        _GID, pl.col(C.SAMPLE_IDX).alias(C.REJECTED_SAMPLE_IDX), pl.col(C.TEXT).fill_null("").alias("_rejected_text"),
        pl.col(C.PRED_GRADE).alias(C.REJECTED_GRADE), pl.col(C.PARSE_STATUS).alias(C.REJECTED_PARSE_STATUS),
    )
    return (
        index.lazy()
        .join(chosen, on=[_GID, C.CHOSEN_SAMPLE_IDX], how="left", maintain_order="left")
        .join(rejected, on=[_GID, C.REJECTED_SAMPLE_IDX], how="inner", maintain_order="left")
        .join(prompts.select(C.PAIR_ID, C.PROMPT), on=C.PAIR_ID, how="inner", maintain_order="left")
        .with_columns(pl.coalesce("_teacher_text", "_chosen_text").fill_null("").alias("_chosen_text"))
        .filter(pl.col("_chosen_text") != pl.col("_rejected_text"))
        .select(
            C.PROMPT, _assistant("_chosen_text").alias(C.CHOSEN), _assistant("_rejected_text").alias(C.REJECTED),
            C.PAIR_ID, C.GRADE, C.CHOSEN_SOURCE, pl.col(C.GRADE).alias(C.CHOSEN_GRADE), C.REJECTED_GRADE, C.PASS_RATE,
            C.N_SAMPLES, C.N_CORRECT, C.CHOSEN_SAMPLE_IDX, C.REJECTED_SAMPLE_IDX, C.REJECTED_PARSE_STATUS,
        )
    )


# -- the stage -------------------------------------------------------------------------------


def length_report(path: Path) -> dict:
    """Mean length in characters of chosen and rejected answers, overall and per chosen source."""
    content = lambda col: pl.col(col).list.first().struct.field("content").str.len_chars()  # noqa: E731
    lf = pl.scan_parquet(path).select(C.CHOSEN_SOURCE, content(C.CHOSEN).alias("c"), content(C.REJECTED).alias("r"))

    def row(df: pl.DataFrame) -> dict:
        c, r = df["c"].mean(), df["r"].mean()
        return {"pairs": df.height, "chosen_mean": None if c is None else round(c, 1),
                "rejected_mean": None if r is None else round(r, 1),
                "gap_mean": None if c is None else round(c - r, 1)}

    df = lf.collect()
    return {**row(df), "by_source": {src: row(df.filter(pl.col(C.CHOSEN_SOURCE) == src))
                                     for src in sorted(set(df[C.CHOSEN_SOURCE]))}}


def _group_counts(kinds: pl.DataFrame, n_prompts: int, rejected: pl.DataFrame) -> dict:
    has = kinds.filter("_has_prompt").with_columns(pl.col(_GID).is_in(rejected[_GID].implode()).alias("_rej"))
    n = lambda expr: int(has.filter(expr).height)  # noqa: E731
    return {
        "prompts": n_prompts,
        "dropped_no_rollouts": n_prompts - has.height,
        "dropped_no_prompt": kinds.height - has.height,
        "dropped_all_correct": n(pl.col(_KIND) == ALL_CORRECT),
        "dropped_no_rejectable": n((pl.col(_KIND) != ALL_CORRECT) & ~pl.col("_rej")),
        "groups_self": n((pl.col(_KIND) == MIXED) & pl.col("_rej")),
    }


def _teacher_table(prompts: pl.LazyFrame, kinds: pl.DataFrame, rejected: pl.DataFrame, teacher: Teacher | None,
                   cfg: MakePrefsConfig, counts: dict, known: dict) -> pl.DataFrame:
    need = kinds.filter(pl.col("_has_prompt") & (pl.col(_KIND) == ALL_WRONG)).join(rejected.select(_GID), on=_GID)
    empty = pl.DataFrame(schema=ANSWERS_SCHEMA)
    counts.update(dropped_all_wrong_no_teacher=0, dropped_teacher_invalid=0, groups_teacher=0)
    if need.height == 0:
        return empty
    if teacher is None:
        counts["dropped_all_wrong_no_teacher"] = need.height
        return empty
    rows = prompts.join(need.lazy().select(C.PAIR_ID), on=C.PAIR_ID, how="semi").sort(C.PAIR_ID).collect().to_dicts()
    scale = scale_of(cfg.rollouts)
    answers = teacher_answers(rows, teacher, cfg, {g.value: g.label for g in scale.grades}, scale.labels, known)
    counts["groups_teacher"] = int(answers["valid"].sum())
    counts["dropped_teacher_invalid"] = answers.height - counts["groups_teacher"]
    return answers


def _part_pairs(rollouts: pl.LazyFrame, prompts: pl.LazyFrame, teacher: Teacher | None, cfg: MakePrefsConfig,
                known: dict, path: Path) -> tuple[dict, pl.DataFrame]:
    """The preference pairs of one part of the pairs, written to `path`; its counts and teacher answers."""
    kinds = group_kinds(rollouts, prompts.select(C.PAIR_ID))
    n_prompts = check_pairs(prompts, kinds, cfg.rollouts)
    chosen, rejected, dups = pick(rollouts, kinds, cfg)
    counts = _group_counts(kinds, n_prompts, rejected)
    answers = _teacher_table(prompts, kinds, rejected, teacher, cfg, counts, known)
    index = _pair_index(chosen, rejected, answers, kinds)
    counts["duplicate_samples"] = dups
    cutoff = kinds.filter(pl.col("_has_prompt") & (pl.col(_KIND) == MIXED)
                          & pl.col(_GID).is_in(rejected[_GID].implode())
                          & ~pl.col(_GID).is_in(chosen[_GID].implode())).height
    counts["dropped_chosen_truncated"] = cutoff
    counts["groups_self"] -= cutoff
    counts["_index"] = index.height
    assemble(index, rollouts, prompts).sink_parquet(path, compression="zstd", statistics=True)
    return counts, answers


@writes_output(STAGE)
def make_preferences(cfg: MakePrefsConfig, teacher: Teacher | None = None) -> MakePrefsResult:
    """Build DPO preference pairs from a rollouts folder; see the module docstring for the rules."""
    inputs = input_hashes(input_files(cfg.rollouts) + ([cfg.gold] if cfg.gold else []))
    done = recorded_result(MakePrefsResult, cfg, inputs)
    if done is not None:
        return done
    upstream = StageFolder.open(cfg.rollouts)
    rollouts, prompts, regraded = scan_regraded(cfg.rollouts, cfg.gold)
    rollouts = rollouts.select(c for c in USED_COLUMNS if c in rollouts.collect_schema().names())

    def write(tmp: Path) -> tuple[dict, dict]:
        counts, answers, files, known = {}, [], [], teacher_cache(cfg)
        with pair_parts({"rollouts": rollouts, "prompts": prompts}, n_rows(rollouts), cfg.part_rows,
                        tmp / "_parts", bounds_from="prompts") as parts:
            for i, part in enumerate(parts):
                files.append(part_file(tmp, PREFS_FILE, i, len(parts)))
                c, a = _part_pairs(part["rollouts"], part["prompts"], teacher, cfg, known, files[-1])
                answers.append(a)
                counts = {k: counts.get(k, 0) + v for k, v in c.items()}
            join_parts(files, tmp / PREFS_FILE)
        if cfg.balance:
            from toolkit.difficulty import balance_file

            counts.update(balance_file(tmp / PREFS_FILE, C.CHOSEN_GRADE, upstream.scale().values, cfg.seed))
        counts.update(regraded)
        source = pl.scan_parquet(tmp / PREFS_FILE).group_by(C.CHOSEN_SOURCE).len().collect()
        by = dict(source.iter_rows())
        counts.update(pairs=sum(by.values()), pairs_self=by.get(SELF, 0), pairs_teacher=by.get(TEACHER, 0))
        counts["dropped_identical_texts"] = counts.pop("_index") - counts["pairs"] - counts.get("dropped_balance", 0)
        counts["length_chars"] = length_report(tmp / PREFS_FILE)
        answers = pl.concat(answers)
        if answers.height:
            write_parquet(answers, tmp / TEACHER_FILE)
            counts["teacher_status"] = dict(sorted(answers.group_by("status").len().iter_rows()))
        return counts, {Key.GRADE_SCALE: upstream.scale().to_dict(), "teacher_id": cfg.teacher_id,
                        Key.LINEAGE: upstream.lineage}

    result = write_stage(MakePrefsResult, cfg, inputs, write)
    partial_file(cfg).unlink(missing_ok=True)
    log.info("%s", result.summary())
    return result
