"""`toolkit label-difficulty`: pass rate per pair, difficulty buckets and the GRPO training set.

TaoSR1 stage 3. A pair's difficulty is its pass rate over its G rollouts (unparseable = wrong).
GRPO trains only on pairs with `0 < n_correct < gamma * G` (DAPO-style: groups that are all right
or all wrong give no advantage signal); the paper's team used a pass-rate window [0.01, 0.9] at G=16,
so gamma defaults to 0.9 (gamma=1 keeps everything but the all-right groups). The comparison is
strict with a tolerance, so gamma=0.7 at G=10 drops n_correct=7.

Class balance: the paper's best mix has equal counts per gold grade (CV = 0, macro-F1 67.12 with the
least data). With `balance` on, every grade present in the window is downsampled to the rarest one's
count, by a seeded hash of the pair id (deterministic, independent of row order). A grade of the
dataset that has no pair in the window cannot be balanced in: it is reported (`grades_absent`) and
the others are balanced among themselves.

The coefficient of variation (population std / mean) of the per-grade counts is reported for all
pairs, the window (before balancing) and the GRPO set (after), over the grades that occur among the
labelled pairs (a grade absent from the set counts as 0, so CV = 0 means truly balanced).

Buckets: names with inclusive upper bounds of the pass rate, e.g. the default
`unsolved=0,hard=0.4,medium=0.8,easy=1`: unsolved = 0, hard in (0, 0.4], medium in (0.4, 0.8],
easy in (0.8, 1]. Pairs without rollouts get no pass rate and no bucket.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.parts import check_part_rows, join_parts, n_rows, pair_parts, part_file, PART_HELP, PART_ROWS
from toolkit.core.stagefolder import (input_hashes, Key, recorded_result, StageConfig, StageFolder, StageResult,
                                      write_parquet, write_stage, writes_output)
from toolkit.rollouts import check_pairs, input_files, pass_rates, scan_regraded
from toolkit.core.stagefolder.files import DIFFICULTY_FILE, GRPO_FILE

log = logging.getLogger(__name__)

STAGE = "label-difficulty"
DEFAULT_GAMMA = 0.9
DEFAULT_BUCKETS = "unsolved=0,hard=0.4,medium=0.8,easy=1"
_EPS = 1e-9


def parse_buckets(spec: "str | dict") -> dict[str, float]:
    """`name=upper,...` (or a mapping) -> {name: inclusive upper bound}, checked."""
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in (p.strip() for p in str(spec).split(",")):
            if part:
                name, sep, edge = part.rpartition("=")
                if not sep or not name.strip():
                    raise UserError(f"--buckets entry {part!r} needs the form name=upper_bound, "
                                    f"e.g. {DEFAULT_BUCKETS}")
                items.append((name.strip(), edge))
    try:
        buckets = {str(n): float(e) for n, e in items}
    except ValueError:
        raise UserError(f"--buckets {spec!r}: bounds must be numbers, e.g. {DEFAULT_BUCKETS}") from None
    edges = list(buckets.values())
    if len(buckets) != len(items) or not buckets:
        raise UserError(f"--buckets {spec!r}: give each bucket once, e.g. {DEFAULT_BUCKETS}")
    if any(not 0 <= e <= 1 for e in edges) or edges != sorted(set(edges)) or edges[-1] != 1:
        raise UserError(f"--buckets {spec!r}: bounds must increase strictly within [0, 1] and the last must be 1, "
                        f"e.g. {DEFAULT_BUCKETS}")
    return buckets


@dataclass
class LabelDifficultyConfig(StageConfig):
    rollouts: str  # a rollouts folder (rollouts.parquet + prompts.parquet)
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder (gets difficulty.parquet and grpo.parquet).")
    gamma: float = opt(DEFAULT_GAMMA, show_default=True,  # keep 0 < n_correct < gamma * n_samples
                       help="GRPO keeps pairs with 0 < n_correct < gamma * G "
                            "(TaoSR1's team: pass-rate window [0.01, 0.9]).")
    buckets: "str | dict" = opt(DEFAULT_BUCKETS, show_default=True,
                                help="Difficulty buckets: names with inclusive upper bounds of the pass rate.")
    balance: bool = opt(True, show_default=True, help="Downsample the GRPO set to equal counts per gold grade.")
    seed: int = opt(0, show_default=True, help="Seed of the class-balanced downsampling.")
    gold: str | None = opt(None, type="path",  # pass rates counted against their grades
                           help="Corrected pairs from `toolkit review apply`: rollouts are re-marked correct against "
                                "their grades and pairs they exclude are left out.")
    part_rows: int = opt(PART_ROWS, show_default=True, help=PART_HELP)
    force: bool = opt(False, help="Redo even when the output is up to date.")

    NOT_HASHED = ("force", "part_rows")

    def __post_init__(self):
        self.rollouts, self.out = str(self.rollouts), str(self.out)
        self.part_rows = check_part_rows(self.part_rows)
        try:
            self.gamma = float(self.gamma)
        except (TypeError, ValueError):
            raise UserError(f"gamma must be a number in (0, 1]; got {self.gamma!r}") from None
        if not 0 < self.gamma <= 1:
            raise UserError(f"gamma must be in (0, 1] (keep 0 < n_correct < gamma * G); got {self.gamma}")
        self.buckets = parse_buckets(self.buckets)


@dataclass
class LabelDifficultyResult(StageResult):
    STAGE = STAGE
    SHOW_DROPPED = False  # pairs without rollouts are in the headline

    def brief(self) -> str:
        return f"{self.counts.get('grpo', 0)} GRPO pairs"

    def headline(self) -> str:
        c = self.counts
        cv = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        return (f"{c['pairs']} pairs ({c['dropped_no_rollouts']} without rollouts) -> window {c['window']} "
                f"-> GRPO set {c['grpo']}; grade CV {cv(c['cv_before'])} -> {cv(c['cv_after'])};")

    def where(self) -> str:
        return f"in {self.out}"


def cv(counts: list[int]) -> float | None:
    """Coefficient of variation (population std / mean) of counts; None when there is nothing to count."""
    if not counts or sum(counts) == 0:
        return None
    mean = sum(counts) / len(counts)
    return math.sqrt(sum((x - mean) ** 2 for x in counts) / len(counts)) / mean


def label_pairs(rollouts: pl.LazyFrame, prompts: pl.LazyFrame, cfg: LabelDifficultyConfig) -> tuple[pl.DataFrame, int]:
    """Every pair of prompts.parquet with n_samples, n_correct, pass_rate, difficulty and `_in_window`;
    and the number of pairs with rollouts."""
    stats = pass_rates(rollouts).collect()
    check_pairs(prompts, stats, cfg.rollouts)
    difficulty = pl.lit(None, dtype=pl.String)
    for name, upper in reversed(cfg.buckets.items()):  # the first bucket whose upper bound holds the rate
        difficulty = pl.when(pl.col(C.PASS_RATE) <= upper).then(pl.lit(name)).otherwise(difficulty)
    window = (pl.col(C.N_CORRECT) > 0) & (pl.col(C.N_CORRECT) < pl.col(C.N_SAMPLES) * cfg.gamma - _EPS)
    return (
        prompts.join(stats.lazy().drop(C.GRADE), on=C.PAIR_ID, how="left")
        .with_columns(
            pl.col(C.N_SAMPLES).fill_null(0), pl.col(C.N_CORRECT).fill_null(0),
            pl.when(pl.col(C.PASS_RATE).is_not_null()).then(difficulty).alias(C.DIFFICULTY),
            window.fill_null(False).alias("_in_window"),
        )
        .sort(C.PAIR_ID)
        .collect()
    ), stats.height


def balance(window: pl.DataFrame, grades: list[int], seed: int) -> tuple[pl.DataFrame, list[int]]:
    """Downsample each grade present to the rarest present grade's count; also return the absent grades."""
    have = dict(window.group_by(C.GRADE).len().iter_rows())
    absent = [g for g in grades if not have.get(g)]
    if not have:
        return window, absent
    keep = min(have.values())
    ranked = window.with_columns(pl.col(C.PAIR_ID).hash(seed=seed).alias("_rand")).sort("_rand", C.PAIR_ID)
    out = ranked.filter(pl.int_range(pl.len()).over(C.GRADE) < keep).drop("_rand").sort(C.PAIR_ID)
    return out, absent


def balance_file(path: Path, grade_col: str, grades: list[int], seed: int) -> dict:
    """Rewrite a Parquet file of rows keyed by pair id (several rows a pair allowed), keeping per grade (`grade_col`)
    as many pairs as the rarest grade present has, in the file's row order; make-prefs' --balance."""
    lf = pl.scan_parquet(path).with_row_index("_row")
    ids = lf.select(C.PAIR_ID, pl.col(grade_col).alias(C.GRADE)).unique(C.PAIR_ID).collect()
    kept, absent = balance(ids, grades, seed)
    if absent:
        log.warning("grade(s) %s have no preference pair; balanced over the others", absent)
    tmp = path.with_name(f"_balanced.{path.name}")
    lf.join(kept.lazy().select(C.PAIR_ID), on=C.PAIR_ID, how="semi").sort("_row").drop("_row").sink_parquet(
        tmp, compression="zstd", statistics=True)
    before = pl.scan_parquet(path).select(pl.len()).collect().item()
    tmp.replace(path)
    per = dict(kept.group_by(C.GRADE).len().iter_rows())
    return {"dropped_balance": before - pl.scan_parquet(path).select(pl.len()).collect().item(),
            "balanced_pairs_per_grade": {str(g): int(per.get(g, 0)) for g in grades}}


def _per_grade(df: pl.DataFrame, grades: list[int]) -> dict[int, int]:
    have = dict(df.group_by(C.GRADE).len().iter_rows()) if df.height else {}
    return {g: int(have.get(g, 0)) for g in grades}


def _counts(pairs: pl.DataFrame, window: pl.DataFrame, grpo: pl.DataFrame, grades: list[int],
            n_rollout_groups: int) -> dict:
    has = pairs.filter(pl.col(C.N_SAMPLES) > 0)
    by = [_per_grade(x, grades) for x in (pairs, window, grpo)]
    return {
        "pairs": pairs.height,
        "dropped_no_rollouts": pairs.height - has.height,
        "dropped_no_prompt": n_rollout_groups - has.height,
        "difficulty": {str(k): int(v) for k, v in has.group_by(C.DIFFICULTY).len().sort(C.DIFFICULTY).iter_rows()},
        "dropped_all_wrong": int((has[C.N_CORRECT] == 0).sum()),
        "dropped_above_gamma": has.height - window.height - int((has[C.N_CORRECT] == 0).sum()),
        "window": window.height,
        "dropped_balance": window.height - grpo.height,
        "grpo": grpo.height,
        "grades_all": {str(g): n for g, n in by[0].items()},
        "grades_before": {str(g): n for g, n in by[1].items()},
        "grades_after": {str(g): n for g, n in by[2].items()},
        "cv_all": cv(list(by[0].values())),
        "cv_before": cv(list(by[1].values())),
        "cv_after": cv(list(by[2].values())),
    }


@writes_output(STAGE)
def label_difficulty(cfg: LabelDifficultyConfig) -> LabelDifficultyResult:
    """Write difficulty.parquet (every pair) and grpo.parquet (the GRPO training set); see the module docstring.
    Inputs larger than --part-rows go part by part (pair-id ranges); only the window's ids are balanced at once."""
    inputs = input_hashes(input_files(cfg.rollouts) + ([cfg.gold] if cfg.gold else []))
    done = recorded_result(LabelDifficultyResult, cfg, inputs)
    if done is not None:
        return done
    source = StageFolder.open(cfg.rollouts)
    scale = source.scale()
    rollouts, prompts, regraded = scan_regraded(cfg.rollouts, cfg.gold)
    rollouts = rollouts.select(C.PAIR_ID, C.GRADE, C.CORRECT)
    label = pl.col(C.GRADE).replace_strict({g.value: g.label for g in scale.grades},
                                           return_dtype=pl.String).alias(C.GOLD_LABEL)
    keep = [C.PROMPT, C.PAIR_ID, C.GRADE, C.GOLD_LABEL, C.PASS_RATE, C.N_SAMPLES, C.N_CORRECT, C.DIFFICULTY]

    def write(tmp: Path) -> tuple[dict, dict]:
        stats, windows, n_groups, files = [], [], 0, []
        with pair_parts({"rollouts": rollouts, "prompts": prompts}, n_rows(rollouts), cfg.part_rows,
                        tmp / "_parts", bounds_from="prompts") as parts:
            for i, part in enumerate(parts):
                pairs, n = label_pairs(part["rollouts"], part["prompts"], cfg)
                _check_scale(pairs, scale, cfg)
                n_groups += n
                files.append(part_file(tmp, DIFFICULTY_FILE, i, len(parts)))
                write_parquet(pairs.drop(C.PROMPT, "_in_window").with_columns(label), files[-1])
                stats.append(pairs.select(C.GRADE, C.N_SAMPLES, C.N_CORRECT, C.DIFFICULTY))
                # the window without the prompt and text columns
                windows.append(pairs.filter("_in_window").select(C.PAIR_ID, C.GRADE, C.PASS_RATE, C.N_SAMPLES,
                                                                 C.N_CORRECT, C.DIFFICULTY))
            stats, window = pl.concat(stats), pl.concat(windows)
            grades = [g for g in scale.values if g in set(stats[C.GRADE].to_list())]
            grpo, absent = balance(window, grades, cfg.seed) if cfg.balance else (window, [])
            if absent and cfg.balance:
                log.warning("grade(s) %s have no pair in the GRPO window (0 < n_correct < %g*G); balanced over the "
                            "others", absent, cfg.gamma)
            # the GRPO set with its prompts, part by part (increasing pair-id ranges: concatenated, in order)
            sets = []
            for i, part in enumerate(parts):
                sets.append(part_file(tmp, GRPO_FILE, i, len(parts)))
                rows = part["prompts"].select(C.PAIR_ID, C.PROMPT).join(grpo.lazy(), on=C.PAIR_ID, how="inner",
                                                                         maintain_order="right")
                write_parquet(rows.with_columns(label).select(keep).collect(), sets[-1])
            join_parts(files, tmp / DIFFICULTY_FILE)
            join_parts(sets, tmp / GRPO_FILE)
        counts = _counts(stats, window, grpo, grades, n_groups) | {"grades_absent": absent} | regraded
        return counts, {Key.GRADE_SCALE: scale.to_dict(), Key.LINEAGE: source.lineage}

    result = write_stage(LabelDifficultyResult, cfg, inputs, write)
    log.info("%s", result.summary())
    return result


def _check_scale(pairs: pl.DataFrame, scale, cfg: LabelDifficultyConfig) -> None:
    off = sorted(set(pairs[C.GRADE].drop_nulls().unique().to_list()) - set(scale.values))
    if off:
        raise UserError(f"{cfg.rollouts}: gold grade(s) {off} are not on scale `{scale.name}` "
                        f"(values: {scale.values}); check the rollouts folder's manifest")
