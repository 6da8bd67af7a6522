"""`Judge`: the loaded model behind the service — scores, CumPT tiers and rationales for pair rows.

Scores are TaoSR1's serving score, computed exactly as `toolkit score` computes them: the
student prompt (`PromptBuilder.student`), the softmax over the grade tokens at the label
position, argmax with ties to the better grade. The transformers backend scores through
`PrefixScorer` (each query's shared prompt prefix once); the vLLM backend through its own
`score_grades`, where vLLM's prefix caching does the same job inside the engine.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from toolkit.core import columns as C
from toolkit.core import lineage
from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale, get_scale
from toolkit.core.parsing import LABEL_FIRST, parse_answer
from toolkit.core.prompts import PromptBuilder
from toolkit.core.stagefolder import Key
from toolkit.serving.config import ServeConfig

log = logging.getLogger(__name__)

# start-up check: shared-prefix and full-prompt probabilities may differ by at most
# max(floor of the dtype, CHECK_FACTOR x the difference that batching alone makes)
CHECK_FLOOR = {"float32": 1e-4, "float16": 5e-2, "bfloat16": 5e-2}
CHECK_FACTOR = 3.0
WARMUP_PAIRS = [
    {C.QUERY: "running shoes", C.TITLE: "Trail running shoe, men's, cushioned"},
    {C.QUERY: "running shoes", C.TITLE: "Leather oxford dress shoe"},
    {C.QUERY: "running shoes", C.TITLE: "Running socks, 3 pack", C.BRAND: "Stride"},
    {C.QUERY: "usb c cable", C.TITLE: "USB-C to USB-C cable, 2 m, 100 W"},
]


def resolve_scale(cfg: ServeConfig, rule) -> GradeScale:
    """--scale, else the tier rule's scale, else the checkpoint's manifest, else taosr4; they must agree."""
    from toolkit.core.stagefolder import model_manifest

    model_scale = None
    m = model_manifest(cfg.model)
    if m and Key.GRADE_SCALE in m:
        model_scale = GradeScale.from_dict(m[Key.GRADE_SCALE], where=str(cfg.model))
    chosen = get_scale(cfg.scale) if cfg.scale else (rule.scale if rule else (model_scale or get_scale(None)))
    for other, where in ((rule.scale if rule else None, f"tier rule {cfg.tiers}"),
                         (model_scale, f"checkpoint {cfg.model}")):
        if other is not None and not other.same_grades(chosen):
            raise UserError(
                f"grade scale `{chosen.name}` ({chosen.describe()}) does not match the {where} "
                f"(`{other.name}`: {other.describe()}); pass the matching --scale, tier rule and checkpoint"
            )
    return chosen


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    # a rule fitted before hub ids were recorded at their commit names the repo alone
    return a == b or ("@" not in a and a == b.partition("@")[0])


class Judge:
    """Load with `Judge.open(cfg)` (cheap checks) then `.load()` (the model; seconds to minutes)."""

    def __init__(self, cfg: ServeConfig, rule, scale: GradeScale, prompt_template: str | None = None):
        self.cfg, self.rule, self.scale = cfg, rule, scale
        self.builder = PromptBuilder(scale, LABEL_FIRST, prompt_template)  # the model's recorded student prompt
        self.backend = None
        self.scorer = None  # PrefixScorer when the shared-prefix fast path is on
        self.index = None
        self.model_id = cfg.model or "default"
        self.prefix_gap: float | None = None
        self._lazy = None

    @classmethod
    def open(cls, cfg: ServeConfig) -> "Judge":
        """Check the cheap things first (paths, tier file, scale) so mistakes fail before loading."""
        from toolkit.cumpt import TierRule
        from toolkit.core.models import DEFAULT_ALIASES, check_model

        rule = TierRule.load(cfg.tiers) if cfg.tiers else None
        if cfg.model not in DEFAULT_ALIASES:
            check_model(cfg.model)  # a missing folder, one without config.json, or an unknown hub id: one line
        scale = resolve_scale(cfg, rule)
        if cfg.index and not Path(cfg.index).is_dir():
            raise UserError(f"--index {cfg.index}: no such folder; pass a rules index built by `toolkit build-index`")
        rec = lineage.recorded(cfg.model, hub=True) or {}
        if rec.get("order", LABEL_FIRST) != LABEL_FIRST:
            raise UserError(f"{cfg.model} answers {rec['order']} (its manifest), but the service reads the grade "
                            "from the first answer token, which needs a label-first model; "
                            "serve one trained on `toolkit gen-cot --order label_first` data")
        if rec.get("rules") and not cfg.index:
            log.warning("%s was trained with retrieved rules in its prompts; without --index, requests that bring no "
                        "`rules` get none", cfg.model)
        fitted_on = (rule.dev or {}).get("model") if rule else None
        if fitted_on and not _same_model(fitted_on, cfg.model):  # a hub id: at its commit (ServeConfig pins it)
            log.warning("the tier rule's β was fitted on the probabilities of %s, not of the served %s; "
                        "refit it with `toolkit tier fit` on this model's dev predictions", fitted_on, cfg.model)
        return cls(cfg, rule, scale, rec.get("template"))

    def load(self, backend=None) -> None:
        """Load the model (or adopt an already loaded `backend` of the configured kind)."""
        from toolkit.generation.base import BackendConfig, LazyBackend

        bcfg = BackendConfig(kind=self.cfg.backend, model=self.cfg.model, batch_size=self.cfg.batch_size,
                             dtype=self.cfg.dtype, enforce_eager=self.cfg.enforce_eager)
        if self.cfg.threads and self.cfg.backend == "transformers":
            import torch

            torch.set_num_threads(int(self.cfg.threads))
        self._lazy = LazyBackend(bcfg, backend)  # an adopted backend stays open when the service stops
        self.backend = self._lazy.get()
        self.model_id = self.backend.model_id
        if self.cfg.index:
            from retrieval_index.index import RuleIndex

            self.index = RuleIndex.load(self.cfg.index)
        if self.cfg.backend == "transformers" and self.cfg.prefix_reuse:
            from toolkit.serving.prefix import PrefixScorer

            self.scorer = PrefixScorer(self.backend, self.scale.labels, self.cfg.batch_size)

    def warmup(self) -> None:
        """One scoring call (and the prefix check): the first forward pass pays one-time costs."""
        rows = [dict(r) for r in WARMUP_PAIRS]
        if self.scorer is not None:
            prompts = [self.builder.student(r, []) for r in rows]
            gap, noise = self.scorer.check(prompts, [r[C.QUERY] for r in rows])
            allowed = max(CHECK_FLOOR.get(self.dtype, 5e-2), CHECK_FACTOR * noise)
            self.prefix_gap = gap
            if gap > allowed:
                log.warning("shared-prefix scoring differs from full-prompt scoring by %.2g (> %.2g) for this model; "
                            "serving full prompts instead", gap, allowed)
                self.scorer = None
            else:
                log.info("shared-prefix scoring matches full-prompt scoring "
                         "(largest gap %.1e; batching alone: %.1e; %s)", gap, noise, self.dtype)
        self.score(rows)

    @property
    def dtype(self) -> str:
        model = getattr(self.backend, "model", None)
        if model is None or not hasattr(model, "parameters"):
            return self.cfg.dtype
        return str(next(model.parameters()).dtype).removeprefix("torch.")

    # -- requests ----------------------------------------------------------------

    def rules_for(self, rows: list[dict]) -> list[list[str]]:
        rules = [list(r.get("rules") or []) for r in rows]
        need = [i for i, r in enumerate(rows) if r.get("rules") is None]
        if self.index is not None and need:
            from retrieval_index.retrieve import rule_texts

            texts = rule_texts(self.index, [rows[i][C.QUERY] for i in need], [rows[i][C.TITLE] for i in need],
                               [rows[i].get(C.CATEGORY) for i in need], self.cfg.rules_k)
            for i, t in zip(need, texts):
                rules[i] = rows[i]["rules"] = t  # explain reuses them
        return rules

    def probs(self, rows: list[dict]) -> list[list[float]]:
        """Grade probabilities (scale order, best first) for cleaned pair rows."""
        prompts = [self.builder.student(r, rl) for r, rl in zip(rows, self.rules_for(rows))]
        if self.scorer is not None:
            return self.scorer.score(prompts, [r[C.QUERY] for r in rows])
        return self.backend.score_grades(prompts, self.scale.labels)

    def score(self, rows: list[dict]) -> list[dict]:
        """One result dict per row (the `PairScore` fields)."""
        t0 = time.perf_counter()
        probs = self.probs(rows)
        out = self.results(rows, probs)
        log.debug("scored %d pairs in %.0f ms", len(rows), 1000 * (time.perf_counter() - t0))
        return out

    def results(self, rows: list[dict], probs: list[list[float]]) -> list[dict]:
        scale = self.scale
        arr = np.asarray(probs, dtype=np.float64).reshape(len(probs), len(scale))
        best = arr.argmax(axis=1)  # ties: the better grade (first in scale order)
        cumpt: tuple = (None, None)
        if self.rule is not None:
            cumpt = self.rule.predict(arr)
        out = []
        for i, (row, p) in enumerate(zip(rows, probs)):
            g = scale.grades[int(best[i])]
            res = {
                "id": row.get("id"), "query": row[C.QUERY], "title": row[C.TITLE], "grade_probs": p,
                "grades": [{"grade": gr.value, "label": gr.label, "name": gr.name, "prob": pk}
                           for gr, pk in zip(scale.grades, p)],
                "pred_grade": g.value, "pred_name": g.name,
            }
            if self.rule is not None:
                res.update(cumpt_grade=int(cumpt[0][i]), tier=cumpt[1][i], beta=self.rule.beta)
            out.append(res)
        return out

    def explain(self, rows: list[dict]) -> list[dict]:
        """Generated label-first answers: {explain_text, explain_grade, rationale} per row (greedy)."""
        from toolkit.generation.base import SamplingConfig

        prompts = [self.builder.student(r, rl) for r, rl in zip(rows, self.rules_for(rows))]
        gens = self.backend.generate(
            prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=self.cfg.explain_max_tokens, seed=0))
        out = []
        for g in gens:
            parsed = parse_answer(g.texts[0], self.scale.labels, LABEL_FIRST, g.finish_reasons[0])
            grade = self.scale.by_label(parsed.label) if parsed.ok else None
            rationale = parsed.rationale if parsed.ok else g.texts[0].strip()  # unparseable: show the whole answer
            out.append({"explain_text": g.texts[0], "explain_grade": grade.value if grade else None,
                        "rationale": rationale})
        return out

    def close(self) -> None:
        if self._lazy is not None:
            self._lazy.close()
        self.backend = self.scorer = self._lazy = None
