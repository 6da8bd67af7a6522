"""`ServeConfig`: what `toolkit serve` loads and the limits it enforces."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.core.errors import UserError
from toolkit.core.options import opt

SERVE_BACKENDS = ("transformers", "vllm")


@dataclass
class ServeConfig:
    model: str | None = opt(None,  # None/`default`: the embedded SmolLM2
                            help="Checkpoint folder (e.g. out/demo/grpo), hub id, or `default` "
                                 "(SmolLM2-135M-Instruct, embedded).")
    tiers: str | None = opt(None, type="path", help="tiers.json from `toolkit tier fit` (or its folder): adds CumPT "
                                                    "grade, tier and β per pair.")
    scale: str | None = opt(None, help="Grade scale (default: the tier rule's, else the checkpoint's manifest, else "
                                       "taosr4).")
    index: str | None = opt(None, flags=("-i", "--index"), type="path",
                            help="Rules index folder: retrieve guideline rules for pairs that bring none "
                                 "(as `toolkit score --index`).")
    rules_k: int = opt(3, flags=("-k", "--rules-k"), show_default=True, help="Rules per pair from --index.")
    backend: str = opt("transformers", choices=SERVE_BACKENDS, show_default=True,
                       help="transformers (CPU/GPU, shared-prefix reuse) or vllm (in-process engine with prefix "
                            "caching).")
    dtype: str = opt("auto", choices=("auto", "float32", "bfloat16"), show_default=True,
                     help="auto = bfloat16 on GPUs and CPUs with AMX/AVX-512 BF16, else float32.")
    threads: int | None = opt(None, help="[transformers] torch CPU threads (default: torch's choice; 1 can be faster "
                                         "on a busy machine).")
    enforce_eager: bool = opt(False, help="[vllm] skip torch.compile (faster start, slower steps).")
    host: str = opt("127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all interfaces).")
    port: int = opt(8080, show_default=True, help="TCP port to listen on.")
    # fast path
    # compute each query's shared prompt prefix once
    prefix_reuse: bool = opt(True, flags=("--no-prefix-reuse",), negate=True,
                             help="[transformers] score every pair's full prompt (no shared-prefix KV cache).")
    batch_size: int = opt(32, show_default=True, help="Rows per forward pass.")
    max_batch: int = opt(64, show_default=True,  # a request is never split
                         help="Pairs gathered from concurrent requests into one scoring call (a request is never "
                              "split; small requests gain most).")
    max_wait_ms: float = opt(5.0, show_default=True, help="How long to wait for more requests before scoring a batch.")
    # limits
    max_pairs: int = opt(512, show_default=True, help="Pairs per request (413 above).")
    max_text_chars: int = opt(2000, show_default=True, help="Characters per text field (422 above).")
    max_body_bytes: int = opt(4_000_000, show_default=True, help="Request body size (413 above).")
    max_explain_pairs: int = opt(8, show_default=True, help="Pairs per request with explain=true (413 above).")
    max_queued_pairs: int = opt(8192, show_default=True,  # 503 "busy" above
                                help="Pairs waiting for the model across requests; above it new requests get 503 + "
                                     "Retry-After.")
    explain_max_tokens: int = opt(96, show_default=True, help="Token budget of a generated rationale.")
    graceful_timeout_s: float = opt(60.0, flags=("--graceful-timeout",), show_default=True,
                                    help="On SIGTERM/Ctrl-C, seconds to wait for requests in flight.")
    access_log: bool = opt(False, help="Log every request.")

    def __post_init__(self):
        if self.backend not in SERVE_BACKENDS:
            raise UserError(f"--backend must be one of {', '.join(SERVE_BACKENDS)}; got {self.backend!r}")
        from toolkit.core.stagefolder.remote import pin_model

        self.model = pin_model(self.model)  # a hub id at the commit it names now: the one the service loads and shows
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise UserError(f"--dtype must be auto, float32 or bfloat16; got {self.dtype!r}")
        if not 0 < int(self.port) < 65536:
            raise UserError(f"--port must be in 1..65535; got {self.port}")
        for name in ("batch_size", "max_batch", "max_pairs", "max_text_chars", "max_body_bytes", "max_explain_pairs",
                     "max_queued_pairs", "explain_max_tokens", "rules_k"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")
        if self.threads is not None and int(self.threads) < 1:
            raise UserError(f"--threads must be at least 1; got {self.threads}")
        if self.max_wait_ms < 0 or self.graceful_timeout_s < 0:
            raise UserError(f"--max-wait-ms and --graceful-timeout must be >= 0; "
                            f"got {self.max_wait_ms} and {self.graceful_timeout_s}")
