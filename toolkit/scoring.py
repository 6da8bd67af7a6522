"""`toolkit score`: a model's predictions for pairs — TaoSR1's serving score.

`first-token` (default, for label-first models): one forward pass over the student prompt;
the softmax over the grade tokens at the label position gives `grade_probs` (best grade
first) and `pred_grade` = argmax. `generate` (for CoT-first models, or to see rationales):
sample an answer, parse it; `pred_grade` is the parsed grade and `text` the answer (label-
first answers also get `grade_probs` from the first generated position).

Writes predictions.parquet (pair_id, grade, split, grade_probs, pred_grade[, text]) that
`toolkit eval` and `toolkit tier fit|apply` read. Sharded and resumable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from toolkit.core import columns as C
from toolkit.core import lineage
from toolkit.cot import attach_rules, load_pairs
from toolkit.core.errors import UserError
from toolkit.generation.base import BackendConfig, LazyBackend, SamplingConfig
from toolkit.core.stagefolder import (StageConfig, input_hashes, is_up_to_date, mark_incomplete, model_inputs, read_manifest,
    write_manifest, write_parquet, writes_output)
from toolkit.core.parsing import LABEL_FIRST, parse_answer
from toolkit.core.prompts import PromptBuilder
from toolkit.rollouts import grade_probs as softmax_labels
from toolkit.core.shards import run_shards
from toolkit.core.stagefolder import check_model_scale, scale_of
from toolkit.core.stagefolder.files import PREDICTIONS_FILE

log = logging.getLogger(__name__)

STAGE = "score"
MODES = ("first-token", "generate")
SCHEMA = {C.PAIR_ID: pl.String, C.GRADE: pl.Int64, C.SPLIT: pl.String, C.GRADE_PROBS: pl.List(pl.Float64), C.PRED_GRADE: pl.Int64, C.TEXT: pl.String}


@dataclass
class ScoreConfig(StageConfig):
    pairs: str
    out: str
    split: str | None = None  # None: all rows
    backend: BackendConfig = field(default_factory=BackendConfig)
    mode: str = "first-token"
    order: str | None = None  # None: the model's recorded order (toolkit.core.lineage), else label_first
    index: str | None = None
    rules_k: int = 3
    max_tokens: int = 96
    shard_size: int = 256
    limit: int | None = None
    force: bool = False

    def __post_init__(self):
        if isinstance(self.backend, dict):
            self.backend = BackendConfig(**self.backend)
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        self.order = lineage.resolve_order(self.order, self.backend.model)
        if self.mode == "first-token" and self.order != LABEL_FIRST:
            raise UserError(f"first-token scoring needs label-first answers, and the answers here are {self.order} (--order, or the model's "
                            "manifest); use --mode generate")


@dataclass
class ScoreResult:
    out: Path
    counts: dict
    skipped: bool = False

    def summary(self) -> str:
        c = self.counts
        state = "is up to date" if self.skipped else "scored"
        return f"score: {c['pairs']} pairs {state} ({c['mode']}, accuracy {c['accuracy']:.1%}) -> {self.out / PREDICTIONS_FILE}"


def score_rows(backend, builder: PromptBuilder, rows: list[dict], rules: list[list[str]], mode: str, max_tokens: int = 96) -> pl.DataFrame:
    """Predictions for pairs with a loaded backend (also used by the serving layer's tests)."""
    scale = builder.scale
    prompts = [builder.student(r, rl) for r, rl in zip(rows, rules)]
    texts: list[str | None] = [None] * len(rows)
    if mode == "first-token":
        probs = backend.score_grades(prompts, scale.labels)
        preds = [scale.grades[int(i)].value for i in np.asarray(probs).reshape(len(probs), len(scale)).argmax(axis=1)]  # ties: the better grade
    else:
        want_lp = builder.order == LABEL_FIRST
        gens = backend.generate(prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=max_tokens, grade_logprobs=want_lp), scale.labels)
        probs, preds = [], []
        for i, g in enumerate(gens):
            texts[i] = g.texts[0]
            parsed = parse_answer(g.texts[0], scale.labels, builder.order, g.finish_reasons[0])
            preds.append(scale.by_label(parsed.label).value if parsed.ok else None)
            probs.append(softmax_labels(g.grade_logprobs[0], scale) if g.grade_logprobs else None)
    return pl.DataFrame(
        {C.PAIR_ID: [r[C.PAIR_ID] for r in rows], C.GRADE: [int(r[C.GRADE]) for r in rows], C.SPLIT: [r.get(C.SPLIT) for r in rows],
         C.GRADE_PROBS: probs, C.PRED_GRADE: preds, C.TEXT: texts},
        schema=SCHEMA,
    )


@writes_output(STAGE)
def score(cfg: ScoreConfig, backend=None) -> ScoreResult:
    out = Path(cfg.out)
    resolved = cfg.resolved()
    inputs = input_hashes([cfg.pairs] + ([cfg.index] if cfg.index else []) + model_inputs(cfg.backend.model))
    if not cfg.force and is_up_to_date(out, STAGE, resolved, inputs):
        return ScoreResult(out, read_manifest(out)["counts"], skipped=True)
    df = load_pairs(cfg.pairs, cfg.split, cfg.limit)
    if df.height == 0:
        raise UserError(f"{cfg.pairs}: no pairs to score")
    scale = scale_of(cfg.pairs)
    check_model_scale(scale, cfg.backend.model, STAGE)
    builder = PromptBuilder(scale, cfg.order)
    rules = attach_rules(df, cfg.index, cfg.rules_k, cfg.pairs)
    lineage.warn_if_rules_missing(cfg.backend.model, rules, STAGE)
    rows = df.to_dicts()
    lazy = LazyBackend(cfg.backend, backend)

    def key_of(i: int, part: list) -> dict:
        return {"config": resolved, "inputs": sorted(inputs.values()), "pairs": [r[C.PAIR_ID] for r, _ in part]}

    def work(i: int, part: list) -> pl.DataFrame:
        return score_rows(lazy.get(), builder, [r for r, _ in part], [rl for _, rl in part], cfg.mode, cfg.max_tokens)

    lazy.check()
    mark_incomplete(out, STAGE)  # the folder is ours from its first byte; complete when the manifest is written last
    run = run_shards(out, list(zip(rows, rules)), cfg.shard_size, key_of, work, "scoring shards", fresh=cfg.force)
    lazy.close()
    preds = run.read(out)
    write_parquet(preds, out / PREDICTIONS_FILE)
    acc = float((preds[C.PRED_GRADE] == preds[C.GRADE]).fill_null(False).mean())
    counts = {"pairs": preds.height, "mode": cfg.mode, "accuracy": acc, "shards_done": run.done, "shards_skipped": run.skipped}
    model_id = lazy.model_id
    write_manifest(out, STAGE, resolved, inputs, counts, {"grade_scale": scale.to_dict(), "model": model_id, lineage.KEY: lineage.facts(cfg.order, rules)})
    return ScoreResult(out, counts)
