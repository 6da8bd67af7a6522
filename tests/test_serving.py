"""`toolkit serve` over real HTTP: scores, tiers, bad input, concurrency, explain, shutdown (issue 10).

Run: .venv/bin/python -m pytest tests/test_serving.py -q
The module starts one real server (`python -m toolkit serve`, tiny random Llama, float32) on a
free 127.0.0.1 port, after making its inputs with the CLI: `toolkit ingest demo/pairs.jsonl`,
`toolkit score`, `toolkit tier fit` and `toolkit tier apply`. The last test stops that server
with SIGTERM while a request is in flight. Parts without a server: tests/test_serving_parts.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from toolkit.core import columns as C

pytestmark = pytest.mark.slow
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MAX_PAIRS, MAX_CHARS, MAX_BODY, MAX_EXPLAIN, EXPLAIN_TOKENS = 64, 300, 60_000, 2, 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _invoke(*args):
    from click.testing import CliRunner

    from toolkit.cli import cli

    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def demo(tmp_path_factory, repo, tiny_model_dir):
    """Inputs made with the CLI: pairs, `toolkit score` predictions, a fitted tier rule, tiered predictions."""
    d = tmp_path_factory.mktemp("serving")
    _invoke("ingest", repo / "demo" / "pairs.jsonl", "-o", d / "pairs")
    _invoke("score", d / "pairs", "--model", tiny_model_dir, "--dtype", "float32", "-o", d / "scores")
    _invoke("tier", "fit", "--predictions", d / "scores", "-o", d / "tiers", "--no-plots")
    _invoke("tier", "apply", "--predictions", d / "scores", "--rule", d / "tiers", "-o", d / "tiered")
    return d


class Server:
    def __init__(self, args: list, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "toolkit", "serve", "--port", str(self.port), *map(str, args)]
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"server exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready after {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def server(demo, tiny_model_dir):
    srv = Server(["--model", tiny_model_dir, "--tiers", demo / "tiers", "--dtype", "float32", "--max-pairs", MAX_PAIRS,
                  "--max-text-chars", MAX_CHARS, "--max-body-bytes", MAX_BODY, "--max-explain-pairs", MAX_EXPLAIN,
                  "--explain-max-tokens", EXPLAIN_TOKENS, "--batch-size", 8, "--max-wait-ms", 20,
                  "--threads", 1], demo / "server.log")  # the tiny model is fastest on one thread of a busy machine
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _post(server, body, **kw):
    return httpx.post(server.url + "/v1/score", json=body, timeout=120, **kw)


def _requests_by_query(demo) -> list[dict]:
    """One request per demo query: half as query + items (attributes as objects, keys reversed), half as pairs."""
    pairs = pl.read_parquet(demo / "pairs" / "pairs.parquet")
    out = []
    for n, (query, group) in enumerate(pairs.group_by(C.QUERY, maintain_order=True)):
        items = []
        for r in group.iter_rows(named=True):
            item = {"id": r[C.PAIR_ID], **{f: r[f] for f in (C.TITLE, C.DESCRIPTION, C.CATEGORY, C.BRAND) if r[f]}}
            if r[C.ATTRIBUTES]:
                attrs = json.loads(r[C.ATTRIBUTES])
                item[C.ATTRIBUTES] = dict(reversed(list(attrs.items()))) if n % 2 == 0 else r[C.ATTRIBUTES]
            items.append(item)
        out.append({"query": query[0], "items": items} if n % 2 == 0 else {"pairs": [{"query": query[0], **it} for it in items]})
    return out


def test_health_readiness_and_openapi(server, demo):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["prefix_reuse"] and ready["dtype"] == "float32" and ready["scale"] == "taosr4"
    assert ready["prefix_check_gap"] < 1e-4
    assert ready["beta"] == json.loads((demo / "tiers" / "tiers.json").read_text())["beta"]
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/score" in spec["paths"] and {"ScoreRequest", "ScoreResponse", "PairScore"} <= set(spec["components"]["schemas"])
    assert "swagger" in httpx.get(server.url + "/docs").text.lower()


def test_scores_equal_toolkit_score_and_tiers_equal_tier_apply(server, demo):
    ref = {r[C.PAIR_ID]: r for r in pl.read_parquet(demo / "tiered" / "predictions.parquet").iter_rows(named=True)}
    beta = json.loads((demo / "tiers" / "tiers.json").read_text())["beta"]
    seen = 0
    for body in _requests_by_query(demo):
        r = _post(server, body)
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["beta"] == beta and res["scale"] == "taosr4"
        for pair in res["results"]:
            want = ref[pair["id"]]
            assert pair["grade_probs"] == pytest.approx(want[C.GRADE_PROBS], abs=2e-6)
            assert [g["grade"] for g in pair["grades"]] == [4, 3, 2, 1]
            assert [g["prob"] for g in pair["grades"]] == pair["grade_probs"]
            assert pair["pred_grade"] == want[C.PRED_GRADE]
            assert (pair["cumpt_grade"], pair["tier"], pair["beta"]) == (want[C.CUMPT_GRADE], want[C.TIER], beta)
            seen += 1
    assert seen == len(ref) == 109


BAD = [
    # (name, raw body or JSON, headers, status, words in the error)
    ("malformed JSON", b'{"query": "mug", "items": [{"title": "a"}', {}, 400, "malformed JSON at line 1"),
    ("not UTF-8", b'{"query": "caf\xe9", "items": [{"title": "a"}]}', {}, 400, "not valid UTF-8"),
    ("empty body", b"", {}, 400, "empty request body"),
    ("a JSON array", [{"query": "mug", "title": "a"}], {}, 422, "valid dictionary"),
    ("missing title", {"query": "mug", "items": [{"brand": "x"}]}, {}, 422, "items[0].title: Field required"),
    ("missing query", {"pairs": [{"title": "a"}]}, {}, 422, "pairs[0].query: Field required"),
    ("empty query", {"query": "", "items": [{"title": "a"}]}, {}, 422, "query: must not be empty"),
    ("blank title", {"query": "mug", "items": [{"title": "a"}, {"title": "  \t"}]}, {}, 422, "items[1].title: must not be empty"),
    ("no items", {"query": "mug", "items": []}, {}, 422, "empty"),
    ("items without query", {"items": [{"title": "a"}]}, {}, 422, "need a `query`"),
    ("both shapes", {"query": "mug", "items": [{"title": "a"}], "pairs": [{"query": "q", "title": "t"}]}, {}, 422, "not both"),
    ("unknown field", {"querry": "mug", "items": [{"title": "a"}]}, {}, 422, "querry"),
    ("wrong type", {"query": "mug", "items": [{"title": 7}]}, {}, 422, "items[0].title: Input should be a valid string"),
    ("too many pairs", {"query": "mug", "items": [{"title": f"t{i}"} for i in range(MAX_PAIRS + 1)]}, {}, 413, "too many pairs"),
    ("text too long", {"query": "mug", "items": [{"title": "x" * (MAX_CHARS + 1)}]}, {}, 422, "items[0].title is 301 characters"),
    ("body too large", {"query": "mug", "items": [{"title": "t", "description": "d" * 250}] * 250}, {}, 413, "over the limit"),
    ("explain too many", {"query": "mug", "items": [{"title": "a"}] * (MAX_EXPLAIN + 1), "explain": True}, {}, 413, "explain=true"),
    ("explain not a bool", {"query": "mug", "items": [{"title": "a"}], "explain": "maybe"}, {}, 422, "explain"),
]


@pytest.mark.parametrize("name,body,headers,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_with_a_clear_message(server, name, body, headers, status, words):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/score", content=content, headers={"content-type": "application/json", **headers}, timeout=60)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_other_faults_and_the_server_keeps_serving(server):
    def chunks():  # streamed without Content-Length, over the body limit
        for _ in range(MAX_BODY // 1000 + 2):
            yield b" " * 1000

    assert httpx.post(server.url + "/v1/score", content=chunks(), timeout=60).status_code == 413
    assert httpx.get(server.url + "/v1/score").status_code == 405
    assert "no such endpoint" in httpx.get(server.url + "/v2/nothing").json()["error"]
    ok = httpx.post(server.url + "/v1/score", content=b'{"query": "mug", "items": [{"title": "Red mug"}]}',
                    headers={"content-type": "text/plain"}, timeout=60)  # curl -d without a JSON content type
    assert ok.status_code == 200 and ok.json()["results"][0]["tier"] in ("Good", "Mid", "Bad")
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert "Traceback" not in server.log.read_text()


def test_concurrent_clients_are_batched_and_get_their_own_results(server, demo):
    bodies = (_requests_by_query(demo) * 2)[:16]
    alone = [_post(server, b).json()["results"] for b in bodies[:4]]
    before = httpx.get(server.url + "/readyz").json()["batching"]["batches"]
    start = threading.Barrier(17)

    def call(body):
        start.wait()
        return _post(server, body)

    def bad():
        start.wait()
        return _post(server, {"query": "mug", "items": [{"title": ""}]})

    with ThreadPoolExecutor(17) as pool:
        futures = [pool.submit(call, b) for b in bodies] + [pool.submit(bad)]
        responses = [f.result() for f in futures]
    assert responses[-1].status_code == 422
    for body, r in zip(bodies, responses):
        assert r.status_code == 200, r.text
        items = body.get("items") or body["pairs"]
        assert [p["id"] for p in r.json()["results"]] == [it["id"] for it in items]
    for want, r in zip(alone, responses):
        got = [x for p in r.json()["results"] for x in p["grade_probs"]]
        assert got == pytest.approx([x for p in want for x in p["grade_probs"]], abs=2e-6)
    stats = httpx.get(server.url + "/readyz").json()["batching"]
    assert stats["batches"] - before < 16  # some requests shared a forward pass
    assert stats["max_requests_per_batch"] >= 2 and stats["in_flight"] == 0


def test_explain_returns_a_rationale(server):
    r = _post(server, {"query": "running shoes", "items": [{"title": "Trail running shoe"}], "explain": True})
    assert r.status_code == 200, r.text
    pair = r.json()["results"][0]
    assert isinstance(pair["explain_text"], str) and pair["explain_text"] and isinstance(pair["rationale"], str)
    assert len(pair["grade_probs"]) == 4 and pair["tier"]


def test_cli_mistakes_are_one_line_errors(tmp_path, tiny_model_dir, demo):
    from click.testing import CliRunner

    from toolkit.cli import cli

    def run(*args):
        return CliRunner().invoke(cli, ["serve", *map(str, args)])

    r = run("--model", tmp_path / "missing")
    assert r.exit_code == 2 and "no such folder" in r.output and "Traceback" not in r.output
    r = run("--model", tiny_model_dir, "--tiers", tmp_path / "nope")
    assert r.exit_code == 2 and "no tier rule here" in r.output
    r = run("--model", tiny_model_dir, "--tiers", demo / "tiers", "--scale", "three")
    assert r.exit_code == 2 and "does not match" in r.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run("--model", tiny_model_dir, "--port", s.getsockname()[1])
    assert r.exit_code == 2 and "cannot listen on" in r.output


def test_a_model_that_fails_to_load_stops_the_server_with_a_one_line_error(tmp_path):
    bad = tmp_path / "broken-model"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llama"}')  # no weights, no tokenizer
    srv = Server(["--model", bad], tmp_path / "server.log")
    try:
        rc = srv.proc.wait(timeout=240)
    finally:
        srv.stop()
    out = srv.log.read_text()
    assert rc == 2 and "error: the model failed to load" in out, out[-2000:]


def test_sigterm_finishes_the_request_in_flight(server):
    """Last in this file: it stops the module's server."""
    result = {}

    def slow():  # two generated rationales of up to EXPLAIN_TOKENS tokens: a second or more with the tiny model
        result["response"] = _post(server, {"query": "mug", "items": [{"title": "Red mug"}, {"title": "Blue mug"}], "explain": True})
        result["at"] = time.time()

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.time() + 60
    while httpx.get(server.url + "/readyz").json()["in_flight"] < 1:
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(server.proc.pid, signal.SIGTERM)
    sent = time.time()
    with pytest.raises(httpx.TransportError):  # no new connections once shutting down
        time.sleep(0.3)
        httpx.get(server.url + "/healthz", timeout=5)
    t.join(120)
    assert result["response"].status_code == 200 and len(result["response"].json()["results"]) == 2
    assert result["at"] > sent  # it was still in flight when SIGTERM arrived
    # uvicorn re-raises the signal once shut down, so the exit status is the usual one for SIGTERM
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "Traceback" not in log and "Waiting for connections to close" in log and "stopped" in log
