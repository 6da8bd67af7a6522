"""GRPO reward functions: each parses answers with `toolkit.core.parsing.parse_answer` on the grade scale.

* `grade_match` (TaoSR1's reward): 1 when the answer parses and its grade is the gold grade, else 0.
* `format`: 1 when the answer parses (a label on the scale, in the expected order), else 0.
* `distance`: 1 - |predicted - gold| / (K - 1) over the scale's positions (partial credit for a
  near miss; K = number of grades), 0 when the answer does not parse.
* `consistency`: does the rationale's decision agree with the grade the answer emits? The decision is
  the `Decision:` step (else the rationale's last line); it names grades by name ("Related") or as
  "grade 3". 1 when it names only the emitted grade, 0 when it names another (the discriminative
  hallucination `toolkit eval` measures: reasoning for one grade, emitting another) or the answer does
  not parse, 0.5 when it names none. Use it beside grade_match with a small weight
  (`--reward grade_match --reward consistency --trl reward_weights=[1,0.2]`): alone it would reward a
  consistent wrong answer.

Weights go to TRL's `reward_weights` (one per reward, in the order given); the default is grade_match alone.

TRL calls a reward function as `f(prompts=..., completions=..., completion_ids=..., **columns)`,
where `columns` holds the dataset's other columns, one value per completion; ours read
`gold_label`. Completions are strings or, for conversational data, lists of messages.
"""

from __future__ import annotations

import re
from typing import Callable

from toolkit.core import columns as C
from toolkit.core.grades import GradeScale
from toolkit.core.parsing import LABEL_FIRST, parse_answer

RewardFn = Callable[..., list[float]]


def completion_text(completion) -> str:
    """The answer text of a TRL completion (a string, or a list of messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        return "".join(m.get("content") or "" for m in completion
                       if isinstance(m, dict) and m.get("role", "assistant") == "assistant")
    return str(completion or "")


def _position(scale: GradeScale) -> dict[str, int]:
    return {g.label: i for i, g in enumerate(scale.grades)}


def grade_match(scale: GradeScale, order: str = LABEL_FIRST) -> RewardFn:
    labels = scale.labels

    def grade_match(completions, **kwargs) -> list[float]:
        gold = kwargs[C.GOLD_LABEL]
        return [float(parse_answer(completion_text(c), labels, order).label == g) for c, g in zip(completions, gold)]

    return grade_match


def format_reward(scale: GradeScale, order: str = LABEL_FIRST) -> RewardFn:
    labels = scale.labels

    def format(completions, **kwargs) -> list[float]:  # noqa: A001 - TRL logs the reward under the function's name
        return [float(parse_answer(completion_text(c), labels, order).ok) for c in completions]

    return format


def distance(scale: GradeScale, order: str = LABEL_FIRST) -> RewardFn:
    labels, pos, span = scale.labels, _position(scale), max(1, len(scale) - 1)

    def distance(completions, **kwargs) -> list[float]:
        gold = kwargs[C.GOLD_LABEL]
        out = []
        for c, g in zip(completions, gold):
            p = parse_answer(completion_text(c), labels, order)
            out.append(0.0 if p.label is None else 1.0 - abs(pos[p.label] - pos[g]) / span)
        return out

    return distance


def decision_text(rationale: str | None) -> str:
    """The decision step of a rationale (`5. Decision: ...` / `Decision: ...`), else its last non-empty line."""
    lines = [ln.strip() for ln in (rationale or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^(\d+\.\s*)?decision\s*:", ln, flags=re.IGNORECASE):
            return ln
    return lines[-1] if lines else ""


def grades_named(text: str, scale: GradeScale) -> set[str]:
    """Labels of the grades a text names: by grade name (whole word) or as `grade N` / `grade: N`."""
    out = set()
    for g in scale.grades:
        if re.search(rf"\b{re.escape(g.name)}\b", text, flags=re.IGNORECASE) or \
                re.search(rf"\bgrade\s*[:=]?\s*{re.escape(g.label)}\b", text, flags=re.IGNORECASE):
            out.add(g.label)
    return out


def consistency(scale: GradeScale, order: str = LABEL_FIRST) -> RewardFn:
    labels = scale.labels

    def consistency(completions, **kwargs) -> list[float]:
        out = []
        for c in completions:
            p = parse_answer(completion_text(c), labels, order)
            if not p.ok:
                out.append(0.0)
                continue
            named = grades_named(decision_text(p.rationale), scale)
            out.append(0.5 if not named else float(named == {p.label}))
        return out

    return consistency


BUILDERS = {"grade_match": grade_match, "format": format_reward, "distance": distance, "consistency": consistency}


def make_rewards(names: list[str], scale: GradeScale, order: str = LABEL_FIRST) -> list[RewardFn]:
    return [BUILDERS[n](scale, order) for n in names]
