"""The teacher of `toolkit make-prefs`: the chosen answer of a group whose rollouts are all wrong.

A teacher is any callable `teacher(rows) -> texts`: rows are prompts.parquet rows as dicts (pair id, prompt,
gold grade, pair text columns), texts are answers for the gold grade in the policy's answer order.
`teacher_from_backend` makes one of any generation backend (the teacher prompt for the gold grade, the
CoT-first answer re-written in the policy's order); `BackendTeacher` is the one the CLI builds from its
--teacher-* flags, loading its backend on the first call only. `teacher_answers` asks it in batches,
reusing the answers of the same teacher from the last complete or interrupted run.

An answer that cannot be used (it does not parse, or a guided step was cut) is an `Unparsed`: an empty text
(counted invalid) that keeps the model's raw output and the cause, so teacher_answers.parquet shows why a
teacher's answers were dropped (column `status`: ok, wrong_grade, truncated_step, or the parse status such as
truncated; column `raw`: the raw output of the dropped ones that never became an answer).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import polars as pl

from toolkit.core import columns as C
from toolkit.core import lineage
from toolkit.core.errors import UserError
from toolkit.core.parsing import LABEL_FIRST, OK, parse_answer, TRUNCATED
from toolkit.core.progress import progress
from toolkit.core.stagefolder import read_manifest, write_parquet
from toolkit.core.stagefolder.files import TEACHER_FILE
from toolkit.core.tables import read_parquet
from toolkit.cot_filters import TRUNCATED_STEP

if TYPE_CHECKING:
    from toolkit.preferences import MakePrefsConfig

log = logging.getLogger(__name__)

Teacher = Callable[[list[dict]], list[str]]
WRONG_GRADE = "wrong_grade"  # parsed, but to another grade than the gold one
GUIDED, FREE = "guided", "free"
TEACHER_MODES = (GUIDED, FREE)
ANSWERS_SCHEMA = {C.PAIR_ID: pl.String, C.GRADE: pl.Int64, C.TEXT: pl.String, "valid": pl.Boolean,
                  "status": pl.String, "raw": pl.String}


class Unparsed(str):
    """A teacher answer that cannot be used: the empty text, with the raw output and the cause (a status)."""

    raw: str
    status: str

    def __new__(cls, raw: str, status: str):
        self = super().__new__(cls, "")
        self.raw, self.status = raw, status
        return self


def partial_file(cfg: MakePrefsConfig) -> Path:
    out = Path(cfg.out)
    return out.with_name(f".{out.name}.{TEACHER_FILE}.partial")


def teacher_cache(cfg: MakePrefsConfig) -> dict[tuple[str, int], str]:
    """Answers of the same teacher from the last complete run, or from an interrupted one."""
    if cfg.teacher_id is None:
        return {}
    out, known = Path(cfg.out), {}
    m = read_manifest(out)
    sources = [out / TEACHER_FILE] if m and m.get("teacher_id") == cfg.teacher_id else []
    for path in sources + [partial_file(cfg)]:
        if path.exists():
            df = read_parquet(path)
            if "teacher_id" in df.columns:
                df = df.filter(pl.col("teacher_id") == cfg.teacher_id)
            none = pl.Series([None] * df.height, dtype=pl.String)  # answers stored before these columns existed
            raw = df["raw"] if "raw" in df.columns else none
            status = df["status"] if "status" in df.columns else none
            for p, g, t, r, st in zip(df[C.PAIR_ID], df[C.GRADE], df[C.TEXT], raw, status):
                known[(p, g)] = Unparsed(r, st) if r is not None and not t else t
    return known


def _raw(text: str) -> tuple[str | None, str | None]:
    return (text.raw, text.status) if isinstance(text, Unparsed) else (None, None)


def _save_partial(cfg: MakePrefsConfig, known: dict[tuple[str, int], str]) -> None:
    if cfg.teacher_id is None or not known:
        return
    rows = [(p, g, t, *_raw(t), cfg.teacher_id) for (p, g), t in known.items()]
    schema = {C.PAIR_ID: pl.String, C.GRADE: pl.Int64, C.TEXT: pl.String, "raw": pl.String, "status": pl.String,
              "teacher_id": pl.String}
    write_parquet(pl.DataFrame(rows, schema=schema, orient="row"), partial_file(cfg))
    log.warning("kept %d teacher answers in %s; the next run with the same teacher reuses them", len(known),
                partial_file(cfg))


def teacher_answers(rows: list[dict], teacher: Teacher, cfg: MakePrefsConfig, labels: dict[int, str],
                    all_labels: list[str], known: dict | None = None) -> pl.DataFrame:
    """pair_id, grade, text, valid, status, raw for each row: cached answers reused, the rest asked in batches.
    `known` (from `teacher_cache`) carries the answers across calls of one run, so an interruption keeps them
    all. status is ok, wrong_grade or the parse status; raw is the teacher's output when it did not parse."""
    known = teacher_cache(cfg) if known is None else known
    todo = [r for r in rows if (r[C.PAIR_ID], r[C.GRADE]) not in known]
    if todo:
        log.info("asking the teacher for %d answers (%d cached)", len(todo), len(rows) - len(todo))
    size = int(cfg.teacher_batch_size)
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    try:
        for batch in progress(batches, total=len(batches), desc="teacher answers", unit="batch"):
            texts = teacher(batch)
            if len(texts) != len(batch):
                raise ValueError(f"the teacher returned {len(texts)} answers for {len(batch)} rows")
            known.update({(r[C.PAIR_ID], r[C.GRADE]): t for r, t in zip(batch, texts)})
    except BaseException:
        _save_partial(cfg, known)
        raise
    out = []
    for r in rows:
        answer = known[(r[C.PAIR_ID], r[C.GRADE])]
        answer = "" if answer is None else answer  # not `or ""`: an Unparsed is falsy and keeps its raw text
        raw, status = _raw(answer)
        parsed = parse_answer(str(answer), all_labels, answer_order(cfg.rollouts))
        if status is None:
            status = parsed.status
            if status == OK and parsed.label != labels.get(r[C.GRADE]):
                status = WRONG_GRADE
        out.append((r[C.PAIR_ID], r[C.GRADE], str(answer), status == OK, status, raw))
    return pl.DataFrame(out, schema=ANSWERS_SCHEMA, orient="row")


def dropped_summary(status_counts: dict | None) -> str:
    """"; 49 teacher answers dropped (10 invalid_label, 36 truncated_step; raise --teacher-step-tokens; ...)"."""
    bad = {k: v for k, v in (status_counts or {}).items() if k != OK}
    if not bad:
        return ""
    flags = {TRUNCATED: "max-tokens", TRUNCATED_STEP: "step-tokens"}
    hint = "".join(f"; raise --teacher-{flag}" for status, flag in flags.items() if status in bad)
    causes = ", ".join(f"{v} {k}" for k, v in bad.items())
    return f"; {sum(bad.values())} teacher answers dropped ({causes}{hint}; see {TEACHER_FILE})"


def answer_order(rollouts: str) -> str:
    """The rollouts' answer order (toolkit.core.lineage): teacher answers must be written the same way."""
    return (lineage.recorded(rollouts) or {}).get("order") or LABEL_FIRST


def teacher_from_backend(backend, scale, sampling=None, rules_of: Callable[[dict], list[str] | None] | None = None,
                         order: str = LABEL_FIRST, mode: str = FREE, step_tokens: int = 48) -> Teacher:
    """A teacher callable over any generation backend: the teacher prompt for the gold grade, its
    CoT-first answer re-written in the policy's `order`; an `Unparsed` ("" with the raw output) when it does not.

    mode `free` is one generation per answer (capable teachers); `guided` writes the five step headers into the
    answer and lets the teacher fill each in `step_tokens` tokens, as gen-cot's guided mode does (small local
    teachers follow the format that way); an answer with a step cut at `step_tokens` is dropped (truncated_step)."""
    from toolkit.generation.base import SamplingConfig
    from toolkit.core.parsing import COT_FIRST
    from toolkit.core.prompts import PromptBuilder

    if mode not in TEACHER_MODES:
        raise UserError(f"the teacher mode must be one of {', '.join(TEACHER_MODES)}; got {mode!r}")
    builder = PromptBuilder(scale, order, teacher_template="teacher_guided" if mode == GUIDED else "teacher")
    sampling = sampling or SamplingConfig(n=1, temperature=0.0, max_tokens=768)

    def teacher(rows: list[dict]) -> list[str]:
        prompts = [builder.teacher(r, rules_of(r) if rules_of else None, r[C.GRADE]) for r in rows]
        if mode == GUIDED:
            from toolkit.cot import guided_generate

            outs = guided_generate(backend, prompts, rows, sampling, step_tokens, scale)
        else:
            outs = [(g.texts[0] if g.texts else "", g.finish_reasons[0] if g.finish_reasons else None)
                    for g in backend.generate(prompts, sampling)]
        out = []
        for raw, finish in outs:
            parsed = parse_answer(raw, scale.labels, COT_FIRST, finish)
            if mode == GUIDED and finish == "length":  # the cause, whether or not a grade follows the cut step
                out.append(Unparsed(raw, TRUNCATED_STEP))
            elif not parsed.ok:
                out.append(Unparsed(raw, parsed.status))
            else:
                out.append(builder.target(parsed.label, parsed.rationale))
        return out

    return teacher


def rules_of(row: dict) -> list[str] | None:
    """The rules the policy saw for this pair (`toolkit sample` keeps them beside each prompt)."""
    return row.get(C.RULE_TEXTS) or None


class BackendTeacher:
    """The teacher for all-wrong groups: a generation backend, built on the first call only."""

    def __init__(self, kind: str, model: str | None, base_url: str | None, max_tokens: int, rollouts: str,
                 mode: str = FREE, step_tokens: int = 48):
        if mode not in TEACHER_MODES:
            raise UserError(f"--teacher-mode must be one of {', '.join(TEACHER_MODES)}; got {mode!r}")
        if int(step_tokens) < 1 or int(max_tokens) < 1:
            raise UserError("--teacher-max-tokens and --teacher-step-tokens must be >= 1")
        if kind != "openai":  # a hub id at its commit (in the id: pushed again, it is another teacher)
            from toolkit.core.stagefolder.remote import pin_model

            try:
                model = pin_model(model)
            except UserError as e:  # needed only if some pair has only wrong rollouts; loading it then says why
                log.warning("teacher %s: %s", model, e)
        self.kind, self.model, self.base_url, self.max_tokens = kind, model, base_url, max_tokens
        self.mode, self.step_tokens = mode, int(step_tokens)
        self.rollouts = rollouts  # the folder whose grade scale the teacher answers on
        self.backend = self.fn = None

    @property
    def configured(self) -> bool:
        return bool(self.model or self.base_url)

    @property
    def id(self) -> str | None:
        # how it generates is part of the teacher: answers cut at 64 tokens must not be reused at 256
        how = f"max_tokens={self.max_tokens}" if self.mode == FREE else f"guided,step_tokens={self.step_tokens}"
        return f"{self.kind}:{self.model or ''}@{self.base_url or ''}:{how}" if self.configured else None

    def __call__(self, rows: list[dict]) -> list[str]:

        if not self.configured:
            raise UserError(
                "some pairs have only wrong rollouts and need a teacher answer; pass --teacher-model MODEL "
                "(or --teacher-backend openai --teacher-base-url URL), or --no-teacher to drop them"
            )
        if self.fn is None:
            from toolkit.generation.base import BackendConfig, SamplingConfig, make_backend
            from toolkit.core.stagefolder import scale_of

            self.backend = make_backend(BackendConfig(kind=self.kind, model=self.model, base_url=self.base_url))
            self.fn = teacher_from_backend(self.backend, scale_of(self.rollouts),
                                           SamplingConfig(n=1, max_tokens=self.max_tokens),
                                           rules_of=rules_of, order=answer_order(self.rollouts),
                                           mode=self.mode, step_tokens=self.step_tokens)
        return self.fn(rows)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
