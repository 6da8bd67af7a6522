"""Evaluation while training: first-token macro-F1 on a dev split every N steps, and the best step kept.

`toolkit train sft|dpo|grpo ... --eval-pairs out/demo/retrieved --eval-index out/demo/index --eval-every 20
--select-best macro_f1` scores the dev split (`--eval-split`, default dev; at most `--eval-limit` pairs,
a fixed seeded sample) with the model being trained. The scoring itself is the toolkit's (`toolkit.training`:
the same code as `toolkit score`, first-token grade probabilities on the student prompt, rules from the
index), handed to the trainer as `dev(scale, order, tokenizer, template, prompt_template) -> score(model)`;
this module keeps the curve, the best step and the early stop. Each evaluation records macro-F1, accuracy, the mean
probability of the gold grade and the predicted-grade distribution; a warning names a collapse (one
grade predicted for more than 90% of the pairs). With `--select-best macro_f1` the
checkpoint written is the best evaluated step's weights (kept in memory, on the CPU), not the last
step's; `--early-stop K` ends training after K evaluations without a better macro-F1. The curve is saved
beside the checkpoint as eval_curve.json and eval_curve.png, and the manifest's counts say which step was
kept.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


log = logging.getLogger(__name__)

COLLAPSE = 0.9  # one predicted grade for more than this share of the dev pairs: a collapse
CURVE_JSON, CURVE_PNG = "eval_curve.json", "eval_curve.png"


@dataclass
class Curve:
    points: list[dict] = field(default_factory=list)
    best: dict | None = None
    best_state: dict | None = None

    def summary(self) -> dict:
        if not self.points:
            return {}
        last = self.points[-1]
        return {"dev_evals": len(self.points), "dev_macro_f1_last": round(last["macro_f1"], 4),
                "dev_macro_f1_best": round(self.best["macro_f1"], 4), "dev_best_step": self.best["step"]}


def metrics_of(gold: list[int], probs: list[list[float]], scale) -> dict:
    """The numbers each evaluation records, from gold grades and grade probabilities (best grade first)."""
    from toolkit.core.metrics import classification_metrics, grade_indices

    p = np.asarray(probs, dtype=float)
    pred = [scale.grades[int(i)].value for i in p.argmax(axis=1)]
    m = classification_metrics(grade_indices(gold, scale), grade_indices(pred, scale), scale)
    pos = {g: i for i, g in enumerate(scale.values)}
    return {"macro_f1": float(m["macro_f1"]), "accuracy": float(m["accuracy"]),
            "gold_prob": float(np.mean([p[r, pos[g]] for r, g in enumerate(gold)])),
            "pred_share": {str(g): float(np.mean(np.asarray(pred) == g)) for g in scale.values}, "n": len(gold)}


def make_callback(score, every: int, select_best: bool, early_stop: int | None,
                  remedy: str = "in SFT try --class-weights inverse; else a lower learning rate or fewer steps"):
    """A TrainerCallback calling `score(model) -> dict` (`evaluate` for the LLMs, the cross-encoder's own for the
    baseline) every `every` steps and after the last, and the Curve it fills; `remedy` ends the collapse warning."""
    from transformers import TrainerCallback

    curve = Curve()

    class DevEvalCallback(TrainerCallback):
        def _run(self, state, model, control=None):
            if curve.points and curve.points[-1]["step"] == state.global_step:
                return
            point = {"step": int(state.global_step), **score(model)}
            curve.points.append(point)
            top_grade, top_share = max(point["pred_share"].items(), key=lambda kv: kv[1])
            log.info("dev eval at step %d: macro-F1 %.4f, accuracy %.4f", point["step"], point["macro_f1"],
                     point["accuracy"])
            if top_share > COLLAPSE:
                log.warning("dev eval at step %d: %.0f%% of the dev pairs are predicted grade %s: the model is "
                            "collapsing to one grade (%s)", point["step"], 100 * top_share, top_grade, remedy)
            if curve.best is None or point["macro_f1"] > curve.best["macro_f1"]:
                curve.best = point
                if select_best:
                    curve.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            elif early_stop and control is not None:
                since = sum(1 for p in curve.points if p["step"] > curve.best["step"])
                if since >= early_stop:
                    log.warning("early stop at step %d: %d dev evaluations without a better macro-F1 than step %d",
                                point["step"], since, curve.best["step"])
                    control.should_training_stop = True

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and state.global_step % every == 0:
                self._run(state, model, control)
            return control

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self._run(state, model)  # the last step is always evaluated
            return control

    return DevEvalCallback(), curve


def finish(curve: Curve, model, select_best: bool) -> dict:
    """After training: load the best evaluated step's weights into the model about to be saved (with select_best),
    and the counts for the manifest (which step is kept)."""
    kept = curve.points[-1]["step"] if curve.points else None
    if select_best and curve.best is not None:
        if curve.best_state is not None and curve.best["step"] != kept:
            model.load_state_dict(curve.best_state)
            log.info("keeping the weights of step %d (dev macro-F1 %.4f) over the last step's (%.4f)",
                     curve.best["step"], curve.best["macro_f1"], curve.points[-1]["macro_f1"])
        kept = curve.best["step"]
    return {**curve.summary(), "dev_kept_step": kept}


def write_curve(folder: Path, curve: Curve, kept_step: int | None) -> None:
    (folder / CURVE_JSON).write_text(json.dumps({"points": curve.points,
                                                 "best_step": curve.best and curve.best["step"],
                                                 "kept_step": kept_step}, indent=1), encoding="utf-8")
    from toolkit.core import plots

    if not curve.points or not plots.available():
        return
    fig = plots._figure(5.5, 3.2)
    ax = fig.add_subplot()
    steps = [p["step"] for p in curve.points]
    ax.plot(steps, [p["macro_f1"] for p in curve.points], marker="o", label="dev macro-F1")
    ax.plot(steps, [p["accuracy"] for p in curve.points], marker=".", linestyle="--", label="dev accuracy")
    if kept_step is not None:
        ax.axvline(kept_step, color="grey", linestyle=":", label=f"kept: step {kept_step}")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Evaluation while training", fontsize=10)
    fig.savefig(folder / CURVE_PNG)
