"""The generation interface shared by all backends.

A prompt is a chat conversation: a list of {"role": ..., "content": ...} messages. When the
last message is an assistant message, backends continue it (assistant prefill) instead of
starting a new turn.
`generate` returns one `Generation` per prompt with `n` samples each; `score_grades`
returns, per prompt, the probabilities of the grade labels as the first token of the
answer (softmax restricted to the grade tokens), TaoSR1's serving score.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from toolkit.core.errors import UserError
from toolkit.core.options import opt

Messages = list[dict]


def is_prefill(messages: Messages) -> bool:
    """A conversation ending with an assistant message: backends continue that message (assistant prefill)."""
    return bool(messages) and messages[-1].get("role") == "assistant"


def label_softmax(logprobs: dict[str, float] | None, labels: list[str]) -> list[float] | None:
    """Softmax of the labels' first-token log-probabilities, in `labels` order; None when none of them was seen."""
    if not logprobs:
        return None
    xs = [logprobs.get(label, -math.inf) for label in labels]
    top = max(xs)
    if top == -math.inf:
        return None
    ex = [math.exp(x - top) for x in xs]
    total = sum(ex)
    return [e / total for e in ex]


@dataclass
class SamplingConfig:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = 0
    grade_logprobs: bool = False  # also return the grade labels' log-probabilities at the label position
    stop: list[str] | None = None  # stop strings (not included in the text)

    def __post_init__(self):
        if self.n < 1:
            raise UserError(f"sampling n must be >= 1; got {self.n}")
        if self.temperature < 0:
            raise UserError(f"sampling temperature must be >= 0; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"sampling top_p must be in (0, 1]; got {self.top_p}")
        if self.max_tokens < 1:
            raise UserError(f"sampling max_tokens must be >= 1; got {self.max_tokens}")


@dataclass
class Generation:
    """The samples for one prompt."""

    texts: list[str]
    finish_reasons: list[str]  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: list[int] = field(default_factory=list)
    # per sample: grade label -> log-probability of that label at the label position (first token)
    grade_logprobs: list[dict[str, float]] | None = None


def merge_generations(parts: list[Generation]) -> Generation:
    """One prompt's samples from several requests, in request order, as one Generation."""
    lps = ([lp for g in parts for lp in (g.grade_logprobs or [])] if any(g.grade_logprobs is not None for g in parts)
           else None)
    return Generation(
        texts=[t for g in parts for t in g.texts], finish_reasons=[f for g in parts for f in g.finish_reasons],
        prompt_tokens=parts[0].prompt_tokens, completion_tokens=[c for g in parts for c in g.completion_tokens],
        grade_logprobs=lps,
    )


@runtime_checkable
class GenerationBackend(Protocol):
    name: str
    model_id: str

    def generate(self, prompts: list[Messages], sampling: SamplingConfig,
                 grade_labels: list[str] | None = None) -> list[Generation]: ...

    def score_grades(self, prompts: list[Messages], grade_labels: list[str]) -> list[list[float]]: ...

    def close(self) -> None: ...


@dataclass
class BackendConfig:
    """A generation backend and its settings: the backend options of gen-cot, sample, score and atomize."""

    kind: str = opt("transformers", flags=("--backend",), param="backend", choices=("transformers", "vllm", "openai"),
                    show_default=True, help="transformers (CPU/GPU fallback), vllm (in-process engine), "
                                            "openai (any OpenAI-compatible server).")
    model: str | None = opt(None, help="Model folder, hub id, or `default` (SmolLM2-135M-Instruct, embedded). "
                                       "For openai: the served model name.")
    batch_size: int = opt(16, show_default=True, help="Prompts per batch (transformers).")
    dtype: str = opt("auto", choices=("auto", "float32", "bfloat16"), show_default=True,
                     help="Weights' dtype: auto = bfloat16 on GPUs and CPUs with AVX-512 BF16/AMX, else float32, "
                          "but float32 for `score` on any CPU, so its numbers do not move with the batch "
                          "(transformers); the engine's choice (vllm).")
    # openai-compatible server
    base_url: str | None = opt(None, help="[openai] server URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = opt("OPENAI_API_KEY", show_default=True,
                           help="[openai] environment variable holding the API key (never logged).")
    concurrency: int = opt(8, show_default=True, help="[openai] requests in flight.")
    timeout_s: float = opt(120.0, flags=("--timeout",), show_default=True, help="[openai] seconds per request.")
    max_retries: int = opt(5, show_default=True,
                           help="[openai] retries (exponential backoff) on 429/5xx, timeouts, dropped connections.")
    # samples asked for in one request: 0 = all n at once; 1 for APIs that reject n > 1 (DeepSeek's)
    n_per_request: int = opt(0, show_default=True,
                             help="[openai] samples asked for in one request; 0 = all n at once, "
                                  "1 for APIs that reject n > 1 (DeepSeek's).")
    # vllm
    max_model_len: int = opt(4096, show_default=True, help="[vllm] context length of the engine (prompt + answer).")
    enforce_eager: bool = opt(False, help="[vllm] skip torch.compile (faster start, slower steps).")
    extra: dict = field(default_factory=dict)  # no option: set from Python
    # chat-template keyword arguments (--template-option KEY=VALUE), e.g. enable_thinking=false;
    # toolkit.core.chat_template
    template_options: dict = opt(default_factory=dict, flags=("--template-option",), multiple=True,
                                 metavar="KEY=VALUE", help="A chat-template option, e.g. enable_thinking=false "
                                                           "(set by default for templates that have it); repeatable.")

    @property
    def loads_weights(self) -> bool:
        """`model` names weights this toolkit loads (a folder, a hub id), not a served model's name (openai)."""
        return self.kind != "openai"

    def __post_init__(self):
        if self.kind not in BACKENDS:
            raise UserError(f"unknown backend {self.kind!r}; use one of {', '.join(BACKENDS)}")
        if self.kind == "openai" and not self.base_url:
            raise UserError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        from toolkit.core.chat_template import parse_options

        self.template_options = parse_options(self.template_options)
        if self.loads_weights:
            from toolkit.core.stagefolder.remote import pin_model

            self.model = pin_model(self.model)  # a hub id at the commit it names now: one model for the whole stage
        if self.n_per_request < 0:
            raise UserError(f"--n-per-request must be >= 0 (0 = all samples in one request); got {self.n_per_request}")


BACKENDS = {
    "transformers": "toolkit.generation.hf:TransformersBackend",
    "vllm": "toolkit.generation.vllm_backend:VLLMBackend",
    "openai": "toolkit.generation.openai_backend:OpenAIBackend",
}


def make_backend(cfg: BackendConfig) -> GenerationBackend:
    import importlib

    module, cls = BACKENDS[cfg.kind].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)


class LazyBackend:
    """A backend made on first use (a rerun with every shard done loads no model).

    `get()` returns the given backend or builds one from the config; `close()` frees only a
    backend built here (a vLLM engine holds memory and worker processes), never one passed in.
    """

    def __init__(self, cfg: BackendConfig, backend: GenerationBackend | None = None):
        self.cfg, self.backend, self.owned = cfg, backend, False

    def check(self) -> None:
        """Fail now, in one line, for a local model that cannot load (missing folder, no or damaged config.json):
        a stage checks its model before it writes anything."""
        if self.backend is None and self.cfg.kind in ("transformers", "vllm"):
            from toolkit.core.models import check_model

            check_model(self.cfg.model)

    def get(self) -> GenerationBackend:
        if self.backend is None:
            self.backend, self.owned = make_backend(self.cfg), True
        return self.backend

    @property
    def model_id(self) -> str:
        """The backend's model id; before (or without) loading it, the same id resolved from the config, so a run
        whose shards were all reused, or ran on Ray actors, records the model as a fresh local run does."""
        if self.backend is None and self.cfg.kind in ("transformers", "vllm"):
            from toolkit.core.models import model_record

            return model_record(self.cfg.model)
        return getattr(self.backend, "model_id", None) or self.cfg.model or "default"

    def close(self) -> None:
        if self.owned and self.backend is not None:
            self.backend.close()
