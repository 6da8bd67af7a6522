"""How the student prompt was built, carried from stage to stage in the manifests.

gen-cot, sample and score record under `student_prompt` the answer order (label_first or
cot_first), whether retrieved rules were in the prompts, and, for a student prompt template other
than the built-in one (`--prompt-template`), that template's text; make-prefs and label-difficulty pass
their rollouts' record on; the trainers copy their data's record (else their starting model's)
into the checkpoint. A stage that uses a checkpoint or a stage folder then defaults to the
recorded order and template and refuses a contradicting `--order` (a CoT-first answer parsed
label-first would read the "1" of "1. Query understanding" as a grade) or `--prompt-template` (a
model scored on another prompt than it learned), and warns when a model trained with rules gets
prompts without any.
"""

from __future__ import annotations

import logging
from pathlib import Path

from toolkit.core.errors import UserError
from toolkit.core.prompts import student_template_text
from toolkit.core.stagefolder import Key, model_manifest
from toolkit.core.parsing import LABEL_FIRST, ORDERS

__all__ = ["KEY", "LABEL_FIRST", "facts", "recorded", "resolve_order", "resolve_template", "warn_if_rules_missing"]

log = logging.getLogger(__name__)

KEY = Key.LINEAGE  # "student_prompt"


def facts(order: str, rules: list[list[str]], template: str | None = None) -> dict:
    """The record a prompt-building stage writes: its answer order, whether rules were in, and the student
    template's text unless it is the built-in one (`template`: any spec student_template_text takes)."""
    rec = {"order": order, "rules": any(bool(r) for r in rules)}
    text = student_template_text(template)
    if text is not None:
        rec["template"] = text
    return rec


def recorded(path: "str | Path | None", hub: bool = False) -> dict | None:
    """The `student_prompt` record of a stage folder, a file in one, or a checkpoint (a folder `hf download` made of a
    pushed model too); with `hub`, of a model id on the Hub that `toolkit push` published (its toolkit/manifest.json).
    None for `default`, other models and folders made before the record existed. Only model arguments pass `hub`: a
    missing data path never becomes a Hub request."""
    if not path:
        return None
    p = Path(path).expanduser()
    if p.exists():  # a folder, or a file in one
        return _record_of(model_manifest(p if p.is_dir() else p.parent) or {})
    return _record_of(model_manifest(path) or {}) if hub else None


def _record_of(manifest: dict) -> dict | None:
    rec = manifest.get(KEY)
    return rec if isinstance(rec, dict) else None


def _records(sources: tuple, model, hub: bool):
    """(source, its record) for the local `sources`, then the model (on the Hub too, with `hub`)."""
    for src in sources:
        yield src, recorded(src)
    if model:
        yield model, recorded(model, hub=hub)


def resolve_order(given: str | None, *sources: "str | Path | None", model: "str | Path | None" = None,
                  hub: bool = True) -> str:
    """`given`, else the first source's recorded order (local `sources`, then `model`: a hub id too with `hub`),
    else label_first; a given order that contradicts the record is a one-line error."""
    if given is not None and given not in ORDERS:
        raise UserError(f"--order must be one of {', '.join(ORDERS)}; got {given!r}")
    for src, rec in _records(sources, model, hub):
        order = (rec or {}).get("order")
        if order:
            if given and given != order:
                raise UserError(
                    f"{src} was made with {order} answers, but --order {given} was given; drop --order "
                    f"(it defaults to the recorded one) or pass --order {order}"
                )
            return order
    return given or LABEL_FIRST


def resolve_template(given: str | None, *sources: "str | Path | None", model: "str | Path | None" = None,
                     hub: bool = True) -> str | None:
    """The student template to build prompts with, as text (None: the built-in one): `given` (a file, a built-in
    name or a record's text), else the first source with a record (local `sources`, then `model`: a hub id too with
    `hub`); a given template that differs from the record is a one-line error."""
    text = student_template_text(given) if given is not None else None
    for src, rec in _records(sources, model, hub):
        if rec is None:
            continue
        have = rec.get("template")
        if given is not None and text != have:
            made = "its own prompt template (recorded in it)" if have else "the built-in student prompt"
            raise UserError(f"{src} was made with {made}, but --prompt-template {_short(given)} was given; drop "
                            "--prompt-template (it defaults to the recorded one)")
        return have
    return text


def _short(spec: str) -> str:
    return "(a template's text)" if "\n" in spec else spec


def warn_if_rules_missing(model: "str | Path | None", rules: list[list[str]], stage: str, hub: bool = True) -> None:
    """A model trained with retrieved rules in its prompts, now prompted without any."""
    rec = recorded(model, hub=hub)
    if rec and rec.get("rules") and not any(bool(r) for r in rules):
        log.warning(
            "%s: %s was trained with retrieved rules in its prompts, but these prompts have none; "
            "pass --index (with pairs from `toolkit retrieve`, or rules are retrieved now)", stage, model,
        )
