"""Resolve reviewers' answers per record and merge the decisions back into the dataset.

Resolution (`resolve`), per record, over *submitted* answers only (drafts and discarded ones
do not count):
- fewer than `min_submitted` answers -> `pending`: the row stays as it was;
- `majority`: each label question (grade, accept) takes the value most reviewers gave; a tie
  -> `conflict` (the row stays as it was, listed for a tie-break);
- `unanimous`: all reviewers must agree on both questions, else `conflict`;
- `trust` (with a named reviewer): that reviewer's answers win whenever they answered, however
  many others did; records they did not answer fall back to `majority`.
A correction text comes from a reviewer who agreed with the resolved answers (first by name).

Merge (`merge`), per kind, for a resolved record:
- every kind: a corrected grade overrides the gold `grade` (and is logged);
- cot (SFT set): `accept` = no drops the row (rationale_rejected) unless a corrected answer
  is given, which replaces the completion/rationale; a grade that no longer matches the
  answer's grade drops it too (grade_changed);
- prefs (DPO set): `accept` = no drops the pair (pair_rejected) unless a corrected chosen
  answer is given; a grade other than the chosen answer's drops it (grade_changed);
- hard: `accept` = no drops the pair; a changed grade clears pass_rate / n_correct /
  difficulty, which were measured against the old gold (rerun label-difficulty for them);
- errors: `accept` = no drops the pair from the evaluation set; `correct` is recomputed.
Every changed cell and dropped row goes to the change log.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from annotation import settings as S
from annotation.inputs import ID_COL
from annotation.records import chosen_grade, cot_grade, leading_grade
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale

POLICIES = ("majority", "unanimous", "trust")
ACCEPTED, CORRECTED, REJECTED, PENDING, CONFLICT, NOT_REVIEWED = (
    "accepted", "corrected", "rejected", "pending", "conflict", "not_reviewed")
STATUSES = (ACCEPTED, CORRECTED, REJECTED, PENDING, CONFLICT, NOT_REVIEWED)
ROW = "(row)"  # the change-log `column` of a dropped row


@dataclass(frozen=True)
class Policy:
    name: str = "majority"
    trusted: str | None = None
    min_submitted: int = 1

    def __post_init__(self):
        if self.name not in POLICIES:
            raise UserError(f"--policy {self.name!r} is unknown; use one of {', '.join(POLICIES)}")
        if self.name == "trust" and not self.trusted:
            raise UserError("--policy trust needs the reviewer's username: pass --trusted-reviewer NAME")
        if self.name != "trust" and self.trusted:
            raise UserError(f"--trusted-reviewer {self.trusted} only applies with --policy trust (got --policy "
                            f"{self.name})")
        if int(self.min_submitted) < 1:
            raise UserError(f"--min-submitted must be at least 1; got {self.min_submitted}")


@dataclass
class Decision:
    status: str  # resolved | pending | conflict
    reviewers: list[str]
    grade: int | None = None
    accept: str | None = None
    correction: str | None = None
    comment: str | None = None
    note: str = ""


def _vote(values: list[Any], unanimous: bool) -> Any:
    counts = Counter(values).most_common()
    if not counts or (unanimous and len(counts) > 1) or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def resolve(answers: dict[str, dict[str, Any]], policy: Policy) -> Decision:
    """answers: reviewer -> {question: value}, submitted answers of one record."""
    names = sorted(answers)
    comment = " | ".join(f"{n}: {answers[n][S.Q_COMMENT].strip()}" for n in names
                         if (answers[n].get(S.Q_COMMENT) or "").strip()) or None
    if policy.name == "trust" and policy.trusted in answers:
        a = answers[policy.trusted]
        if a.get(S.Q_GRADE) is None or a.get(S.Q_ACCEPT) is None:
            return Decision("conflict", names, comment=comment, note=f"{policy.trusted} left a question empty")
        return Decision("resolved", [policy.trusted], int(a[S.Q_GRADE]), a[S.Q_ACCEPT], _text(a.get(S.Q_CORRECTION)),
                        comment)
    if len(answers) < policy.min_submitted:
        return Decision("pending", names, comment=comment, note=f"{len(answers)} of {policy.min_submitted} answers")
    unanimous = policy.name == "unanimous"
    grade = _vote([int(a[S.Q_GRADE]) for a in answers.values() if a.get(S.Q_GRADE) is not None], unanimous)
    accept = _vote([a[S.Q_ACCEPT] for a in answers.values() if a.get(S.Q_ACCEPT) is not None], unanimous)
    if grade is None or accept is None:
        what = "grade" if grade is None else "accept"
        return Decision("conflict", names, comment=comment, note=f"reviewers disagree on {what}")
    agreeing = [n for n in names if answers[n].get(S.Q_GRADE) is not None and int(answers[n][S.Q_GRADE]) == grade
                and answers[n].get(S.Q_ACCEPT) == accept]
    correction = next((t for n in agreeing if (t := _text(answers[n].get(S.Q_CORRECTION)))), None)
    return Decision("resolved", names, grade, accept, correction, comment)


def _text(v: Any) -> str | None:
    return v.strip() if isinstance(v, str) and v.strip() else None


# -- merge ----------------------------------------------------------------------


@dataclass
class MergeResult:
    merged: pl.DataFrame
    dropped: pl.DataFrame
    changes: pl.DataFrame
    counts: dict = field(default_factory=dict)


def _message(like: Any, text: str) -> Any:
    """A one-message assistant answer in the same shape as `like` (list of messages or JSON text)."""
    msg = [{"role": "assistant", "content": text}]
    return json.dumps(msg, ensure_ascii=False) if isinstance(like, str) else msg


def _strip_label(text: str, scale: GradeScale) -> str:
    """The rationale of a corrected answer, as gen-cot stores it: without the leading grade and the `Reason:`
    prefix."""
    from toolkit.core.parsing import LABEL_FIRST, parse_answer

    parsed = parse_answer(text, scale.labels, LABEL_FIRST)
    if parsed.ok and parsed.rationale is not None:
        return parsed.rationale.strip()
    if leading_grade(text, scale) is None:
        return text
    parts = text.strip().split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


def _cot(row: dict, d: Decision, scale: GradeScale) -> tuple[dict, str | None]:
    updates: dict = {}
    if d.correction:
        if (lead := leading_grade(d.correction, scale)) is not None and lead != d.grade:
            return {}, "correction_grade_mismatch"
        if C.COMPLETION in row:
            updates[C.COMPLETION] = _message(row[C.COMPLETION], d.correction)
        if C.RATIONALE in row:
            updates[C.RATIONALE] = _strip_label(d.correction, scale)
        if C.PRED_GRADE in row and row[C.PRED_GRADE] != d.grade:
            updates[C.PRED_GRADE] = d.grade
    elif d.accept == S.NO:
        return {}, "rationale_rejected"
    elif (g := cot_grade(row, scale)) is not None and g != d.grade:
        return {}, "grade_changed"
    return updates, None


def _prefs(row: dict, d: Decision, scale: GradeScale) -> tuple[dict, str | None]:
    updates: dict = {}
    if d.correction:
        if (lead := leading_grade(d.correction, scale)) is not None and lead != d.grade:
            return {}, "correction_grade_mismatch"
        if row.get(C.REJECTED_GRADE) is not None and int(row[C.REJECTED_GRADE]) == d.grade:
            return {}, "rejected_is_correct"
        updates[C.CHOSEN] = _message(row[C.CHOSEN], d.correction)
        if C.CHOSEN_SOURCE in row:
            updates[C.CHOSEN_SOURCE] = "reviewer"
        if C.CHOSEN_GRADE in row:
            updates[C.CHOSEN_GRADE] = d.grade
    elif d.accept == S.NO:
        return {}, "pair_rejected"
    elif (cg := chosen_grade(row, scale)) is not None and cg != d.grade:
        return {}, "grade_changed"
    return updates, None


def _hard(row: dict, d: Decision, scale: GradeScale) -> tuple[dict, str | None]:
    if d.accept == S.NO:
        return {}, "pair_rejected"
    stale = (C.PASS_RATE, C.N_CORRECT, C.DIFFICULTY)
    return ({c: None for c in stale if c in row} if row.get(C.GRADE) != d.grade else {}), None


def _errors(row: dict, d: Decision, scale: GradeScale) -> tuple[dict, str | None]:
    if d.accept == S.NO:
        return {}, "pair_rejected"
    if C.CORRECT in row and row.get(C.GRADE) != d.grade:
        return {C.CORRECT: row.get(C.PRED_GRADE) == d.grade}, None
    return {}, None


RULES = {"cot": _cot, "prefs": _prefs, "hard": _hard, "errors": _errors}
REASONS = {C.GRADE: "grade_corrected", C.CORRECT: "grade_corrected", C.PASS_RATE: "stale_after_grade_change",
           C.N_CORRECT: "stale_after_grade_change", C.DIFFICULTY: "stale_after_grade_change"}


def _json(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)


def merge(kind: str, df: pl.DataFrame, decisions: dict[str, Decision], scale: GradeScale) -> MergeResult:
    """Apply resolved decisions (by record id, column ID_COL) to the rows of `df`; rows without one are
    not_reviewed."""
    rule = RULES[kind]
    statuses, reviewers, comments, keep, reasons = [], [], [], [], []
    updates: dict[str, dict[int, Any]] = {}
    log: list[dict] = []
    for i, row in enumerate(df.iter_rows(named=True)):
        pid, rid = str(row[C.PAIR_ID]), row[ID_COL]
        d = decisions.get(rid)
        # a row outside this round keeps what an earlier round said about it
        reviewers.append(d.reviewers if d else row.get(C.REVIEWERS) or [])
        comments.append(d.comment if d else row.get(C.REVIEW_COMMENT))
        if d is None or d.status != "resolved":
            statuses.append((row.get(C.REVIEW_STATUS) or NOT_REVIEWED) if d is None
                            else PENDING if d.status == "pending" else CONFLICT)
            keep.append(True)
            reasons.append(None)
            continue
        changed, drop = rule(row, d, scale)
        who = ",".join(d.reviewers)
        if C.GRADE in row and row[C.GRADE] != d.grade:
            changed = {C.GRADE: d.grade, **changed}
        for col, new in changed.items():
            reason = "answer_corrected" if col not in REASONS else REASONS[col]
            log.append({C.RECORD_ID: rid, C.PAIR_ID: pid, C.CHANGED_COLUMN: col, C.OLD_VALUE: _json(row.get(col)),
                        C.NEW_VALUE: _json(new), C.CHANGE_REASON: reason, C.REVIEWERS: who})
            if drop is None or col == C.GRADE:
                updates.setdefault(col, {})[i] = new
        if drop:
            log.append({C.RECORD_ID: rid, C.PAIR_ID: pid, C.CHANGED_COLUMN: ROW, C.OLD_VALUE: _json("kept"),
                        C.NEW_VALUE: _json("dropped"), C.CHANGE_REASON: drop, C.REVIEWERS: who})
        statuses.append(REJECTED if drop else CORRECTED if changed else ACCEPTED)
        keep.append(drop is None)
        reasons.append(drop)
    out = df
    for col, repl in updates.items():
        old = out[col].to_list() if col in out.columns else [None] * out.height
        values = [repl.get(i, v) for i, v in enumerate(old)]
        dtype = out[col].dtype if col in out.columns and out[col].dtype != pl.Null else None
        out = out.with_columns(pl.Series(col, values, dtype=dtype, strict=False))
    out = out.with_columns(
        pl.Series(C.REVIEW_STATUS, statuses, dtype=pl.String),
        pl.Series(C.REVIEWERS, reviewers, dtype=pl.List(pl.String)),
        pl.Series(C.REVIEW_COMMENT, comments, dtype=pl.String),
    )
    mask = pl.Series(keep, dtype=pl.Boolean)
    dropped = out.filter(~mask).with_columns(pl.Series(C.DROP_REASON, [r for r in reasons if r], dtype=pl.String))
    schema = {c: pl.String for c in (C.RECORD_ID, C.PAIR_ID, C.CHANGED_COLUMN, C.OLD_VALUE, C.NEW_VALUE,
                                     C.CHANGE_REASON, C.REVIEWERS)}
    changes = pl.DataFrame(log, schema=schema)
    counts = {
        "rows": df.height,
        "kept": int(mask.sum()),
        "dropped": dict(sorted(Counter(r for r in reasons if r).items())),
        "status": {s: statuses.count(s) for s in STATUSES if statuses.count(s)},
        "changed": dict(sorted(Counter(e[C.CHANGED_COLUMN] for e in log if e[C.CHANGED_COLUMN] != ROW).items())),
    }
    return MergeResult(out.filter(mask), dropped, changes, counts)
