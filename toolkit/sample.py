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
from toolkit.model_stage import open_pairs, run_model_shards
from toolkit.generation.base import BackendConfig, LazyBackend, SamplingConfig
from toolkit.core.options import opt
from toolkit.core.stagefolder import (input_hashes, Key, model_inputs, recorded_result, sha256_json, StageConfig,
                                      StageResult, write_manifest, write_parquet, writes_output)
from toolkit.core.parsing import LABEL_FIRST
from toolkit.core.prompts import PromptBuilder, TEMPLATE_HELP
from toolkit.rollouts import PROMPTS_FILE, ROLLOUTS_FILE, rollout_rows
from toolkit.core.executors import ExecutorOptions

log = logging.getLogger(__name__)

STAGE = "sample"
PAIR_TEXT = [C.QUERY, C.TITLE, C.DESCRIPTION, C.ATTRIBUTES, C.CATEGORY, C.BRAND, C.SPLIT]


@dataclass
class SampleConfig(ExecutorOptions, StageConfig):
    pairs: str
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output rollouts folder: rollouts.parquet, prompts.parquet, passk.*")
    split: str | None = opt("train", show_default=True,
                            help="Use the rows of this split when the input has splits ('' for all).")
    backend: BackendConfig = field(default_factory=BackendConfig)
    n: int = opt(4, flags=("-n", "--samples"), show_default=True, help="Rollouts per pair (N of pass@N; G of GRPO).")
    temperature: float = opt(0.99, show_default=True, help="Sampling temperature of the rollouts (TaoSR1: 0.99).")
    top_p: float = opt(1.0, show_default=True,
                       help="Nucleus sampling: keep the smallest token set with this much probability.")
    max_tokens: int = opt(96, show_default=True, help="Token budget per rollout (label first, then the reason).")
    seed: int = opt(0, show_default=True,
                    help="Base seed; each shard and prompt gets its own seed from it (reruns give the same samples).")
    # None: the model's recorded order (toolkit.core.lineage), else label_first
    order: str | None = opt(None, choices=("label_first", "cot_first"),
                            help="Answer order the model was trained on (where the grade is parsed from); default: "
                                 "the order in the model's manifest, else label_first.")
    index: str | None = opt(None, flags=("-i", "--index"), type="path",
                            help="Rules index folder; rule texts go into the student prompts.")
    rules_k: int = opt(3, flags=("-k", "--rules-k"), show_default=True, help="Rules per prompt.")
    # None: the model's recorded template (toolkit.core.lineage), else the built-in; after resolution its text
    prompt_template: str | None = opt(None, metavar="FILE", help=TEMPLATE_HELP)
    shard_size: int = opt(64, show_default=True, help="Pairs per shard (the unit of resumption).")
    limit: int | None = opt(None, help="Only the first N pairs.")
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def __post_init__(self):
        if isinstance(self.backend, dict):
            self.backend = BackendConfig(**self.backend)
        hub = self.backend.loads_weights
        self.order = lineage.resolve_order(self.order, model=self.backend.model, hub=hub)
        self.prompt_template = lineage.resolve_template(self.prompt_template, model=self.backend.model, hub=hub)
        SamplingConfig(n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


@dataclass
class SampleResult(StageResult):
    passk: object | None = None  # toolkit.passk.PasskReport of a run
    STAGE = STAGE

    def brief(self) -> str:
        return f"{self.counts['rollouts']} rollouts"

    def headline(self) -> str:
        c = self.counts
        p = c.get("pass_at", {})
        pk = ", ".join(f"pass@{k}={v:.1%}" for k, v in p.items() if int(k) in (1, len(p)))
        return (f"{c['pairs']} pairs x {c['n']} -> {c['rollouts']} rollouts ({c['parsed']} parsed, "
                f"{c['correct']} correct; {pk}); shards {c['shards_done']} new, {c['shards_skipped']} reused")


@writes_output(STAGE)
def sample(cfg: SampleConfig, backend=None) -> SampleResult:
    out = Path(cfg.out)
    resolved = cfg.resolved()
    # a model retrained in place, or a hub id pushed again, gets new rollouts
    model_files = model_inputs(cfg.backend.model, hub=cfg.backend.loads_weights)
    inputs = input_hashes([cfg.pairs] + ([cfg.index] if cfg.index else [])) | model_files
    done = recorded_result(SampleResult, cfg, inputs)
    if done is not None:
        return done
    model_hash = sha256_json(sorted(model_files.values()))
    pairs = open_pairs(cfg, STAGE, "sample")
    df, scale, rules = pairs.df, pairs.scale, pairs.rules
    builder = PromptBuilder(scale, cfg.order, cfg.prompt_template)
    rows = df.to_dicts()
    prompts = [builder.student(r, rl) for r, rl in zip(rows, rules)]
    lazy = LazyBackend(cfg.backend, backend)

    def key_of(i: int, part: list) -> dict:
        return {"config": resolved, "scale": scale.to_dict(), "prompts": [p for _, p in part],
                "pairs": [r[C.PAIR_ID] for r, _ in part], "grades": [int(r[C.GRADE]) for r, _ in part],
                "model": model_hash}

    def work(i: int, part: list) -> pl.DataFrame:
        sampling = SamplingConfig(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                                  seed=cfg.seed + 7919 * i, grade_logprobs=cfg.order == LABEL_FIRST)
        gens = lazy.get().generate([p for _, p in part], sampling, scale.labels)
        return rollout_rows([r[C.PAIR_ID] for r, _ in part], [int(r[C.GRADE]) for r, _ in part], gens, scale,
                            cfg.order)

    run = run_model_shards(cfg, STAGE, lazy, list(zip(rows, prompts)), key_of, work, "sample shards")
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
        "pass_at": {k: report.value(k) for k in range(1, cfg.n + 1) if report.value(k) is not None},
        "shards_done": run.done, "shards_skipped": run.skipped,
    }
    m = write_manifest(out, STAGE, resolved, inputs, counts,
                       {Key.GRADE_SCALE: scale.to_dict(), Key.MODEL: lazy.model_id,
                        Key.LINEAGE: lineage.facts(cfg.order, rules, cfg.prompt_template)})
    return SampleResult(out, counts, manifest=m, passk=report)
