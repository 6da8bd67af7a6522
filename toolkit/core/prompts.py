"""Prompt templates (files in toolkit/templates/) and answer formatting.

Templates are plain text with `### system` / `### user` sections and `{field}` slots.
The student answers label-first by default (`4\\nReason: ...`); the teacher writes a
5-step rationale ending in `Grade: N` for the gold grade.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from functools import cached_property, lru_cache
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
MAX_TEMPLATE_BYTES = 64 * 1024  # a prompt template is recorded in every manifest built on it


STUDENT = "student"  # the built-in student template
STUDENT_FIELDS = ("query", "item", "rules", "grade_scale", "answer_instruction")
TEMPLATE_HELP = ("Student prompt template: a text file with `### system` and `### user` sections and the "
                 "fields {query}, {item}, {rules}, {grade_scale}, {answer_instruction}; default: the one the model "
                 "records, else the built-in prompt.")


def template_source(spec: str) -> str:
    """The text of a template given by built-in name (`student`, `teacher`), file path, or the text itself
    (anything with a line break: a prompt record keeps the text)."""
    if "\n" in spec:
        return spec
    builtin = resources.files("toolkit").joinpath("templates", f"{spec}.txt")
    if "/" not in spec and "\\" not in spec and builtin.is_file():
        return builtin.read_text(encoding="utf-8")
    path = Path(spec)
    if path.is_file():
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise UserError(f"prompt template {spec} is {path.stat().st_size:,} bytes; a template is one prompt's "
                            f"text with {{field}} slots, at most {MAX_TEMPLATE_BYTES // 1024} KiB")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"prompt template {spec} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    raise UserError(f"prompt template {spec}: {'a folder, not a file' if path.is_dir() else 'no such file'}; pass a "
                    "text file with `### system` and `### user` sections, or a built-in name (student, teacher)")


def load_template(spec: str) -> tuple[tuple[str, str], ...]:
    """A template (see template_source) -> ((role, text), ...)."""
    return _sections(template_source(spec), _shown(spec))


@lru_cache(maxsize=32)
def _sections(text: str, shown: str) -> tuple[tuple[str, str], ...]:
    parts = re.split(r"^###\s*(system|user|assistant)\s*$", text, flags=re.M)
    sections = tuple((parts[i], parts[i + 1].strip("\n")) for i in range(1, len(parts) - 1, 2))
    if not sections or sections[-1][0] != "user":
        raise UserError(f"prompt template {shown} needs sections `### system` (optional) and `### user` (last)")
    return sections


def student_template_text(spec: str | None) -> str | None:
    """What a student template spec stands for in a prompt record: None for the built-in `student` (or None),
    else the template's text (a file's, or `spec` itself), checked for its sections and fields."""
    if spec is None or spec == STUDENT:
        return None
    text = template_source(spec)
    sections = _sections(text, _shown(spec))
    try:
        used = {name for _, body in sections for _, name, _, _ in string.Formatter().parse(body) if name}
    except ValueError as e:  # a lone brace
        raise UserError(f"prompt template {_shown(spec)}: {e}; write a literal brace as {{{{ or }}}}") from None
    unknown = sorted(used - set(STUDENT_FIELDS))
    if unknown:
        raise UserError(f"prompt template {_shown(spec)} uses unknown field(s) {', '.join(unknown)}; a student "
                        f"prompt has {', '.join(STUDENT_FIELDS)} (write a literal brace as {{{{ or }}}})")
    if sections[0][0] != "system":  # the trainers would add the built-in one, and scoring would not
        raise UserError(f"prompt template {_shown(spec)} needs a `### system` section first: the trainers need a "
                        "system message, and the model must be scored on the prompt it learned")
    if "query" not in used or "item" not in used:
        raise UserError(f"prompt template {_shown(spec)} must use {{query}} and {{item}}: without them every pair "
                        "gets the same prompt")
    return text


def _shown(spec: str) -> str:
    return "(recorded text)" if "\n" in spec else repr(spec)


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
    student_template: str | None = STUDENT  # a name, a file, or a record's text; None: the built-in student
    teacher_template: str = "teacher"

    def __post_init__(self):
        if self.order not in ORDERS:
            raise UserError(f"answer order must be one of {', '.join(ORDERS)}; got {self.order!r}")

    @cached_property
    def _loaded(self) -> dict:  # template spec -> sections, read once per builder
        return {}

    def _render(self, template: str, fields: dict) -> Messages:
        if template not in self._loaded:
            self._loaded[template] = load_template(template)
        out = []
        for role, text in self._loaded[template]:
            try:
                out.append({"role": role, "content": text.format_map(fields)})
            except KeyError as e:
                raise UserError(f"prompt template {_shown(template)} uses unknown field {e}; "
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
        return self._render(self.student_template or STUDENT, self.fields(row, rules))

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
