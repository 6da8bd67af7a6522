"""What the three stages that run a model over pairs share (gen-cot, sample, score): opening the pairs once,
the rules of each pair, and the sharded, resumable run.

    inputs = open_pairs(cfg, STAGE, "sample")            # pairs of the split, their scale, rules, checks
    run = run_model_shards(cfg, STAGE, lazy, items, key_of, work, "sample shards")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl

from toolkit.core import columns as C
from toolkit.core import lineage
from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale
from toolkit.core.shards import ShardRun, run_shards
from toolkit.core.stagefolder import StageFolder, check_model_scale, mark_incomplete

log = logging.getLogger(__name__)


def attach_rules(df: pl.DataFrame, index_dir: str | None, k: int, pairs_path: str | None = None) -> list[list[str]]:
    """Rule texts per pair: from the pairs' rule_ids (toolkit retrieve) or retrieved now."""
    if not index_dir:
        if C.RULE_IDS in df.columns and df[C.RULE_IDS].list.len().sum():
            log.warning("the pairs carry retrieved rule ids (toolkit retrieve) but no --index was given: "
                        "the prompts get no rules; pass --index with the index they were retrieved from")
        return [[] for _ in range(df.height)]
    from retrieval_index.index import RuleIndex

    by_id = C.RULE_IDS in df.columns
    index = RuleIndex.load(index_dir, search=not by_id)  # rules looked up by id need no faiss
    if by_id:
        if pairs_path:
            source = StageFolder.open(pairs_path)
            # by the rule texts; folders retrieved before 2026-12-05 have only the build's config fingerprint
            retrieved_from, now = ((source.get("index_rules_id"), index.rules_id) if source.get("index_rules_id")
                                   else (source.get("index_fingerprint"), index.manifest.get("fingerprint")))
            if retrieved_from and retrieved_from != now:
                log.warning("%s: the rule ids were retrieved from another build of the index than --index %s "
                            "(rules edited since?); the prompts get the texts of this build; "
                            "rerun `toolkit retrieve` to match", pairs_path, index_dir)
        return [[index.get(i)[C.SNIPPET_TEXT] for i in list(x or [])[:k]] for x in df[C.RULE_IDS].to_list()]
    from retrieval_index.retrieve import rule_texts

    cats = df[C.CATEGORY].to_list() if C.CATEGORY in df.columns else None
    return rule_texts(index, df[C.QUERY].to_list(), df[C.TITLE].to_list(), cats, k)


@dataclass
class PairsInput:
    """The pairs a model stage runs over, opened once."""

    folder: StageFolder
    df: pl.DataFrame
    scale: GradeScale
    rules: list[list[str]]  # rule texts per pair ([] each without --index)

    @property
    def rows(self) -> list[dict]:
        return self.df.to_dicts()


def open_pairs(cfg, stage: str, verb: str, check_model: bool = True) -> PairsInput:
    """cfg.pairs (split cfg.split, first cfg.limit), refused when empty; their recorded scale, checked against the
    model's (check_model); rules from cfg.index (cfg.rules_k per pair), with a warning when the model was trained
    with rules and gets none."""
    folder = StageFolder.open(cfg.pairs)
    df = folder.pairs(cfg.split, cfg.limit)
    if df.height == 0:
        raise UserError(f"{cfg.pairs}: no pairs to {verb}")
    scale = folder.scale()
    if check_model:
        check_model_scale(scale, cfg.backend.model, stage, hub=cfg.backend.loads_weights)
    rules = attach_rules(df, cfg.index, cfg.rules_k, cfg.pairs)
    if check_model:
        lineage.warn_if_rules_missing(cfg.backend.model, rules, stage, hub=cfg.backend.loads_weights)
    return PairsInput(folder, df, scale, rules)


def run_model_shards(cfg, stage: str, lazy, items: list, key_of: Callable[[int, list], dict],
                     work: Callable[[int, list], pl.DataFrame], desc: str) -> ShardRun:
    """Check the model loads, mark the output folder as this stage's (incomplete until its manifest is written last),
    run the shards (finished ones reused unless cfg.force), close the model."""
    out = Path(cfg.out)
    lazy.check()
    mark_incomplete(out, stage)  # the folder is ours from its first byte; complete when the manifest is written last
    try:
        from toolkit.core.executors import make_executor

        return run_shards(out, items, cfg.shard_size, key_of, work, desc, fresh=cfg.force, executor=make_executor(cfg))
    finally:
        lazy.close()
