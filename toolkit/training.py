"""The trainers (`trainers/`, thin TRL glue on the core) with the toolkit's own dev evaluation attached.

`train_sft|train_dpo|train_grpo(cfg)` here are what `toolkit train ...` runs: with `--eval-pairs` the trainer
is handed `dev(scale, order, tokenizer, template, prompt_template) -> score(model)` (template: the chat
template's options; prompt_template: the student prompt's, as the data records it), which scores the dev split with the
model being trained through the same code as `toolkit score` (first-token grade probabilities on the
student prompt, rules retrieved from `--eval-index`) and returns trainers.dev_eval.metrics_of's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale
from toolkit.core.prompts import PromptBuilder

# dev(scale, order, tokenizer, template, prompt_template) -> score(model) -> metrics
DevScorer = Callable[..., Callable[[object], dict]]


@dataclass
class DevSet:
    rows: list[dict]
    rules: list[list[str]]
    builder: PromptBuilder
    scale: GradeScale


def load_dev(pairs: str, split: str | None, index: str | None, rules_k: int, limit: int | None, scale, order: str,
             seed: int = 0, prompt_template: str | None = None) -> DevSet:
    """The dev pairs (a fixed seeded sample of at most `limit`), their retrieved rules and the student prompt
    builder (`prompt_template`: the training data's, as toolkit.core.lineage records it; None: the built-in)."""
    import polars as pl

    from toolkit.core.pairs import load_pairs
    from toolkit.model_stage import attach_rules

    df = load_pairs(pairs, split or None, None)
    if df.height == 0:
        raise UserError(f"--eval-pairs {pairs}: no pairs in split {split!r}; "
                        "pass a folder with a dev split (`toolkit split` or `retrieve` output)")
    if limit and df.height > limit:
        # a fixed sample: every evaluation scores the same pairs
        df = df.sample(limit, seed=seed).sort(pl.col("pair_id"))
    off = sorted(set(df["grade"].to_list()) - set(scale.values))
    if off:
        raise UserError(f"--eval-pairs {pairs}: grade(s) {off} are not on the training data's scale `{scale.name}`")
    return DevSet(df.to_dicts(), attach_rules(df, index, rules_k, pairs),
                  PromptBuilder(scale, order, prompt_template), scale)


def evaluate(model, tokenizer, dev: DevSet, template_options: dict | None = None) -> dict:
    """Macro-F1, accuracy and predicted-grade shares of `model` on the dev set, by first-token scoring."""
    from toolkit.generation.base import BackendConfig
    from toolkit.generation.hf import TransformersBackend
    from toolkit.scoring import score_rows
    from trainers.dev_eval import metrics_of

    was_training, side = model.training, tokenizer.padding_side
    try:
        backend = TransformersBackend(BackendConfig(template_options=template_options or {}), model=model,
                                      tokenizer=tokenizer)
        preds = score_rows(backend, dev.builder, dev.rows, dev.rules, "first-token")
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    return metrics_of(preds["grade"].to_list(), preds["grade_probs"].to_list(), dev.scale)


def dev_scorer(cfg) -> DevScorer | None:
    """The trainer's dev evaluation for a train config with `eval_pairs`; None without."""
    if not getattr(cfg, "eval_pairs", None):
        return None

    def prepare(scale, order, tokenizer, template, prompt_template=None):
        dev = load_dev(cfg.eval_pairs, cfg.eval_split, cfg.eval_index, cfg.eval_rules_k, cfg.eval_limit, scale, order,
                       cfg.seed, prompt_template)
        return lambda model: evaluate(model, tokenizer, dev, template)

    return prepare


def train_sft(cfg):
    from trainers.sft import train_sft

    label_only_from_pairs(cfg)
    return train_sft(cfg, dev=dev_scorer(cfg))


LABEL_ONLY_STAGE = "label-only-prompts"


def label_only_from_pairs(cfg) -> None:
    """`toolkit train sft PAIRS --label-only`: when cfg.data is a pairs folder (`toolkit split` or `retrieve`
    output, no sft.parquet), label-only SFT trains on every pair of its `pairs_split`, no rationale needed: the
    student prompts (rules from `pairs_index`, as `toolkit score` builds them) and the gold labels are written once
    into the toolkit cache as an sft.parquet folder, which cfg.data then names. Configs and fingerprints record the
    pairs folder (toolkit.core.stagefolder.aliases)."""
    import json
    from pathlib import Path

    import polars as pl

    from toolkit import __version__
    from toolkit.core import columns as C
    from toolkit.core import lineage
    from toolkit.core.models import cache_dir
    from toolkit.core.pairs import load_pairs
    from toolkit.core.parsing import LABEL_FIRST
    from toolkit.core.stagefolder import (atomic_dir, input_hashes, Key, MANIFEST, sha256_json, StageFolder,
                                          write_parquet)
    from toolkit.core.stagefolder.aliases import ALIASES
    from toolkit.core.stagefolder.files import SFT_FILE
    from toolkit.model_stage import attach_rules

    data = Path(cfg.data)
    if not data.is_dir() or (data / SFT_FILE).exists() or not any(data.glob("*.parquet")):
        return  # gen-cot output, or something the trainer's own checks explain
    if not cfg.label_only:
        raise UserError(f"{data}: a pairs folder (no {SFT_FILE}) trains label-only SFT only; pass --label-only, or "
                        "the output folder of `toolkit gen-cot` for CoT SFT")
    index = cfg.pairs_index
    key = sha256_json({"pairs": sorted(input_hashes([data]).values()),
                       "index": sorted(input_hashes([index]).values()) if index else None,
                       "split": cfg.pairs_split, "k": cfg.pairs_rules_k, "version": __version__,
                       **({"template": cfg.prompt_template} if cfg.prompt_template else {})})[:16]
    folder = cache_dir() / "label-only" / f"{data.name}-{key}"
    if not (folder / MANIFEST).exists():
        df = load_pairs(data, cfg.pairs_split or None, None)
        if df.height == 0:
            raise UserError(f"{data}: no pairs in split {cfg.pairs_split!r}; pass --pairs-split with one it has")
        scale = StageFolder.open(data).scale()
        rules = attach_rules(df, index, cfg.pairs_rules_k, str(data))
        builder = PromptBuilder(scale, LABEL_FIRST, cfg.prompt_template)
        msg = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
        frame = df.select(C.PAIR_ID, C.GRADE).with_columns(
            pl.Series(C.PROMPT, [builder.student(r, rl) for r, rl in zip(df.to_dicts(), rules)], dtype=msg),
            pl.Series(C.COMPLETION, [[{"role": "assistant", "content": scale.by_value(int(g)).label}]
                                     for g in df[C.GRADE].to_list()], dtype=msg))
        with atomic_dir(folder) as tmp:
            write_parquet(frame, tmp / SFT_FILE)
            (tmp / MANIFEST).write_text(json.dumps({
                "stage": LABEL_ONLY_STAGE, "source": str(data), "split": cfg.pairs_split,
                Key.GRADE_SCALE: scale.to_dict(), Key.LINEAGE: lineage.facts(LABEL_FIRST, rules, cfg.prompt_template),
                Key.COUNTS: {"rows": frame.height}}), encoding="utf-8")
    ALIASES[str(folder)] = str(cfg.data)
    cfg.data = str(folder)


def train_dpo(cfg):
    from trainers.dpo import train_dpo

    return train_dpo(cfg, dev=dev_scorer(cfg))


def train_grpo(cfg):
    from trainers.grpo import train_grpo

    return train_grpo(cfg, dev=dev_scorer(cfg))
