"""`ServeConfig`: what `toolkit serve` loads and the limits it enforces."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.core.errors import UserError

SERVE_BACKENDS = ("transformers", "vllm")


@dataclass
class ServeConfig:
    model: str | None = None  # checkpoint folder, hub id, or None/`default` for the embedded SmolLM2
    tiers: str | None = None  # tiers.json from `toolkit tier fit` (or its folder)
    scale: str | None = None  # default: the tier rule's scale, else the checkpoint's manifest, else taosr4
    index: str | None = None  # rules index folder: retrieve rules for pairs that bring none
    rules_k: int = 3
    backend: str = "transformers"
    dtype: str = "auto"  # auto = bf16 where the hardware supports it
    threads: int | None = None  # transformers: torch intra-op threads (default: torch's choice)
    enforce_eager: bool = False  # vllm: skip torch.compile (faster start, slower steps)
    host: str = "127.0.0.1"
    port: int = 8080
    # fast path
    prefix_reuse: bool = True  # transformers: compute each query's shared prompt prefix once
    batch_size: int = 32  # rows per forward pass
    max_batch: int = 64  # pairs gathered from concurrent requests into one scoring call (a request is never split)
    max_wait_ms: float = 5.0  # how long the batcher waits for more requests before scoring
    # limits
    max_pairs: int = 512  # pairs per request (413 above)
    max_text_chars: int = 2000  # characters per text field (422 above)
    max_body_bytes: int = 4_000_000  # request body size (413 above)
    max_explain_pairs: int = 8  # pairs per request with explain=true (413 above)
    max_queued_pairs: int = 8192  # pairs waiting for the model across requests (503 "busy" above)
    explain_max_tokens: int = 96  # token budget of a generated rationale
    graceful_timeout_s: float = 60.0  # how long shutdown waits for requests in flight
    access_log: bool = False

    def __post_init__(self):
        if self.backend not in SERVE_BACKENDS:
            raise UserError(f"--backend must be one of {', '.join(SERVE_BACKENDS)}; got {self.backend!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise UserError(f"--dtype must be auto, float32 or bfloat16; got {self.dtype!r}")
        if not 0 < int(self.port) < 65536:
            raise UserError(f"--port must be in 1..65535; got {self.port}")
        for name in ("batch_size", "max_batch", "max_pairs", "max_text_chars", "max_body_bytes", "max_explain_pairs", "max_queued_pairs",
                     "explain_max_tokens", "rules_k"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")
        if self.threads is not None and int(self.threads) < 1:
            raise UserError(f"--threads must be at least 1; got {self.threads}")
        if self.max_wait_ms < 0 or self.graceful_timeout_s < 0:
            raise UserError(f"--max-wait-ms and --graceful-timeout must be >= 0; got {self.max_wait_ms} and {self.graceful_timeout_s}")
