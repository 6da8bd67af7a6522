"""Prompt templates (files in toolkit/templates/) and answer formatting.

Templates are plain text with `### system` / `### user` sections and `{field}` slots.
The student answers label-first by default (`4\\nReason: ...`); the teacher writes a
5-step rationale ending in `Grade: N` for the gold grade.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale
from toolkit.core.parsing import COT_FIRST, LABEL_FIRST, ORDERS

Messages = list[dict]

ANSWER_INSTRUCTIONS = {
    LABEL_FIRST: "Answer with the grade alone on the first line, then a line starting with \"Reason:\" "
                 "that explains it briefly.",
    COT_FIRST: "First explain your reasoning briefly, then end with a last line of the form \"Grade: N\".",
}
MAX_DESCRIPTION_CHARS = 300


@lru_cache(maxsize=32)
def load_template(spec: str) -> tuple[tuple[str, str], ...]:
    """A template by built-in name (`student`, `teacher`) or file path -> ((role, text), ...)."""
    if Path(spec).suffix == ".txt" and Path(spec).exists():
        text = Path(spec).read_text(encoding="utf-8")
    else:
        try:
            text = resources.files("toolkit").joinpath("templates", f"{spec}.txt").read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"unknown prompt template {spec!r}; "
                            "use student, teacher or a .txt file with ### system / ### user sections") from None
    parts = re.split(r"^###\s*(system|user|assistant)\s*$", text, flags=re.M)
    sections = tuple((parts[i], parts[i + 1].strip("\n")) for i in range(1, len(parts) - 1, 2))
    if not sections or sections[-1][0] != "user":
        raise UserError(f"prompt template {spec!r} needs sections `### system` (optional) and `### user` (last)")
    return sections


def scale_text(scale: GradeScale) -> str:
    return "\n".join(f"{g.label} = {g.name}" for g in scale.grades)


def item_text(row: dict) -> str:
    lines = [f"Title: {row.get(C.TITLE, '')}"]
    if row.get(C.BRAND):
        lines.append(f"Brand: {row[C.BRAND]}")
    if row.get(C.CATEGORY):
        lines.append(f"Category: {row[C.CATEGORY]}")
    attrs = row.get(C.ATTRIBUTES)
    if attrs:
        try:
            d = json.loads(attrs) if isinstance(attrs, str) else dict(attrs)
            attrs = "; ".join(f"{k}: {v}" for k, v in d.items())
        except (ValueError, TypeError):
            pass
        lines.append(f"Attributes: {attrs}")
    desc = row.get(C.DESCRIPTION) or ""
    if desc:
        lines.append(f"Description: {desc[:MAX_DESCRIPTION_CHARS]}"
                     f"{'…' if len(desc) > MAX_DESCRIPTION_CHARS else ''}")
    return "\n".join(lines)


def rules_text(rules: list[str] | None) -> str:
    return "\n".join(f"- {r}" for r in rules) if rules else "(none retrieved)"


@dataclass(frozen=True)
class PromptBuilder:
    scale: GradeScale
    order: str = LABEL_FIRST
    student_template: str = "student"
    teacher_template: str = "teacher"

    def __post_init__(self):
        if self.order not in ORDERS:
            raise UserError(f"answer order must be one of {', '.join(ORDERS)}; got {self.order!r}")

    def _render(self, template: str, fields: dict) -> Messages:
        out = []
        for role, text in load_template(template):
            try:
                out.append({"role": role, "content": text.format_map(fields)})
            except KeyError as e:
                raise UserError(f"prompt template {template!r} uses unknown field {e}; "
                                f"available: {', '.join(sorted(fields))}") from None
        return out

    def fields(self, row: dict, rules: list[str] | None) -> dict:
        return {
            "query": row.get(C.QUERY, ""),
            "item": item_text(row),
            "rules": rules_text(rules),
            "grade_scale": scale_text(self.scale),
            "answer_instruction": ANSWER_INSTRUCTIONS[self.order],
        }

    def student(self, row: dict, rules: list[str] | None = None) -> Messages:
        return self._render(self.student_template, self.fields(row, rules))

    def teacher(self, row: dict, rules: list[str] | None = None, grade: int | None = None) -> Messages:
        g = self.scale.by_value(int(grade if grade is not None else row[C.GRADE]))
        return self._render(self.teacher_template,
                            {**self.fields(row, rules), "gold_label": g.label, "gold_name": g.name})

    def target(self, label: str, rationale: str) -> str:
        """The assistant answer in this builder's order."""
        rationale = " ".join(rationale.split()) if "\n" not in rationale else rationale.strip()
        if self.order == LABEL_FIRST:
            return f"{label}\nReason: {rationale}" if rationale else label
        return f"{rationale}\nGrade: {label}" if rationale else f"Grade: {label}"
