"""`toolkit sample`: N rollouts per pair from a policy model (TaoSR1 stages 2-3, data side).

pairs -> rules -> student prompt -> N samples per pair (any backend) -> parse -> correctness
against gold, with the first-token grade probabilities of each sample. Writes a rollouts
folder (rollouts.parquet, prompts.parquet) and the pass@k report. Sharded and resumable
like gen-cot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core import lineage
from toolkit.cot import attach_rules, load_pairs
from toolkit.core.errors import UserError
from toolkit.generation.base import BackendConfig, LazyBackend, SamplingConfig
from toolkit.core.stagefolder import (StageConfig, input_hashes, is_up_to_date, mark_incomplete, model_inputs, read_manifest, sha256_json,
    up_to_date_line, write_manifest, write_parquet, writes_output)
from toolkit.core.parsing import LABEL_FIRST
from toolkit.core.prompts import PromptBuilder
from toolkit.rollouts import PROMPTS_FILE, ROLLOUTS_FILE, rollout_rows
from toolkit.core.shards import run_shards
from toolkit.core.stagefolder import check_model_scale, scale_of

log = logging.getLogger(__name__)

STAGE = "sample"
PAIR_TEXT = [C.QUERY, C.TITLE, C.DESCRIPTION, C.ATTRIBUTES, C.CATEGORY, C.BRAND, C.SPLIT]


@dataclass
class SampleConfig(StageConfig):
    pairs: str
    out: str
    split: str | None = "train"
    backend: BackendConfig = field(default_factory=BackendConfig)
    n: int = 4
    temperature: float = 0.99
    top_p: float = 1.0
    max_tokens: int = 96
    seed: int = 0
    order: str | None = None  # None: the model's recorded order (toolkit.core.lineage), else label_first
    index: str | None = None
    rules_k: int = 3
    shard_size: int = 64
    limit: int | None = None
    force: bool = False

    def __post_init__(self):
        if isinstance(self.backend, dict):
            self.backend = BackendConfig(**self.backend)
        self.order = lineage.resolve_order(self.order, self.backend.model)
        SamplingConfig(n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


@dataclass
class SampleResult:
    out: Path
    counts: dict
    passk: object | None = None
    skipped: bool = False

    def summary(self) -> str:
        c = self.counts
        if self.skipped:
            return up_to_date_line("sample", self.out, f"{c['rollouts']} rollouts")
        p = c.get("pass_at", {})
        pk = ", ".join(f"pass@{k}={v:.1%}" for k, v in p.items() if int(k) in (1, len(p)))
        return (
            f"sample: {c['pairs']} pairs x {c['n']} -> {c['rollouts']} rollouts ({c['parsed']} parsed, {c['correct']} correct; "
            f"{pk}); shards {c['shards_done']} new, {c['shards_skipped']} reused -> {self.out}"
        )


@writes_output(STAGE)
def sample(cfg: SampleConfig, backend=None) -> SampleResult:
    out = Path(cfg.out)
    resolved = cfg.resolved()
    model_files = input_hashes(model_inputs(cfg.backend.model))  # a model retrained in place gets new rollouts
    inputs = input_hashes([cfg.pairs] + ([cfg.index] if cfg.index else [])) | model_files
    if not cfg.force and is_up_to_date(out, STAGE, resolved, inputs):
        return SampleResult(out, read_manifest(out)["counts"], skipped=True)
    model_hash = sha256_json(sorted(model_files.values()))
    df = load_pairs(cfg.pairs, cfg.split, cfg.limit)
    if df.height == 0:
        raise UserError(f"{cfg.pairs}: no pairs to sample")
    scale = scale_of(cfg.pairs)
    check_model_scale(scale, cfg.backend.model, STAGE)
    builder = PromptBuilder(scale, cfg.order)
    rules = attach_rules(df, cfg.index, cfg.rules_k, cfg.pairs)
    lineage.warn_if_rules_missing(cfg.backend.model, rules, STAGE)
    rows = df.to_dicts()
    prompts = [builder.student(r, rl) for r, rl in zip(rows, rules)]
    lazy = LazyBackend(cfg.backend, backend)

    def key_of(i: int, part: list) -> dict:
        return {"config": resolved, "scale": scale.to_dict(), "prompts": [p for _, p in part], "pairs": [r[C.PAIR_ID] for r, _ in part],
                "grades": [int(r[C.GRADE]) for r, _ in part], "model": model_hash}

    def work(i: int, part: list) -> pl.DataFrame:
        sampling = SamplingConfig(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                                  seed=cfg.seed + 7919 * i, grade_logprobs=cfg.order == LABEL_FIRST)
        gens = lazy.get().generate([p for _, p in part], sampling, scale.labels)
        return rollout_rows([r[C.PAIR_ID] for r, _ in part], [int(r[C.GRADE]) for r, _ in part], gens, scale, cfg.order)

    lazy.check()
    mark_incomplete(out, STAGE)  # the folder is ours from its first byte; complete when the manifest is written last
    run = run_shards(out, list(zip(rows, prompts)), cfg.shard_size, key_of, work, "sample shards", fresh=cfg.force)
    lazy.close()
    rollouts = run.read(out)
    prompt_table = df.select([C.PAIR_ID, C.GRADE] + [c for c in PAIR_TEXT if c in df.columns]).with_columns(
        pl.Series(C.PROMPT, prompts, dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String}))),
        pl.Series(C.RULE_TEXTS, rules, dtype=pl.List(pl.String)),  # the teacher of make-prefs gets the same rules
    )
    write_parquet(rollouts, out / ROLLOUTS_FILE)
    write_parquet(prompt_table, out / PROMPTS_FILE)
    from toolkit.passk import passk_report

    report = passk_report(rollouts, scale, out, with_plot=True)
    counts = {
        "pairs": df.height, "n": cfg.n, "rollouts": rollouts.height,
        "parsed": int((rollouts[C.PARSE_STATUS] == "ok").sum()), "correct": int(rollouts[C.CORRECT].sum()),
        "parse_status": {k: v for k, v in rollouts.group_by(C.PARSE_STATUS).len().iter_rows()},
        "pass_at": {k: report.value(k) for k in range(1, cfg.n + 1) if report.value(k) is not None}, "shards_done": run.done, "shards_skipped": run.skipped,
    }
    model_id = lazy.model_id
    write_manifest(out, STAGE, resolved, inputs, counts, {"grade_scale": scale.to_dict(), "model": model_id, lineage.KEY: lineage.facts(cfg.order, rules)})
    return SampleResult(out, counts, report)
