"""A stage folder's record: manifest.json (what wrote it, from what, with which counts) and config.yaml;
reading it, hashing contents, and refusing a folder whose run was cut off."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from toolkit.core.errors import UserError
from toolkit.core.grades import GradeScale

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CONFIG = "config.yaml"


class Key:
    """The manifest's named keys. Every stage writes the first group; the second travels from stage to
    stage (a stage passes on what its input recorded, so the next one need not look further back)."""

    STAGE = "stage"  # the command that wrote the folder, e.g. "sample", "train-sft"
    VERSION = "toolkit_version"
    CREATED = "created"
    FINGERPRINT = "fingerprint"  # of stage, resolved config, input contents and toolkit version
    INPUTS = "inputs"  # {file: sha256} of every input file
    OUTPUTS = "outputs"  # {file: sha256} of the folder's own files
    COUNTS = "counts"  # what the stage kept and dropped (`dropped_<reason>`)
    COMPLETE = "complete"  # False while a sharded stage writes (mark_incomplete)

    GRADE_SCALE = "grade_scale"  # GradeScale.to_dict() of the pairs
    LINEAGE = "student_prompt"  # how the student prompt was built: answer order, rules (toolkit.core.lineage)
    MODEL = "model"  # the model a generating stage ran
    TEACHER = "teacher"  # gen-cot's teacher
    BASE_MODEL = "base_model"  # a checkpoint's starting model


def sha256_file(path: "str | Path") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def manifest_of(path: "str | Path") -> dict | None:
    """The manifest of a stage folder, or of the folder holding a file of one (e.g. pairs.parquet)."""
    p = Path(path)
    return read_manifest(p if p.is_dir() else p.parent)


def check_complete(folder: "str | Path") -> None:
    """Refuse to read a stage folder whose run was cut off (its manifest says incomplete)."""
    m = read_manifest(folder)
    if m is not None and m.get("complete") is False:
        stage = m.get("stage", "the stage")
        raise UserError(f"{folder}: the run of `toolkit {stage}` that writes this folder was cut off before it "
                        f"finished; rerun `toolkit {stage}` (or `toolkit run`) to complete it")


def read_manifest(out_dir: "str | Path") -> dict | None:
    p = Path(out_dir) / MANIFEST
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return None


def scale_of(path: "str | Path", default: "str | None" = None) -> GradeScale:
    """The grade scale recorded in a stage's manifest (or the default scale): StageFolder.open(path).scale(default)."""
    from toolkit.core.stagefolder.folder import StageFolder

    return StageFolder.open(path).scale(default)


def model_manifest(model: "str | Path | None", hub: bool = True) -> dict | None:
    """A checkpoint's manifest: a local folder's (or the toolkit/manifest.json of a folder `hf download` made of a
    pushed model), or with `hub`, for a hub id, the toolkit/manifest.json that `toolkit push` published with it; None
    for `default`, other models and folders without one."""
    from toolkit.core.stagefolder.remote import hub_model_manifest, is_hub_model_id

    p = Path(model).expanduser() if model else None
    if p is not None and p.is_dir():
        return read_manifest(p) or read_manifest(p / "toolkit")
    return hub_model_manifest(str(model)) if hub and is_hub_model_id(model) else None


def check_model_scale(scale: GradeScale, model: "str | Path | None", stage: str, hub: bool = True) -> None:
    """A checkpoint trained on another grade scale than the data's cannot score it: a one-line error (`hub`: look up a
    hub id's published manifest too)."""
    m = model_manifest(model, hub)
    if not m or Key.GRADE_SCALE not in m:
        return
    theirs = GradeScale.from_dict(m[Key.GRADE_SCALE], where=str(model))
    if not theirs.same_grades(scale):
        raise UserError(f"{stage}: the model {model} was trained on grade scale `{theirs.name}` ({theirs.describe()}) "
                        f"but the pairs are on `{scale.name}` ({scale.describe()}); "
                        f"use a model trained on this scale, or ingest the pairs with --scale {theirs.name}")
