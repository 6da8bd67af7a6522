"""The OpenAI-compatible HTTP backend: vLLM's server, SGLang, llama.cpp's server, hosted teachers.

Requests are chat completions (`/chat/completions`), sent concurrently (at most
`BackendConfig.concurrency` in flight), each with a timeout (`timeout_s`) and retried with
exponential backoff and jitter on 429, 5xx, timeouts and dropped connections
(`max_retries`; a `Retry-After` header is honoured). A request that still fails raises a
one-line `UserError` naming the server and the status: a shard never gets a silent empty text,
and gen-cot's finished shards are kept for the rerun.

The API key is read from the environment variable named by `api_key_env` (default
OPENAI_API_KEY; none is sent when it is unset, as local servers need none). It only goes into
the Authorization header: it is never logged, and it is masked in error messages.

Assistant prefill (a conversation ending with an assistant message, as gen-cot's guided teacher
sends) uses vLLM's extra fields `continue_final_message=true, add_generation_prompt=false`.
Other servers may reject or ignore them: run gen-cot with `--mode free` against those.

Grade log-probabilities (first generated position): on a vLLM server the grade tokens' ids come
from its `/tokenize` endpoint and are asked for exactly (`logprob_token_ids`); elsewhere the
top-20 logprobs are searched for the labels' text, and a label outside them gets -inf (an
approximation: its probability is below the 20th token's). `score_grades` is a 1-token greedy
request with those logprobs, renormalised over the labels; a server that returns no logprobs
(some hosted reasoning models) gets a clear error. `BackendConfig.extra` is merged into every
request body (server-specific fields). Per-sample token counts come from the logprobs when
present, else from `usage` (split evenly over the n samples).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import random
import re

from toolkit.core.errors import UserError, missing_extra, redact
from toolkit.generation.base import (BackendConfig, Generation, Messages, SamplingConfig, is_prefill, label_softmax,
                                     merge_generations)

log = logging.getLogger(__name__)

BACKOFF_S = 0.5  # first retry after ~0.5 s, then 1, 2, 4 ... (x0.5-1.5 jitter), at most BACKOFF_MAX_S
BACKOFF_MAX_S = 30.0
TOP_LOGPROBS = 20  # the OpenAI API's maximum
RETRY_STATUS = {408, 409, 425, 429}  # and every 5xx
FINISH = {"stop": "stop", "length": "length", "eos": "stop"}
HINTS = {
    400: "the server rejected the request (a server without assistant prefill needs gen-cot --mode free)",
    401: "check the API key in the environment variable named by --api-key-env",
    403: "check the API key in the environment variable named by --api-key-env",
    404: "check --base-url (it ends in /v1) and --model (the served model name)",
}


def _httpx():
    try:
        import httpx
    except ImportError as e:
        raise missing_extra("serve", e.name or "httpx") from None  # httpx ships with the serve extra (and with vllm)
    return httpx


def _run(coro):
    """Run a coroutine from sync code, also inside a running event loop (e.g. a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def backoff_delay(attempt: int, retry_after: str | None = None) -> float:
    delay = min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt) * (0.5 + random.random())
    if retry_after:
        try:
            delay = max(delay, min(float(retry_after), 60.0))
        except ValueError:
            pass
    return delay


class OpenAIBackend:
    name = "openai"

    def __init__(self, cfg: BackendConfig):
        self.httpx = _httpx()
        if cfg.concurrency < 1 or cfg.max_retries < 0 or cfg.timeout_s <= 0:
            raise UserError(f"openai backend: concurrency >= 1, max_retries >= 0 and timeout > 0 needed; "
                            f"got {cfg.concurrency}, {cfg.max_retries}, {cfg.timeout_s}")
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        self.root = re.sub(r"/v1$", "", self.base_url)
        self._key = os.environ.get(cfg.api_key_env) or None
        if not self._key:
            log.debug("no API key in $%s; sending requests without one", cfg.api_key_env)
        self._model = cfg.model if cfg.model not in (None, "", "default") else None
        self._label_ids: dict[tuple, list[int] | None] = {}

    @property
    def model_id(self) -> str:
        if self._model is None:
            self._model = _run(self._discover_model())
        return self._model

    def close(self) -> None:
        pass  # a client lives for one call

    # -- HTTP ------------------------------------------------------------------

    def _client(self):
        httpx = self.httpx
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        n = self.cfg.concurrency
        return httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(self.cfg.timeout_s),
                                 limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))

    def _mask(self, text: str) -> str:
        return redact(text, [self._key])

    async def _request(self, client, method: str, url: str, body: dict | None = None, retry: bool = True):
        """One request with retries; returns the response JSON or raises a one-line UserError."""
        httpx = self.httpx
        attempts = self.cfg.max_retries + 1 if retry else 1
        why = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                r = await client.request(method, url, json=body)
            except httpx.TimeoutException:
                why = f"timed out after {self.cfg.timeout_s:g} s"
            except httpx.TransportError as e:
                why = f"connection failed ({type(e).__name__}: {self._mask(str(e)) or 'no detail'})"
            else:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        why = "HTTP 200 with a body that is not JSON"
                else:
                    why = f"HTTP {r.status_code}: {_server_message(r, [self._key])}"
                    if not (r.status_code in RETRY_STATUS or r.status_code >= 500):
                        hint = HINTS.get(r.status_code, "")
                        if r.status_code == 400 and (body or {}).get("n", 1) > 1:
                            hint = ("the server rejected the request; if it takes one sample per request (n = 1), "
                                    "pass --n-per-request 1")
                        raise UserError(f"openai server {url}: {why}" + (f" — {hint}" if hint else ""))
                    retry_after = r.headers.get("retry-after")
            if attempt + 1 < attempts:
                delay = backoff_delay(attempt, retry_after)
                log.warning("openai server %s: %s; retry %d/%d in %.1f s", url, why, attempt + 1, attempts - 1, delay)
                await asyncio.sleep(delay)
        raise UserError(f"openai server {url} failed after {attempts} attempt(s): {why}")

    async def _many(self, bodies: list[dict]) -> list[dict]:
        """POST every body to /chat/completions, at most `concurrency` at a time; the first failure cancels the
        rest."""
        sem = asyncio.Semaphore(self.cfg.concurrency)
        url = self.base_url + "/chat/completions"
        async with self._client() as client:
            async def one(body):
                async with sem:
                    return await self._request(client, "POST", url, body)

            tasks = [asyncio.create_task(one(b)) for b in bodies]
            try:
                return await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _discover_model(self) -> str:
        async with self._client() as client:
            data = await self._request(client, "GET", self.base_url + "/models")
        ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
        if len(ids) != 1:
            raise UserError(f"openai server {self.base_url} serves {len(ids)} models "
                            f"({', '.join(map(str, ids[:5]))}); pass --model with one of them")
        return ids[0]

    async def _tokenize(self, model: str, labels: list[str]) -> list[int] | None:
        """Grade label token ids from a vLLM-style /tokenize endpoint; None where the server has none."""
        async with self._client() as client:
            ids = []
            for lab in labels:
                try:
                    data = await self._request(client, "POST", self.root + "/tokenize",
                                               {"model": model, "prompt": lab, "add_special_tokens": False},
                                               retry=False)
                except UserError:
                    return None
                toks = data.get("tokens") if isinstance(data, dict) else None
                if not isinstance(toks, list):
                    return None
                if len(toks) != 1:
                    raise UserError(f"grade label {lab!r} is {len(toks)} tokens for the served model ({toks}); "
                                    "first-token scoring needs single-token labels")
                ids.append(int(toks[0]))
        return ids

    def label_ids(self, labels: list[str]) -> list[int] | None:
        key = tuple(labels)
        if key not in self._label_ids:
            self._label_ids[key] = _run(self._tokenize(self.model_id, labels))
            if self._label_ids[key] is None:
                log.info("openai server %s has no /tokenize; reading grade logprobs from the top-%d",
                         self.base_url, TOP_LOGPROBS)
        return self._label_ids[key]

    # -- generation ---------------------------------------------------------------

    def _body(self, messages: Messages, sampling: SamplingConfig, seed: int | None, logprobs: bool,
              ids: list[int] | None) -> dict:
        body = {"model": self.model_id, "messages": messages, "n": sampling.n, "temperature": sampling.temperature,
                "max_tokens": sampling.max_tokens}
        if sampling.temperature > 0:
            body["top_p"] = sampling.top_p
        if seed is not None:
            body["seed"] = seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if is_prefill(messages):
            body.update(continue_final_message=True, add_generation_prompt=False)  # vLLM's assistant prefill
        if self.cfg.template_options:  # the server renders the template (vLLM's and SGLang's field)
            body["chat_template_kwargs"] = dict(self.cfg.template_options)
        body.update(self.cfg.extra or {})  # server-specific fields
        if logprobs:
            body["logprobs"] = True
            if ids:
                body.update(logprob_token_ids=ids, return_tokens_as_token_ids=True)
            else:
                body["top_logprobs"] = TOP_LOGPROBS
        return body

    def generate(self, prompts: list[Messages], sampling: SamplingConfig,
                 grade_labels: list[str] | None = None) -> list[Generation]:
        if not prompts:
            return []
        want = bool(sampling.grade_logprobs and grade_labels)
        ids = self.label_ids(grade_labels) if want else None
        # prompt i is seeded seed + i*n (a vLLM server seeds sample j with seed + j): no two samples share a seed.
        # With --n-per-request, prompt i's n samples go out as several requests, the one holding sample j seeded
        # seed + i*n + j.
        per = self.cfg.n_per_request or sampling.n
        jobs = []  # (prompt index, samples in this request, seed)
        for i in range(len(prompts)):
            for off in range(0, sampling.n, per):
                jobs.append((i, min(per, sampling.n - off),
                             None if sampling.seed is None else sampling.seed + i * sampling.n + off))
        bodies = [self._body(prompts[i], dataclasses.replace(sampling, n=k), seed, want, ids) for i, k, seed in jobs]
        parts: list[list[Generation]] = [[] for _ in prompts]
        for (i, k, _), d in zip(jobs, _run(self._many(bodies))):
            parts[i].append(self._generation(d, k, grade_labels if want else None, ids))
        return [p[0] if len(p) == 1 else merge_generations(p) for p in parts]

    def _generation(self, data: dict, n: int, labels: list[str] | None, ids: list[int] | None) -> Generation:
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or len(choices) != n:
            raise UserError(f"openai server {self.base_url}: expected {n} choice(s), "
                            f"got {len(choices) if isinstance(choices, list) else 'none'}")
        choices = sorted(choices, key=lambda c: c.get("index", 0))
        usage = data.get("usage") or {}
        texts = [((c.get("message") or {}).get("content") or "") for c in choices]
        counts = []
        for c in choices:
            content = (c.get("logprobs") or {}).get("content")
            counts.append(len(content) if content else round((usage.get("completion_tokens") or 0) / n))
        return Generation(
            texts=texts,
            finish_reasons=[FINISH.get(c.get("finish_reason") or "", "error") for c in choices],
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=counts,
            grade_logprobs=[self._first_logprobs(c, labels, ids) for c in choices] if labels else None,
        )

    def _first_logprobs(self, choice: dict, labels: list[str], ids: list[int] | None) -> dict[str, float]:
        content = (choice.get("logprobs") or {}).get("content")
        if not content:
            raise UserError(f"openai server {self.base_url} returned no logprobs; "
                            "grade scoring needs a server with logprobs (vLLM, SGLang)")
        found: dict[str, float] = {}
        for e in [content[0], *content[0].get("top_logprobs", [])]:
            tok, lp = e.get("token", ""), e.get("logprob")
            if lp is None:
                continue
            if ids:
                m = re.fullmatch(r"token_id:(\d+)", tok)
                lab = labels[ids.index(int(m.group(1)))] if m and int(m.group(1)) in ids else None
            else:
                lab = tok.strip() if tok.strip() in labels else None
            if lab is not None:
                found[lab] = max(found.get(lab, -math.inf), float(lp))
        return {lab: found.get(lab, -math.inf) for lab in labels}

    def score_grades(self, prompts: list[Messages], grade_labels: list[str]) -> list[list[float]]:
        """P(label) for each grade label as the first answer token, renormalised over the labels."""
        gens = self.generate(prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=1, seed=None,
                                                     grade_logprobs=True), grade_labels)
        out = []
        for g in gens:
            p = label_softmax(g.grade_logprobs[0], grade_labels)
            if p is None:
                raise UserError(f"openai server {self.base_url}: none of the grade labels {grade_labels} "
                                f"is among the top-{TOP_LOGPROBS} first tokens; "
                                "score with a vLLM server (exact label logprobs) or the vllm/transformers backend")
            out.append(p)
        return out


def _server_message(r, secrets=()) -> str:
    """The server's error message (JSON `error.message` / `message` / `detail`, or the text) on one line,
    `secrets` masked, then cut to 200 characters (masked first: a cut could leave part of a key)."""
    try:
        data = r.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") or err.get("detail") or str(err) if isinstance(err, dict) else str(err)
    except ValueError:
        msg = r.text
    msg = " ".join(redact(msg, secrets).split())
    return (msg[:200] + "…") if len(msg) > 200 else (msg or r.reason_phrase or "no detail")
