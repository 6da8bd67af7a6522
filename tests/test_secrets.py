"""API keys and tokens never reach stderr or an error message, not even in part (issue 14).

Run: .venv/bin/python -m pytest tests/test_secrets.py -q
A server that echoes the request's Authorization header deep in a long error body is the case
that leaked: the message was cut to 200 characters before the key was masked, so the cut left a
prefix of the key. Here the OpenAI backend talks to such a real HTTP server on 127.0.0.1; the Hub
upload and the Argilla client get failures whose text quotes the token in the same way.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from toolkit.core.errors import UserError, redact

KEY = "sk-proj-" + "Zq7Lm2Xv9Kp4Rt8Wn3Bc6Hd1Jf5Gs0Ay2Ue7Io4" + "Tx9Qm"  # 53 characters, like a real key
KEY_ENV = "TOOLKIT_TEST_SECRET_KEY"
PAD = "the request was rejected because a header is malformed; " * 2 + "request id 7f3a9c; "  # the key then straddles the 200-character cut


def leaks(text: str, secret: str = KEY, n: int = 8) -> list[str]:
    """Every n-character piece of `secret` that appears in `text`."""
    return [secret[i : i + n] for i in range(len(secret) - n + 1) if secret[i : i + n] in text]


def test_redact_masks_the_secret_and_what_a_cut_left_of_it():
    assert redact(f"Authorization: Bearer {KEY}; again {KEY}", [KEY]) == "Authorization: Bearer ***; again ***"
    cut = f"Authorization: Bearer {KEY}"[:40]  # an upstream cut: the text ends inside the key
    assert redact(cut, [KEY]) == "Authorization: Bearer ***" and not leaks(redact(KEY[20:] + " tail", [KEY]))
    assert redact(f"{KEY[3:15]} and {KEY[30:]}", [None, "", KEY]) == "*** and ***"
    assert redact("no secret here, sk-proj", [KEY]) == "no secret here, sk-proj"  # a short common prefix stays


class EchoServer:
    """A real HTTP server on 127.0.0.1 that answers every request with `status` and an error body
    quoting the request's Authorization header after ~150 characters of text."""

    def __init__(self, status: int):
        server = self
        self.status, self.requests = status, 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests += 1
                msg = f"{PAD}Authorization: {self.headers.get('Authorization')}"
                data = json.dumps({"error": {"message": msg, "code": server.status}}).encode()
                self.send_response(server.status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), "Retry-After": "0"}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def echo_server(request, monkeypatch):
    pytest.importorskip("httpx")
    import toolkit.generation.openai_backend as ob

    monkeypatch.setattr(ob, "BACKOFF_S", 0.01)
    monkeypatch.setenv(KEY_ENV, KEY)
    srv = EchoServer(request.param)
    yield srv
    srv.close()


@pytest.mark.parametrize("echo_server", [400, 503], indirect=True)
def test_openai_server_echoing_the_key_shows_none_of_it(echo_server, caplog):
    from toolkit.generation import make_backend
    from toolkit.generation.base import BackendConfig, SamplingConfig

    backend = make_backend(BackendConfig(kind="openai", base_url=echo_server.url, model="m", api_key_env=KEY_ENV, max_retries=1))
    with pytest.raises(UserError) as e:
        backend.generate([[{"role": "user", "content": "hi"}]], SamplingConfig(max_tokens=4))
    msg = str(e.value)
    assert f"HTTP {echo_server.status}" in msg and "Authorization: Bearer ***" in msg and not leaks(msg), msg
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert not leaks(logged), logged
    if echo_server.status == 503:
        assert echo_server.requests == 2 and "retry 1/1" in logged


@pytest.mark.parametrize("echo_server", [503], indirect=True)
def test_gen_cot_stderr_shows_none_of_an_echoed_key(echo_server, cli, repo, tmp_path):
    assert cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs").exit_code == 0
    r = cli("-vv", "gen-cot", tmp_path / "pairs", "-o", tmp_path / "cot", "--backend", "openai", "--base-url", echo_server.url,
            "--model", "m", "--api-key-env", KEY_ENV, "--mode", "free", "--max-tokens", "4", "--limit", "1", "--max-retries", "1")
    assert r.exit_code != 0 and "HTTP 503" in r.stderr and "retry 1/1" in r.stderr, r.stderr
    assert not leaks(r.stdout + r.stderr), r.stderr


def test_hub_upload_failure_shows_none_of_the_token(tmp_path, monkeypatch):
    from toolkit.hub import PushConfig, upload

    monkeypatch.setenv("TOOLKIT_TEST_HF_TOKEN", KEY)

    class Failing:
        def create_repo(self, **kw):
            raise RuntimeError(f"400 Client Error: {PAD}Authorization: Bearer {KEY}\nmore")

    with pytest.raises(UserError) as e:
        upload(tmp_path, PushConfig(folder=str(tmp_path), repo_id="me/x", token_env="TOOLKIT_TEST_HF_TOKEN"), api=Failing())
    msg = str(e.value)
    assert msg.startswith("upload to me/x failed: 400") and "$TOOLKIT_TEST_HF_TOKEN" in msg and not leaks(msg), msg


def test_argilla_errors_show_none_of_the_api_key():
    pytest.importorskip("argilla")
    from argilla._exceptions import ArgillaAPIError

    from annotation.client import Connection, argilla_errors

    conn = Connection("http://127.0.0.1:6900", KEY)
    with pytest.raises(UserError) as e:
        with argilla_errors(conn, "pushing to review/x"):
            raise ArgillaAPIError(f"Internal server error. Details: {PAD}X-Argilla-Api-Key: {KEY}", status_code=500)
    msg = str(e.value)
    assert "HTTP 500" in msg and "pushing to review/x" in msg and "\n" not in msg and not leaks(msg), msg
