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
from toolkit.model_stage import open_pairs, run_model_shards
from toolkit.core.errors import UserError
from toolkit.generation.base import BackendConfig, LazyBackend, SamplingConfig
from toolkit.core.options import opt
from toolkit.core.stagefolder import (input_hashes, Key, model_inputs, recorded_result, StageConfig, StageResult,
                                      write_manifest, write_parquet, writes_output)
from toolkit.core.parsing import LABEL_FIRST, parse_answer
from toolkit.core.prompts import PromptBuilder, TEMPLATE_HELP
from toolkit.rollouts import grade_probs as softmax_labels
from toolkit.core.stagefolder.files import PREDICTIONS_FILE
from toolkit.core.executors import ExecutorOptions

log = logging.getLogger(__name__)

STAGE = "score"
MODES = ("first-token", "generate")
SCHEMA = {C.PAIR_ID: pl.String, C.GRADE: pl.Int64, C.SPLIT: pl.String, C.GRADE_PROBS: pl.List(pl.Float64),
          C.PRED_GRADE: pl.Int64, C.TEXT: pl.String}


@dataclass
class ScoreConfig(ExecutorOptions, StageConfig):
    pairs: str
    out: str = opt(flags=("-o", "--out"), type="path", help="Output folder: predictions.parquet (+ .shards/).")
    split: str | None = opt(None, help="Score only rows of this split (default: all rows).")
    backend: BackendConfig = field(default_factory=BackendConfig)
    mode: str = opt("first-token", choices=MODES, show_default=True,
                    help="first-token: softmax over the grade tokens at the label position (one forward pass); "
                         "generate: sample and parse.")
    # None: the model's recorded order (toolkit.core.lineage), else label_first
    order: str | None = opt(None, choices=("label_first", "cot_first"),
                            help="Answer order the model was trained on (where the grade is parsed from); default: "
                                 "the order in the model's manifest, else label_first.")
    index: str | None = opt(None, flags=("-i", "--index"), type="path",
                            help="Rules index folder; rule texts go into the prompts.")
    rules_k: int = opt(3, flags=("-k", "--rules-k"), show_default=True, help="Rules per prompt.")
    # None: the model's recorded template (toolkit.core.lineage), else the built-in; after resolution its text
    prompt_template: str | None = opt(None, metavar="FILE", help=TEMPLATE_HELP)
    max_tokens: int = opt(96, show_default=True, help="[generate] token budget.")
    shard_size: int = opt(256, show_default=True, help="Pairs per shard (the unit of resumption).")
    limit: int | None = opt(None, help="Only the first N pairs.")
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def __post_init__(self):
        if isinstance(self.backend, dict):
            self.backend = BackendConfig(**self.backend)
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        hub = self.backend.loads_weights
        self.order = lineage.resolve_order(self.order, model=self.backend.model, hub=hub)
        self.prompt_template = lineage.resolve_template(self.prompt_template, model=self.backend.model, hub=hub)
        if self.mode == "first-token" and self.order != LABEL_FIRST:
            raise UserError(f"first-token scoring needs label-first answers, and the answers here are {self.order} "
                            "(--order, or the model's manifest); use --mode generate")


@dataclass
class ScoreResult(StageResult):
    STAGE = STAGE

    def headline(self) -> str:
        c = self.counts
        return f"{c['pairs']} pairs scored ({c['mode']}, accuracy {c['accuracy']:.1%})"

    def brief(self) -> str:
        c = self.counts
        return f"{c['pairs']} pairs, {c['mode']}, accuracy {c['accuracy']:.1%}"

    def target(self) -> Path:
        return self.out / PREDICTIONS_FILE


def score_rows(backend, builder: PromptBuilder, rows: list[dict], rules: list[list[str]], mode: str,
               max_tokens: int = 96) -> pl.DataFrame:
    """Predictions for pairs with a loaded backend (also used by the serving layer's tests)."""
    scale = builder.scale
    prompts = [builder.student(r, rl) for r, rl in zip(rows, rules)]
    texts: list[str | None] = [None] * len(rows)
    if mode == "first-token":
        probs = backend.score_grades(prompts, scale.labels)
        # ties: the better grade
        preds = [scale.grades[int(i)].value for i in np.asarray(probs).reshape(len(probs), len(scale)).argmax(axis=1)]
    else:
        want_lp = builder.order == LABEL_FIRST
        gens = backend.generate(prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=max_tokens,
                                                        grade_logprobs=want_lp), scale.labels)
        probs, preds = [], []
        for i, g in enumerate(gens):
            texts[i] = g.texts[0]
            parsed = parse_answer(g.texts[0], scale.labels, builder.order, g.finish_reasons[0])
            preds.append(scale.by_label(parsed.label).value if parsed.ok else None)
            probs.append(softmax_labels(g.grade_logprobs[0], scale) if g.grade_logprobs else None)
    return pl.DataFrame(
        {C.PAIR_ID: [r[C.PAIR_ID] for r in rows], C.GRADE: [int(r[C.GRADE]) for r in rows],
         C.SPLIT: [r.get(C.SPLIT) for r in rows], C.GRADE_PROBS: probs, C.PRED_GRADE: preds, C.TEXT: texts},
        schema=SCHEMA,
    )


@writes_output(STAGE)
def score(cfg: ScoreConfig, backend=None) -> ScoreResult:
    if backend is None and cfg.backend.kind == "transformers":
        from toolkit.core.models import score_dtype

        cfg.backend.dtype = score_dtype(cfg.backend.dtype)  # on a CPU, float32: bf16 flipped 1 in 7 grades
    out = Path(cfg.out)
    resolved = cfg.resolved()
    inputs = (input_hashes([cfg.pairs] + ([cfg.index] if cfg.index else []))
              | model_inputs(cfg.backend.model, hub=cfg.backend.loads_weights))
    done = recorded_result(ScoreResult, cfg, inputs)
    if done is not None:
        return done
    pairs = open_pairs(cfg, STAGE, "score")
    scale, rules = pairs.scale, pairs.rules
    builder = PromptBuilder(scale, cfg.order, cfg.prompt_template)
    rows = pairs.rows
    lazy = LazyBackend(cfg.backend, backend)

    def key_of(i: int, part: list) -> dict:
        return {"config": resolved, "inputs": sorted(inputs.values()), "pairs": [r[C.PAIR_ID] for r, _ in part]}

    def work(i: int, part: list) -> pl.DataFrame:
        return score_rows(lazy.get(), builder, [r for r, _ in part], [rl for _, rl in part], cfg.mode, cfg.max_tokens)

    run = run_model_shards(cfg, STAGE, lazy, list(zip(rows, rules)), key_of, work, "scoring shards")
    preds = run.read(out)
    if rows and C.QUERY in rows[0]:  # eval's bootstrap intervals resample whole queries
        preds = preds.insert_column(3, pl.Series(C.QUERY, [r.get(C.QUERY) for r in rows], dtype=pl.String))
    write_parquet(preds, out / PREDICTIONS_FILE)
    acc = float((preds[C.PRED_GRADE] == preds[C.GRADE]).fill_null(False).mean())
    counts = {"pairs": preds.height, "mode": cfg.mode, "accuracy": acc, "shards_done": run.done,
              "shards_skipped": run.skipped}
    m = write_manifest(out, STAGE, resolved, inputs, counts,
                       {Key.GRADE_SCALE: scale.to_dict(), Key.MODEL: lazy.model_id,
                        Key.LINEAGE: lineage.facts(cfg.order, rules, cfg.prompt_template)})
    return ScoreResult(out, counts, manifest=m)
