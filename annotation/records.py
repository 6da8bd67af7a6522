"""Rows of a machine-made dataset -> Argilla records (fields, metadata, the model's suggestion).

Record ids are pair ids, so pushing the same rows again updates records instead of adding copies.
Everything here works on plain dicts (`DataFrame.iter_rows(named=True)`) and is pure apart from
building the `argilla.Record` at the end.
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import Any

from annotation import settings as S
from annotation.inputs import ID_COL
from toolkit.core import columns as C
from toolkit.core.grades import GradeScale

TEACHER = "teacher"  # gen-cot names its model column so


def answer_text(message_list: Any) -> str | None:
    """The content of a TRL completion / chosen / rejected (a list with one assistant message) or a string."""
    if message_list is None:
        return None
    if isinstance(message_list, str):
        try:
            message_list = json.loads(message_list)
        except ValueError:
            return message_list
    if isinstance(message_list, dict):
        return str(message_list.get("content", ""))
    if isinstance(message_list, (list, tuple)) and message_list:
        last = message_list[-1]
        return str(last.get("content", "")) if isinstance(last, dict) else str(last)
    return None


def user_text(prompt: Any) -> str | None:
    """The last user message of a conversational prompt."""
    if isinstance(prompt, str):
        try:
            prompt = json.loads(prompt)
        except ValueError:
            return prompt
    if isinstance(prompt, (list, tuple)):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else None
    return None


def leading_grade(text: str | None, scale: GradeScale) -> int | None:
    """The grade an answer states first (label-first answers), or None."""
    if not text:
        return None
    head = text.strip().split(maxsplit=1)
    if not head:
        return None
    token = head[0].strip(".:,;*#<>[]()")
    g = scale.by_label(token)
    return g.value if g else None


def model_of(row: dict) -> str | None:
    """The producing model's id: `model`, or gen-cot's `teacher` column (a local folder: its name)."""
    model = row.get(C.MODEL) or row.get(TEACHER)
    if not model:
        return None
    model = str(model)
    return model.rstrip("/").rsplit("/", 1)[-1] if model.startswith(("/", "~", "./")) else model


def cot_grade(row: dict, scale: GradeScale) -> int | None:
    """The grade a CoT answer gives: pred_grade, else the answer's leading label, else gold
    (gen-cot keeps only answers whose grade equals the gold grade)."""
    if row.get(C.PRED_GRADE) is not None:
        return int(row[C.PRED_GRADE])
    lead = leading_grade(cot_answer(row), scale)
    return lead if lead is not None else row.get(C.GRADE)


def grade_name(value: Any, scale: GradeScale) -> str:
    g = next((g for g in scale.grades if g.value == value), None)
    return f"{value} {g.name}" if g else str(value)


def item_markdown(row: dict) -> str:
    parts = [f"**{_md(row.get(C.TITLE))}**"] if row.get(C.TITLE) else []
    facts = [f"{label}: {_md(row.get(col))}" for label, col in (("Brand", C.BRAND), ("Category", C.CATEGORY))
             if row.get(col)]
    if facts:
        parts.append("  \n".join(facts))
    if row.get(C.DESCRIPTION):
        parts.append(_md(row[C.DESCRIPTION]))
    attrs = _attributes(row.get(C.ATTRIBUTES))
    if attrs:
        parts.append("\n".join(f"- {_md(k)}: {_md(v)}" for k, v in attrs.items()))
    return "\n\n".join(parts)


def rules_markdown(row: dict) -> str | None:
    texts = row.get(C.RULE_TEXTS)
    if texts is not None and len(texts):
        return "\n".join(f"{i}. {_md(t)}" for i, t in enumerate(texts, 1))
    ids = row.get(C.RULE_IDS)
    if ids is not None and len(ids):
        return "Rule ids: " + ", ".join(f"`{i}`" for i in ids)
    return None


def grade_probs_of(row: dict, scale: GradeScale) -> dict[int, float]:
    probs = row.get(C.GRADE_PROBS)
    if probs is None or len(probs) != len(scale):
        return {}
    return {g.value: float(p) for g, p in zip(scale.grades, probs) if p is not None and math.isfinite(float(p))}


def output_markdown(kind: str, row: dict, scale: GradeScale, blind: bool = False) -> str:
    if kind == "cot":
        model = f" · {model_of(row)}" if model_of(row) else ""
        head = f"**Model grade: {grade_name(cot_grade(row, scale), scale)}**{model}"
        return f"{head}\n\n{_lines(cot_answer(row) or '')}"
    if kind == "prefs":
        return comparison_html(row, scale)
    if kind == "hard":
        n, k = row.get(C.N_SAMPLES), row.get(C.N_CORRECT)
        rate = row.get(C.PASS_RATE)
        text = f"**{k} of {n}** rollouts were right" if n is not None and k is not None else "Rollouts"
        text += f" (pass rate {rate:.2f})" if rate is not None else ""
        if row.get(C.DIFFICULTY) is not None:
            text += f" · difficulty: {row[C.DIFFICULTY]}"
        return f"{text}\n\nGold grade: **{grade_name(row.get(C.GRADE), scale)}**"
    if blind:  # judged without the model's answer
        return (f"Gold grade: **{grade_name(row.get(C.GRADE), scale)}** "
                "(the model's prediction is hidden in this round)")
    probs = grade_probs_of(row, scale)
    pred = row.get(C.PRED_GRADE)
    p = f" (p={probs[pred]:.2f})" if pred in probs else ""
    text = f"Model: **{grade_name(pred, scale)}**{p} · gold: **{grade_name(row.get(C.GRADE), scale)}**"
    if probs:
        text += "\n\nGrade probabilities: " + " · ".join(f"{grade_name(v, scale)} {q:.2f}" for v, q in probs.items())
    return text


def cot_answer(row: dict) -> str | None:
    """The teacher's answer of a gen-cot row: the completion's content, else the rationale."""
    return answer_text(row.get(C.COMPLETION)) if row.get(C.COMPLETION) is not None else row.get(C.RATIONALE)


def comparison_html(row: dict, scale: GradeScale) -> str:
    chosen, rejected = answer_text(row.get(C.CHOSEN)) or "", answer_text(row.get(C.REJECTED)) or ""
    cg = chosen_grade(row, scale)
    left = "Chosen" + (f" — {grade_name(cg, scale)}" if cg is not None else "") + (f" ({row[C.CHOSEN_SOURCE]})"
                                                                                  if row.get(C.CHOSEN_SOURCE) else "")
    rg_ = row.get(C.REJECTED_GRADE)
    right = "Rejected" + (f" — {grade_name(rg_, scale)}" if rg_ is not None else "")
    cell = lambda t: html.escape(t).replace("\n", "<br>")  # noqa: E731
    return (
        '<table style="width:100%;table-layout:fixed"><tr>'
        f'<th style="text-align:left">{html.escape(left)}</th>'
        f'<th style="text-align:left">{html.escape(right)}</th></tr>'
        f'<tr><td style="vertical-align:top">{cell(chosen)}</td>'
        f'<td style="vertical-align:top">{cell(rejected)}</td></tr></table>'
    )


def chosen_grade(row: dict, scale: GradeScale) -> int | None:
    for col in (C.CHOSEN_GRADE, C.GRADE):
        if row.get(col) is not None:
            return int(row[col])
    return leading_grade(answer_text(row.get(C.CHOSEN)), scale)


def suggestion(kind: str, row: dict, scale: GradeScale) -> tuple[int, float | None, str] | None:
    """The model's answer to the grade question: (grade, score or None, agent)."""
    agent = str(model_of(row) or "model")
    if kind == "cot":
        value = cot_grade(row, scale)
    elif kind == "prefs":
        value, agent = chosen_grade(row, scale), str(row.get(C.CHOSEN_SOURCE) or "chosen")
    elif kind == "hard" and row.get(C.PRED_GRADE) is None:
        value, agent = row.get(C.GRADE), "gold"
    else:
        value = row.get(C.PRED_GRADE)
    if value is None or int(value) not in scale.values:
        return None
    return int(value), grade_probs_of(row, scale).get(int(value)), agent


def metadata(kind: str, spec: S.KindSpec, row: dict, scale: GradeScale, blind: bool = False) -> dict:
    values = {
        S.M_GOLD: row.get(C.GRADE),
        S.M_CATEGORY: str(row.get(C.CATEGORY) or "").split(">")[0].strip() or None,
        S.M_PRED: cot_grade(row, scale) if kind == "cot" else row.get(C.PRED_GRADE),
        C.MODEL: model_of(row),
        S.M_PRED_PROB: grade_probs_of(row, scale).get(row.get(C.PRED_GRADE)),
    }
    out = {}
    for name, kind_ in S.COMMON_METADATA + spec.metadata:
        if blind and name in (S.M_PRED, S.M_PRED_PROB):
            continue
        v = values[name] if name in values else row.get(name)
        if v is None or (isinstance(v, float) and not math.isfinite(v)) or v == "":
            continue
        out[name] = float(v) if kind_ == S.FLOAT else int(v) if kind_ == S.INTEGER else str(v)
    return out


def fields(kind: str, row: dict, scale: GradeScale, blind: bool = False) -> dict:
    query = row.get(C.QUERY)
    out = {S.F_QUERY: str(query) if query else (user_text(row.get(C.PROMPT)) or "(no query)")}
    if row.get(C.TITLE):
        out[S.F_ITEM] = item_markdown(row)
    rules = rules_markdown(row)
    if rules:
        out[S.F_RULES] = rules
    out[S.F_OUTPUT] = output_markdown(kind, row, scale, blind)
    return out


def to_record(kind: str, spec: S.KindSpec, row: dict, scale: GradeScale, blind: bool = False):
    import argilla as rg

    sugg = None if blind else suggestion(kind, row, scale)
    agent = (re.sub(r"[^A-Za-z0-9_:./\s-]", "_", sugg[2])[:200] or "model") if sugg else None
    suggestions = [rg.Suggestion(S.Q_GRADE, str(sugg[0]), score=sugg[1], agent=agent)] if sugg else []
    return rg.Record(
        id=str(row[ID_COL]),
        fields=fields(kind, row, scale, blind),
        metadata=metadata(kind, spec, row, scale, blind),
        suggestions=suggestions,
    )


def _attributes(raw: Any) -> dict:
    if not raw:
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return {"attributes": raw}
    return data if isinstance(data, dict) else {"attributes": raw}


def _lines(text: str) -> str:
    """Plain text in a markdown field: single line breaks kept (markdown would join the lines)."""
    return _md(text).replace("\n", "  \n")


def _md(text: Any) -> str:
    """Text shown in a markdown field, with the characters that would start HTML escaped."""
    return str(text).replace("<", "&lt;").replace(">", "&gt;")
