"""`toolkit review select`: the records worth a person's time, under a budget.

From a scored folder (`toolkit score`, the baseline, `toolkit eval`: rows with `grade_probs`) or a
difficulty folder (`toolkit label-difficulty`: rows with `pass_rate`), one policy scores every row and
the budget takes the highest:

- `entropy`: the first-token grade distribution's entropy, over log(number of grades) (1 = no idea);
- `margin`: 1 - (p of the most likely grade - p of the second): close calls first;
- `disagreement`: 1 - p(gold grade): where the model is sure the gold grade is wrong (likely label noise);
- `boundary`: 1 - the distance of the cumulative grade probabilities to the CumPT β (`--tiers` folder of
  `toolkit tier fit`, or `--beta`): rows whose served grade flips with a small change of the model;
- `hard`: 1 - pass rate over the sampled answers (TaoSR1's hard cases);
- `random`: a seeded random control, to measure the others against.

Ties break by a seeded random key. `--stratify grade` shares the budget among the gold grades in
proportion to their rows (largest remainder), so a rare grade is not crowded out; `--max-per-query`
caps the rows of one query. The selection keeps the source's file name and columns (so `toolkit
review push` reads it as the source's kind) plus `select_score` and `select_rank`; the manifest
records the policy, the budget and the source.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.options import opt
from toolkit.core.stagefolder import (files, input_hashes, Key, recorded_result, StageConfig, StageFolder, StageResult,
                                      write_parquet, write_stage, writes_output)
from toolkit.core.tables import read_pairs
from toolkit.core.pairs import query_key, select_split

log = logging.getLogger(__name__)

STAGE = "review-select"
POLICIES = ("entropy", "margin", "disagreement", "boundary", "hard", "random")
SOURCE_FILES = (files.PREDICTIONS_FILE, files.DIFFICULTY_FILE)  # what a scored / difficulty folder holds
SCORE, RANK = "select_score", "select_rank"
HONEYPOT, HONEYPOT_GRADE = C.HONEYPOT, C.HONEYPOT_GRADE


@dataclass
class SelectConfig(StageConfig):
    input: str
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder for the selection (the source's file name and columns, plus select_score and "
                        "select_rank).")
    policy: str = opt("entropy", choices=POLICIES, show_default=True,
                      help="What comes first: uncertain (entropy, margin), likely label noise (disagreement), near "
                           "the CumPT cut (boundary), hard cases (hard), or a seeded random control.")
    budget: str = opt("10%", show_default=True, help="Rows to select: N, or P% of the candidate rows.")
    stratify: str = opt("grade", choices=("grade", "none"), show_default=True,
                        help="Share the budget among the gold grades in proportion to their rows.")
    max_per_query: int | None = opt(None, help="At most this many rows of one query.")
    split: str | None = opt(None, help="Select from this split only (e.g. dev, train).")
    seed: int = opt(0, show_default=True, help="Seed of the random policy and of tie-breaking.")
    # or take it from `tiers`
    beta: float | None = opt(None, help="--policy boundary: the CumPT β, instead of --tiers.")
    # or its tiers.json
    tiers: str | None = opt(None, type="path",
                            help="--policy boundary: a `toolkit tier fit` folder whose fitted β is the cut.")
    honeypots: str | None = opt(None, type="path",  # pairs with trusted grades (an expert-labelled set)
                                help="Pairs with trusted grades (pair_id, grade): gold records mixed into the round "
                                     "to check reviewers.")
    honeypot_rate: float = opt(0.1, show_default=True,
                               help="With --honeypots: the share of the round's records that are honeypots.")
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def __post_init__(self):
        if not 0 < float(self.honeypot_rate) < 1:
            raise UserError("--honeypot-rate must be in (0, 1), the share of the round's records; got "
                            f"{self.honeypot_rate}")
        if self.honeypots and not Path(self.honeypots).exists():
            raise UserError(f"--honeypots {self.honeypots}: no such file or folder; pass pairs with trusted grades "
                            "(pair_id, grade)")
        if self.policy not in POLICIES:
            raise UserError(f"--policy must be one of {', '.join(POLICIES)}; got {self.policy!r}")
        if self.policy == "boundary" and (self.beta is None) == (self.tiers is None):
            raise UserError("--policy boundary needs the CumPT β: pass --tiers out/demo/tiers (a `toolkit tier fit` "
                            "folder) or --beta 0.5, not both")
        if self.beta is not None and not 0 < float(self.beta) < 1:
            raise UserError(f"--beta must be in (0, 1); got {self.beta}")
        if self.stratify not in ("grade", "none"):
            raise UserError(f"--stratify must be grade or none; got {self.stratify!r}")
        if self.max_per_query is not None and self.max_per_query < 1:
            raise UserError(f"--max-per-query must be at least 1; got {self.max_per_query}")
        budget_rows(self.budget, None)  # a malformed budget fails before anything is read


@dataclass
class SelectResult(StageResult):
    STAGE = STAGE

    def brief(self) -> str:
        return f"{self.counts['selected']} rows"

    def headline(self) -> str:
        c = self.counts
        by = ", ".join(f"{g}: {n}" for g, n in c["selected_by_grade"].items())
        hp = f" + {c['honeypots']} honeypots" if c.get("honeypots") else ""
        return (f"{c['selected']} of {c['candidates']} rows by {c['policy']} (score "
                f"{c['score_min']:.3f}-{c['score_max']:.3f}; by grade {by}){hp}")


def budget_rows(budget: str, n: int | None) -> int:
    """`--budget` as a number of rows out of `n` candidates (None: only check it)."""
    text = str(budget).strip()
    try:
        share = float(text[:-1]) if text.endswith("%") else None
        rows = None if share is not None else int(text)
    except ValueError:
        raise UserError(f"--budget {budget!r}: give a number of rows (200) or a share of the rows (10%)") from None
    if (share is not None and not 0 < share <= 100) or (rows is not None and rows < 1):
        raise UserError(f"--budget {budget!r}: give at least 1 row, or a share in (0%, 100%]")
    if n is None:
        return 0
    k = math.floor(n * share / 100 + 1e-9) if share is not None else rows
    if k < 1:
        raise UserError(f"--budget {budget!r} is less than one of the {n} candidate rows; give at least 1 row")
    return min(k, n)


def _source_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in SOURCE_FILES:
        if (path / name).is_file():
            return path / name
    raise UserError(f"{path}: no {' or '.join(SOURCE_FILES)} here; pass the output of `toolkit score`, `toolkit eval` "
                    "or `toolkit label-difficulty`")


def beta_of(cfg: "SelectConfig") -> float | None:
    if cfg.beta is not None or not cfg.tiers:
        return cfg.beta
    import json

    from toolkit.core.stagefolder import StageFolder, files

    path = StageFolder.open(cfg.tiers).file(files.RULE_FILE)
    if not path.is_file():
        raise UserError(f"--tiers {cfg.tiers}: no {files.RULE_FILE}; pass the output folder of `toolkit tier fit`")
    try:
        beta = float(json.loads(path.read_text(encoding="utf-8"))["beta"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not a tier rule (no number `beta`); pass the output folder of "
                        "`toolkit tier fit`") from None
    if not 0.0 < beta <= 1.0:
        raise UserError(f"{path}: beta {beta} is outside (0, 1]; refit with `toolkit tier fit`")
    return beta


def scores(df: pl.DataFrame, policy: str, scale, where: str, seed: int, beta: float | None = None) -> np.ndarray:
    """One number per row; higher = review first."""
    n = df.height
    if policy == "random":
        return np.random.default_rng(seed).random(n)
    if policy == "hard":
        if C.PASS_RATE not in df.columns:
            raise UserError(f"{where}: --policy hard needs a `{C.PASS_RATE}` column (the output of "
                            f"`toolkit label-difficulty`); found: {', '.join(df.columns)}")
        return 1.0 - df[C.PASS_RATE].cast(pl.Float64).fill_null(0.0).to_numpy()
    if C.GRADE_PROBS not in df.columns or df[C.GRADE_PROBS].null_count() == n:
        raise UserError(f"{where}: --policy {policy} needs first-token `{C.GRADE_PROBS}` (the output of "
                        "`toolkit score`); use --policy hard or random, or score with --mode first-token")
    from toolkit.core.metrics import probs_of

    p = probs_of(df, scale)
    if p is None or np.isnan(p).any():
        raise UserError(f"{where}: some rows have no `{C.GRADE_PROBS}`; score every row with --mode first-token")
    if policy == "entropy":
        return -(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=1) / math.log(p.shape[1])
    if policy == "margin":
        top = np.sort(p, axis=1)
        return 1.0 - (top[:, -1] - top[:, -2])
    if policy == "boundary":  # CumPT serves the best grade k with P(top)+...+P(k) >= beta: near beta, the grade flips
        cum = np.cumsum(p, axis=1)[:, :-1]
        return 1.0 - np.abs(cum - float(beta)).min(axis=1)
    gold = df[C.GRADE].to_list()  # disagreement
    index = {g.value: i for i, g in enumerate(scale.grades)}
    return 1.0 - np.array([p[r, index[g]] for r, g in enumerate(gold)])


def choose(df: pl.DataFrame, score: np.ndarray, k: int, stratify: str, max_per_query: int | None,
           seed: int) -> pl.DataFrame:
    """The k rows to review: highest score first (ties by a seeded random key), shared among the gold grades if
    asked."""
    tie = np.random.default_rng(seed + 1).random(df.height)
    ranked = df.with_columns(pl.Series(SCORE, score), pl.Series("__tie", tie),
                             pl.int_range(df.height).alias("__row")).sort([SCORE, "__tie"], descending=[True, False])
    if max_per_query:
        if C.QUERY not in ranked.columns:
            raise UserError(f"--max-per-query needs a `{C.QUERY}` column, which this input lacks (score output has "
                            "none; label-difficulty's has); drop the option")
        key = pl.col(C.QUERY).map_elements(query_key, return_dtype=pl.String)  # split's rule: case and spacing ignored
        ranked = ranked.filter(pl.int_range(pl.len()).over(key) < max_per_query)
    if stratify == "grade":
        sizes = ranked.group_by(C.GRADE).len().sort(C.GRADE, descending=True)
        total = sizes["len"].sum()
        quota = {g: k * n / total for g, n in sizes.iter_rows()}
        take = {g: int(q) for g, q in quota.items()}
        for g in sorted(quota, key=lambda g: quota[g] - take[g], reverse=True)[: k - sum(take.values())]:
            take[g] += 1  # largest remainder
        parts = [ranked.filter(pl.col(C.GRADE) == g).head(n) for g, n in take.items()]
        picked = pl.concat(parts).sort([SCORE, "__tie"], descending=[True, False])
        if picked.height < k:  # a grade had fewer rows than its share (after the per-query cap): fill from the rest
            rest = ranked.join(picked.select("__row"), on="__row", how="anti").head(k - picked.height)
            picked = pl.concat([picked, rest]).sort([SCORE, "__tie"], descending=[True, False])
    else:
        picked = ranked.head(k)
    return picked.with_columns(pl.int_range(1, picked.height + 1).alias(RANK)).drop("__tie", "__row")


def planted_grade(true: int, scale, rng: np.random.Generator) -> int:
    """A grade next to the true one, shown as the record's gold: a reviewer who copies what is shown fails the
    honeypot."""
    values = sorted(scale.values)
    i = values.index(true)
    near = [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]
    return int(near[int(rng.integers(len(near)))])


def mix_honeypots(df: pl.DataFrame, picked: pl.DataFrame, cfg: SelectConfig, scale) -> tuple[pl.DataFrame, int]:
    """Gold records mixed into the selection at `honeypot_rate`, in seeded random positions.

    A honeypot is a row of the source not selected whose pair has a trusted grade in `cfg.honeypots`;
    it looks like every other record, but the grade shown as gold is planted next to the trusted one
    (`honeypot_grade`), so only a reviewer who judges the pair answers it right. Pull scores reviewers on
    them and never merges them."""
    from toolkit.core.gold import GOLD_GRADE, read_gold

    gold = read_gold(cfg.honeypots)
    # rate = honeypots / all records
    want = max(1, math.ceil(picked.height * cfg.honeypot_rate / (1 - cfg.honeypot_rate) - 1e-9))
    pool = (df.with_columns(pl.col(C.PAIR_ID).cast(pl.String).alias("__pid"))
            .join(picked.select(pl.col(C.PAIR_ID).cast(pl.String).alias("__pid")), on="__pid", how="anti")
            .join(gold.rename({C.PAIR_ID: "__pid"}), on="__pid", how="inner")
            .unique("__pid", keep="first", maintain_order=True))
    if pool.height == 0:
        raise UserError(f"--honeypots {cfg.honeypots}: none of its pairs are among the unselected rows of "
                        f"{cfg.input}; pass trusted grades for pairs of this source")
    if pool.height < want:
        log.warning("only %d honeypot candidates for the %d asked (--honeypot-rate %g)", pool.height, want,
                    cfg.honeypot_rate)
    rng = np.random.default_rng(cfg.seed + 2)
    hp = pool.sample(min(want, pool.height), seed=cfg.seed + 2)
    planted = [planted_grade(int(g), scale, rng) for g in hp[GOLD_GRADE].to_list()]
    hp = hp.with_columns(pl.col(GOLD_GRADE).cast(pl.Int64).alias(HONEYPOT_GRADE),
                         pl.Series(C.GRADE, planted).cast(df[C.GRADE].dtype),
                         pl.lit(True).alias(HONEYPOT), pl.lit(None, dtype=pl.Float64).alias(SCORE),
                         pl.lit(None, dtype=pl.Int64).alias(RANK)).drop("__pid", GOLD_GRADE)
    base = picked.with_columns(pl.lit(False).alias(HONEYPOT), pl.lit(None, dtype=pl.Int64).alias(HONEYPOT_GRADE))
    mixed = pl.concat([base, hp.select(base.columns)], how="vertical_relaxed")
    order = rng.permutation(mixed.height)
    return mixed[order.tolist()], hp.height


@writes_output(STAGE)
def select(cfg: SelectConfig) -> SelectResult:
    src_path = Path(cfg.input)
    if not src_path.exists():
        raise UserError(f"{src_path}: no such file or folder; check the path")
    src = _source_file(src_path)
    inputs = input_hashes([src] + [x for x in (cfg.honeypots, cfg.tiers) if x])
    done = recorded_result(SelectResult, cfg, inputs)
    if done is not None:
        return done
    source = StageFolder.open(src)
    df = select_split(read_pairs(src, required=[C.PAIR_ID, C.GRADE]), cfg.split, str(src))
    if df.height == 0:
        raise UserError(f"{src}: no rows to select from")
    scale = source.scale()
    k = budget_rows(cfg.budget, df.height)
    picked = choose(df, scores(df, cfg.policy, scale, str(src), cfg.seed, beta_of(cfg)), k, cfg.stratify,
                    cfg.max_per_query, cfg.seed)
    counts = {
        "candidates": df.height, "selected": picked.height, "policy": cfg.policy, "budget": cfg.budget,
        "score_min": float(picked[SCORE].min()), "score_max": float(picked[SCORE].max()),
        "selected_by_grade": {str(g): n
                              for g, n in picked.group_by(C.GRADE).len().sort(C.GRADE, descending=True).iter_rows()},
        "candidates_by_grade": {str(g): n
                                for g, n in df.group_by(C.GRADE).len().sort(C.GRADE, descending=True).iter_rows()},
    }
    if cfg.honeypots:
        picked, counts["honeypots"] = mix_honeypots(df, picked, cfg, scale)
    upstream = source.manifest
    extra = {Key.GRADE_SCALE: scale.to_dict(), "source": str(src), "source_stage": source.stage,
             "policy": {"name": cfg.policy, "beta": beta_of(cfg) if cfg.policy == "boundary" else None,
                        "budget": cfg.budget, "stratify": cfg.stratify, "max_per_query": cfg.max_per_query,
                        "seed": cfg.seed},
             **{k_: upstream[k_] for k_ in (Key.MODEL, Key.LINEAGE) if k_ in upstream}}

    def write(tmp: Path) -> tuple[dict, dict]:
        write_parquet(picked, tmp / src.name)
        return counts, extra

    return write_stage(SelectResult, cfg, inputs, write)
