"""What a trainer writes into its checkpoint folder besides TRL's files: a LoRA adapter merged or described, the
weights re-saved in another dtype, plain greedy generation defaults."""

from __future__ import annotations

import json
from pathlib import Path

ADAPTER_NOTE = "ADAPTER.md"
ADAPTER_TEXT = """# A LoRA adapter, not merged

This folder holds a peft LoRA adapter over `{base}` (trained with `merge_lora: false`).
Load it with `peft.AutoPeftModelForCausalLM.from_pretrained(folder)`. The generation backends and
`toolkit eval` load plain checkpoints with `AutoModelForCausalLM`: retrain with `merge_lora: true`
(the default), or merge with `model.merge_and_unload().save_pretrained(new_folder)`.
"""


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(name, torch.float32)


def _hub_base(adapter_config: Path, model_id: str) -> None:
    """An adapter trained from a hub model names its base as `owner/name` at its commit (PEFT's `revision`), not the
    folder of this machine's Hub cache it was loaded from."""
    from toolkit.core.stagefolder.remote import snapshot_model_id

    at = snapshot_model_id(model_id)
    if at and adapter_config.exists():
        repo, _, commit = at.partition("@")
        data = json.loads(adapter_config.read_text(encoding="utf-8"))
        data.update(base_model_name_or_path=repo, revision=commit)
        adapter_config.write_text(json.dumps(data, indent=2), encoding="utf-8")


def merged_from_adapter(staging: Path, tmp: Path, save_dtype: str) -> None:
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(str(staging), dtype=_dtype(save_dtype))
    model.merge_and_unload().save_pretrained(str(tmp))


def resave(folder: Path, save_dtype: str) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=_dtype(save_dtype))
    for f in folder.glob("*.safetensors*"):
        f.unlink()
    model.save_pretrained(str(folder))


def fix_generation_config(folder: Path, tokenizer) -> None:
    """Plain greedy defaults with the pad token set (trainers leave their sampling settings in it)."""
    path = folder / "generation_config.json"
    if not path.exists():
        return
    gc = json.loads(path.read_text(encoding="utf-8"))
    for key in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "do_sample", "max_new_tokens",
                "cache_implementation"):
        gc.pop(key, None)
    gc["pad_token_id"] = tokenizer.pad_token_id
    path.write_text(json.dumps(gc, indent=2), encoding="utf-8")


def write_adapter_note(folder: Path, model_id: str) -> None:
    """An unmerged adapter's README (ADAPTER.md) and its base named as a user can load it (_hub_base)."""
    from toolkit.core.stagefolder.remote import snapshot_model_id

    _hub_base(folder / "adapter_config.json", model_id)
    (folder / ADAPTER_NOTE).write_text(ADAPTER_TEXT.format(base=snapshot_model_id(model_id) or model_id),
                                       encoding="utf-8")
