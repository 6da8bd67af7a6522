"""StageConfig and the fingerprint of a stage run: resolved config, input hashes, toolkit version."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar


from toolkit import __version__
from toolkit.core.errors import UserError
from toolkit.core.stagefolder.aliases import unalias
from toolkit.core.stagefolder.atomic import atomic_dir, atomic_write_text, fault_point
from toolkit.core.stagefolder.manifest import CONFIG, MANIFEST, read_manifest, sha256_file, sha256_json

log = logging.getLogger(__name__)

# -- input ------------------------------------------------------------------


# Config fields added after outputs were made with the version before: at these defaults they are left out of the hash.
ADDED_LATER = {"template_options": {}, "class_weights": "none", "gold": None, "eval_pairs": None, "eval_split": "dev",
               "eval_index": None, "eval_rules_k": 3, "eval_every": 0, "eval_limit": 500, "select_best": "none",
               "early_stop": None, "pairs_split": "train", "pairs_index": None, "pairs_rules_k": 3,
               "prompt_template": None}


class StageConfig:
    """Base of the stages' config dataclasses: `resolved()` is the config as hashed into the
    manifest (what decides whether a rerun is needed), without the fields in NOT_HASHED and
    without a backend's api_key_env (the name of a secret's variable is not the run's config)."""

    NOT_HASHED: ClassVar[tuple[str, ...]] = ("force",)

    def resolved(self) -> dict:
        d = asdict(self)  # type: ignore[call-overload]
        for key in self.NOT_HASHED:
            d.pop(key, None)
        # at their defaults, outputs made before these fields stay up to date
        for added, default in ADDED_LATER.items():
            if added in d and d[added] == default:
                d.pop(added)
        if isinstance(d.get("backend"), dict):
            d["backend"].pop("api_key_env", None)
            # added later: at their defaults, outputs made before stay up to date
            for added in ("n_per_request", "template_options"):
                if not d["backend"].get(added):
                    d["backend"].pop(added, None)
        return d


def input_hashes(paths: list["str | Path"]) -> dict[str, str]:
    out = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError(f"{p}: no such file or folder; check the path")
        files = (
            sorted(
                x for x in p.rglob("*")
                if x.is_file() and x.name not in (MANIFEST, CONFIG)
                    and not any(part.startswith(".") for part in x.relative_to(p).parts)
            )
            if p.is_dir()
            else [p]
        )
        for f in files:
            out[str(f)] = sha256_file(f)
    return out


def model_inputs(model: "str | Path | None", hub: bool = True) -> dict[str, str]:
    """What a model adds to a stage's inputs: a local folder its files' hashes (they change when it is retrained in
    place); a hub id, or a folder of the Hub cache, its commit (`hf://owner/name@COMMIT`: a re-push is another
    model, `owner/name@REVISION` pins one; not with `hub` False: a served model's name); `default`, nothing."""
    from toolkit.core.stagefolder.remote import is_hub_model_id, pin_model, snapshot_model_id

    if model and Path(model).expanduser().is_dir():
        at = snapshot_model_id(model)
        if not at:
            return input_hashes([Path(model).expanduser()])
    elif hub and is_hub_model_id(model):
        at = str(pin_model(model))
    else:
        return {}
    return {f"hf://{at}": at.rpartition("@")[2]}


def fingerprint(stage: str, config: dict, inputs: dict[str, str]) -> str:
    """What a stage's output depends on: stage, resolved config, input contents, toolkit version."""
    return sha256_json({"stage": stage, "config": unalias(config), "inputs": sorted(inputs.values()),
                        "version": __version__})


def write_manifest(out_dir: Path, stage: str, config: dict, inputs: dict[str, str], counts: dict,
                   extra: dict | None = None) -> dict:
    """Record the resolved config (config.yaml) and a manifest (manifest.json) in an output folder."""
    import yaml

    config = unalias(config)  # a staging or mirror folder as the URL it stands for
    outputs = {p.name: sha256_file(p) for p in sorted(out_dir.iterdir())
               if p.is_file() and p.name not in (MANIFEST, CONFIG) and not p.name.startswith(".")}
    manifest = {
        "stage": stage,
        "toolkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fingerprint": fingerprint(stage, config, inputs),
        "inputs": inputs,
        "outputs": outputs,
        "counts": counts,
        **(extra or {}),
    }
    atomic_write_text(out_dir / CONFIG, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    fault_point("manifest.before")
    # last: it says the folder is complete
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


def mark_incomplete(out_dir: "str | Path", stage: str) -> None:
    """Before a sharded stage writes its first byte into its folder, and before it rewrites its final files
    in place: a manifest that says whose folder this is and matches no run. A run killed at any instant
    leaves a folder its rerun takes up (and `toolkit run` redoes); readers refuse it (check_complete)."""
    out_dir = Path(out_dir)
    text = json.dumps({"stage": stage, "complete": False}) + "\n"
    if out_dir.is_dir():
        atomic_write_text(out_dir / MANIFEST, text)
    else:  # a new folder appears with its mark in one rename: never as a folder without a manifest
        with atomic_dir(out_dir) as tmp:
            (tmp / MANIFEST).write_text(text, encoding="utf-8")
    fault_point("manifest.incomplete")


def is_up_to_date(out_dir: "str | Path", stage: str, config: dict, inputs: dict[str, str]) -> bool:
    """True when `out_dir` holds complete output of the same stage, config and inputs."""
    m = read_manifest(out_dir)
    if not m or m.get("fingerprint") != fingerprint(stage, config, inputs):
        return False
    out_dir = Path(out_dir)
    return all((out_dir / name).exists() and sha256_file(out_dir / name) == h
               for name, h in m.get("outputs", {}).items())
