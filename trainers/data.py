"""Reading the stage folders the trainers train on, with one-line errors.

* SFT  — `toolkit gen-cot` output, sft.parquet: `prompt` (system + user messages), `completion`
  (one assistant message, label first), `grade` (needed for --label-only).
* DPO  — `toolkit make-prefs` output, preferences.parquet: `prompt`, `chosen`, `rejected`.
* GRPO — `toolkit label-difficulty` output, grpo.parquet: `prompt`, `grade` and/or `gold_label`.

Every prompt gets our system message: SmolLM2's ChatML template writes its own default system
message ("You are a helpful AI assistant named SmolLM ...") into any conversation that has none,
so a prompt without one gets the student template's system message for the data's grade scale.
The grade scale comes from the stage folder's manifest.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale
from toolkit.core.stagefolder.files import GRPO_FILE, PREFS_FILE, SFT_FILE
from toolkit.core.tables import read_parquet

log = logging.getLogger(__name__)


SOURCES = {
    # kind: (file, made by, required columns)
    "sft": (SFT_FILE, "toolkit gen-cot", [C.PROMPT, C.COMPLETION]),
    "dpo": (PREFS_FILE, "toolkit make-prefs", [C.PROMPT, C.CHOSEN, C.REJECTED]),
    "grpo": (GRPO_FILE, "toolkit label-difficulty", [C.PROMPT]),
}


def data_file(path: "str | Path", kind: str) -> Path:
    """The Parquet file of a stage folder (or the file itself)."""
    name, made_by, _ = SOURCES[kind]
    p = Path(path)
    if p.is_dir():
        f = p / name
        if not f.exists():
            found = ", ".join(sorted(x.name for x in p.glob("*.parquet"))) or "no .parquet files"
            raise UserError(f"{p}: no {name} in this folder (found: {found}); pass the output folder of `{made_by}`")
        return f
    if not p.exists():
        raise UserError(f"{p}: no such file or folder; pass the output folder of `{made_by}`")
    return p


def load_rows(path: "str | Path", kind: str, limit: int | None = None, extra: list[str] | None = None) -> pl.DataFrame:
    """The stage's rows, with the required columns checked."""
    _, made_by, required = SOURCES[kind]
    f = data_file(path, kind)
    df = read_parquet(f)
    need = required + (extra or [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UserError(f"{f}: column(s) {', '.join(missing)} missing; found: {', '.join(df.columns)}; pass the "
                        f"output of `{made_by}`")
    if limit:
        df = df.head(limit)
    if df.height == 0:
        raise UserError(f"{f}: no rows to train on")
    return df


def system_message(scale: GradeScale) -> dict:
    """The student template's system message for this scale (what gen-cot and sample put in prompts)."""
    from toolkit.core.prompts import PromptBuilder

    msgs = PromptBuilder(scale).student({C.QUERY: "", C.TITLE: ""})
    if msgs[0]["role"] != "system":  # a custom template without a system section
        raise UserError("the student prompt template has no `### system` section; prompts without a system message "
                        "cannot be completed")
    return msgs[0]


def with_system(prompts: list[list[dict]], scale: GradeScale, where: str) -> tuple[list[list[dict]], int]:
    """Prompts that each start with a system message; returns them and how many got ours added."""
    out, added, system = [], 0, None
    for i, msgs in enumerate(prompts):
        msgs = [{"role": m["role"], "content": m["content"]} for m in (msgs or [])]
        if not msgs or msgs[-1]["role"] != "user":
            raise UserError(f"{where}: row {i} has a prompt that does not end with a user message; re-create the file "
                            "with the stage that writes it")
        if msgs[0]["role"] != "system":
            system = system or system_message(scale)
            msgs = [system] + msgs
            added += 1
        out.append(msgs)
    if added:
        log.warning("%s: %d prompt(s) had no system message; added the student template's", where, added)
    return out, added


def assistant_turn(cell, where: str, column: str, i: int) -> list[dict]:
    """One assistant message, as TRL's conversational format wants it."""
    msgs = list(cell or [])
    if len(msgs) != 1 or msgs[0].get("role") != "assistant" or not msgs[0].get("content"):
        raise UserError(f"{where}: row {i} column `{column}` must hold one non-empty assistant message; got "
                        f"{msgs!r:.120}")
    return [{"role": "assistant", "content": msgs[0]["content"]}]


def sft_rows(df: pl.DataFrame, scale: GradeScale, label_only: bool, where: str) -> tuple[list[dict], dict]:
    """prompt/completion rows; with `label_only` the completion is the gold grade's label alone."""
    prompts, added = with_system(df[C.PROMPT].to_list(), scale, where)
    if label_only:
        if C.GRADE not in df.columns:
            raise UserError(f"{where}: --label-only needs the `{C.GRADE}` column; found: {', '.join(df.columns)}")
        labels = [scale.by_value(int(g)).label for g in df[C.GRADE].to_list()]
        completions = [[{"role": "assistant", "content": lab}] for lab in labels]
    else:
        completions = [assistant_turn(c, where, C.COMPLETION, i) for i, c in enumerate(df[C.COMPLETION].to_list())]
    rows = [{C.PROMPT: p, C.COMPLETION: c} for p, c in zip(prompts, completions)]
    return rows, {"rows": len(rows), "system_added": added}


def dpo_rows(df: pl.DataFrame, scale: GradeScale, where: str) -> tuple[list[dict], dict]:
    prompts, added = with_system(df[C.PROMPT].to_list(), scale, where)
    chosen = [assistant_turn(c, where, C.CHOSEN, i) for i, c in enumerate(df[C.CHOSEN].to_list())]
    rejected = [assistant_turn(c, where, C.REJECTED, i) for i, c in enumerate(df[C.REJECTED].to_list())]
    rows = [{C.PROMPT: p, C.CHOSEN: c, C.REJECTED: r} for p, c, r in zip(prompts, chosen, rejected)]
    return rows, {"rows": len(rows), "system_added": added}


def grpo_rows(df: pl.DataFrame, scale: GradeScale, where: str) -> tuple[list[dict], dict]:
    """prompt + gold_label (+ grade, pair_id): the extra columns reach the reward functions as keyword arguments."""
    if C.GOLD_LABEL not in df.columns and C.GRADE not in df.columns:
        raise UserError(f"{where}: column `{C.GOLD_LABEL}` or `{C.GRADE}` missing; found: {', '.join(df.columns)}; "
                        "pass the output of `toolkit label-difficulty`")
    prompts, added = with_system(df[C.PROMPT].to_list(), scale, where)
    if C.GOLD_LABEL in df.columns:
        labels = [str(x) for x in df[C.GOLD_LABEL].to_list()]
        off = sorted({x for x in labels if x not in scale.labels})
        if off:
            raise UserError(f"{where}: gold_label value(s) {off} are not labels of scale `{scale.name}` "
                            f"({', '.join(scale.labels)})")
    else:
        labels = [scale.by_value(int(g)).label for g in df[C.GRADE].to_list()]
    rows = [{C.PROMPT: p, C.GOLD_LABEL: lab} for p, lab in zip(prompts, labels)]
    if C.PAIR_ID in df.columns:
        for r, pid in zip(rows, df[C.PAIR_ID].to_list()):
            r[C.PAIR_ID] = pid
    return rows, {"rows": len(rows), "system_added": added}


def with_template(dataset, options: dict | None):
    """The chat-template options on every example: TRL's SFT and DPO trainers read the `chat_template_kwargs`
    column."""
    if not options:
        return dataset
    return dataset.map(lambda _: {"chat_template_kwargs": dict(options)})


def to_dataset(rows: list[dict]):
    try:
        from datasets import Dataset
    except ImportError as e:
        from toolkit.core.errors import missing_extra

        raise missing_extra("train", e.name or "datasets") from None
    return Dataset.from_list(rows)


def check_tokenizer(tokenizer, scale: GradeScale, model_id: str) -> list[int]:
    """A chat template, a pad token, and single-token grade labels (the first-token score needs them)."""
    from toolkit.core.models import grade_token_ids

    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {model_id!r} has no chat template; train from an instruct/chat model (or add a "
                        "template to its tokenizer)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return grade_token_ids(tokenizer, scale.labels)
