"""One robust parser for model answers, in both output orders.

* label-first (TaoSR1's "post-CoT", the default): `4\nReason: ...` — the grade label is the
  first token of the answer, the rationale follows.
* CoT-first (for ablations, and the teacher's format): `...reasoning...\nGrade: 4`.

Parsing never raises: it returns a status. Statuses:
`ok`, `empty`, `missing_label`, `invalid_label` (a grade-like answer not on the scale),
`conflicting_labels` (two different grades where one is expected), `truncated` (the
generation hit its token limit before the label of a CoT-first answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LABEL_FIRST = "label_first"
COT_FIRST = "cot_first"
ORDERS = (LABEL_FIRST, COT_FIRST)

OK = "ok"
EMPTY = "empty"
MISSING = "missing_label"
INVALID = "invalid_label"
CONFLICT = "conflicting_labels"
TRUNCATED = "truncated"
STATUSES = (OK, EMPTY, MISSING, INVALID, CONFLICT, TRUNCATED)

_PREFIX = re.compile(r"^[\s>*_`\"'#\-\[\(]*(?:(?:final\s+)?(?:grade|answer|label|rating|relevance|score)"
                     r"\s*[:=\-]?\s*)?[\s*_`\"'\[\(]*", re.I)
_MARKER = re.compile(r"(?:final\s+)?(?:grade|answer|label|rating|relevance)\s*[:=]\s*"
                     r"[*_`\"'\[\(]*([^\s*_`\"'\]\).,;]+)", re.I)
_REASON = re.compile(r"^[\s\-:.)\]*_`]*(?:reason(?:ing)?|rationale|because|explanation)?\s*[:\-]?\s*", re.I)


@dataclass(frozen=True)
class Parsed:
    label: str | None  # the grade label as emitted (on the scale) or None
    status: str
    rationale: str

    @property
    def ok(self) -> bool:
        return self.status == OK


def _token(text: str) -> str:
    m = re.match(r"[^\s*_`\"'\]\).,;:]+", text)
    return m.group(0) if m else ""


def parse_answer(text: str | None, labels: list[str], order: str = LABEL_FIRST,
                 finish_reason: str | None = None) -> Parsed:
    """Parse a model answer into (label, status, rationale)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}; got {order!r}")
    text = (text or "").strip()
    if not text:
        return Parsed(None, TRUNCATED if finish_reason == "length" else EMPTY, "")
    if order == LABEL_FIRST:
        return _label_first(text, labels)
    return _cot_first(text, labels, finish_reason)


def _label_first(text: str, labels: list[str]) -> Parsed:
    head = _PREFIX.sub("", text, count=1)
    tok = _token(head)
    rest = head[len(tok):]
    if tok not in labels:
        # `4/5`, `Grade 4`, `Excellent (4)`... are not label-first answers
        return Parsed(None, INVALID if tok and (tok.isdigit() or len(tok) <= 2) else MISSING, text)
    if re.match(r"[.)][ \t]+\S", rest) and re.search(r"\n\s*\**\s*2[.)][ \t]", rest):
        # "1. Query understanding: ...\n2. ...": a numbered list (a CoT-first answer), not a grade
        return Parsed(None, MISSING, text)
    first_line = rest.split("\n", 1)[0]
    # "3 or 4", "3-4", "3/4": two different grades where one is expected
    alt = re.match(r"^\s*(?:or|/|-|to|,)\s*([^\s*_`\"'\]\).,;:]+)", first_line, re.I)
    if alt and alt.group(1) in labels and alt.group(1) != tok:
        return Parsed(None, CONFLICT, text)
    rationale = _REASON.sub("", rest, count=1).strip()
    return Parsed(tok, OK, rationale)


def _cot_first(text: str, labels: list[str], finish_reason: str | None) -> Parsed:
    found = [m for m in _MARKER.finditer(text)]
    on_scale = [m for m in found if m.group(1) in labels]
    if not found:
        # a bare label on the last line also counts ("...\n4")
        last = text.rstrip().rsplit("\n", 1)[-1].strip().strip("*_`\"'.")
        if last in labels and "\n" in text.strip():
            return Parsed(last, OK, text.rstrip()[: text.rstrip().rfind("\n")].strip())
        return Parsed(None, TRUNCATED if finish_reason == "length" else MISSING, text)
    if not on_scale:
        return Parsed(None, TRUNCATED if finish_reason == "length" else INVALID, text)
    final = on_scale[-1]
    # a repeated label is fine when it repeats the same grade; two different grades conflict
    if len({m.group(1) for m in on_scale}) > 1:
        return Parsed(None, CONFLICT, text)
    return Parsed(final.group(1), OK, text[: final.start()].strip())


# -- the rationale's own decision, for "discriminative hallucination" ----------------

_DECISION = re.compile(r"(?:^|\n)\s*(?:\d+[.)]\s*)?\**\s*decision\s*\**\s*[:\-]\s*(.+)", re.I)


def decision_label(rationale: str, labels: list[str], names: list[str]) -> str | None:
    """The grade the rationale's decision step states (by label or grade name), or None.

    Used to measure discriminative hallucination: a rationale whose decision step
    implies one grade while the emitted label is another.
    """
    m = None
    for m in _DECISION.finditer(rationale or ""):
        pass
    if m is None:
        return None
    line = m.group(1).split("\n", 1)[0]
    low = line.lower()
    hits = [(low.find(n.lower()), lab) for n, lab in zip(names, labels)
            if re.search(rf"\b{re.escape(n.lower())}\b", low)]
    if hits:
        return min(hits)[1]
    for tok in re.findall(r"[^\s*_`\"'\]\).,;:()\[]+", line):
        if tok in labels:
            return tok
    return None
