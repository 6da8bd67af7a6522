"""Prompt templates, the transformers backend, and `toolkit gen-cot` (incl. resume after SIGKILL).

Run: .venv/bin/python -m pytest tests/test_generation.py -q
(the embedded default model is converted once into ~/.cache/taosr-toolkit on first use)
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.grades import get_scale
from toolkit.core.stagefolder import SHARDS
from toolkit.core.prompts import PromptBuilder

ROW = {C.PAIR_ID: "p1", C.QUERY: "red mug", C.TITLE: "Red ceramic mug", C.BRAND: "Aurelo", C.ATTRIBUTES: '{"color": "red"}', C.GRADE: 4}


# -- prompts -------------------------------------------------------------------


def test_student_and_teacher_prompts():
    b = PromptBuilder(get_scale())
    s = b.student(ROW, ["An accessory is Mismatch."])
    assert [m["role"] for m in s] == ["system", "user"]
    assert "4 = Excellent" in s[0]["content"] and "Query: red mug" in s[1]["content"]
    assert "Brand: Aurelo" in s[1]["content"] and "color: red" in s[1]["content"]
    assert "- An accessory is Mismatch." in s[1]["content"]
    assert "grade alone on the first line" in s[1]["content"]
    t = b.teacher(ROW)
    assert "The correct grade for this pair is 4 (Excellent)" in t[1]["content"]
    assert "5. Decision" in t[1]["content"] and 'Grade: 4"' in t[1]["content"]
    assert b.target("4", "exact match") == "4\nReason: exact match"
    assert PromptBuilder(get_scale(), "cot_first").target("4", "exact match") == "exact match\nGrade: 4"


def test_custom_template_file(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("### user\nQ={query} I={item}\n")
    assert PromptBuilder(get_scale(), student_template=str(p)).student(ROW)[0]["content"].startswith("Q=red mug I=Title: Red ceramic mug")
    bad = tmp_path / "bad.txt"
    bad.write_text("### user\n{nonsense}\n")
    with pytest.raises(UserError, match="unknown field 'nonsense'"):
        PromptBuilder(get_scale(), student_template=str(bad)).student(ROW)


# -- transformers backend ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    from toolkit.generation import BackendConfig, make_backend

    return make_backend(BackendConfig(model=str(tiny_model_dir), dtype="float32", batch_size=4))


def test_generate_n_samples_with_counts_and_grade_logprobs(tiny_backend):
    from toolkit.generation import SamplingConfig

    b = PromptBuilder(get_scale())
    prompts = [b.student(ROW), b.student({**ROW, C.QUERY: "blue mug"}), b.student({**ROW, C.QUERY: "teapot"})]
    gens = tiny_backend.generate(prompts, SamplingConfig(n=2, temperature=1.0, max_tokens=8, seed=1, grade_logprobs=True), ["4", "3", "2", "1"])
    assert len(gens) == 3
    for g in gens:
        assert len(g.texts) == 2 and len(g.finish_reasons) == 2 and len(g.completion_tokens) == 2
        assert all(0 < n <= 8 for n in g.completion_tokens) and g.prompt_tokens > 20
        assert set(g.finish_reasons) <= {"stop", "length"}
        assert [sorted(d) for d in g.grade_logprobs] == [["1", "2", "3", "4"]] * 2
        assert all(v < 0 for d in g.grade_logprobs for v in d.values())
    again = tiny_backend.generate(prompts, SamplingConfig(n=2, temperature=1.0, max_tokens=8, seed=1))
    assert [g.texts for g in again] == [g.texts for g in gens]  # seeded


def test_score_grades_is_a_distribution_and_matches_generation_logprobs(tiny_backend):
    import math

    from toolkit.generation import SamplingConfig

    b = PromptBuilder(get_scale())
    prompts = [b.student(ROW), b.student({**ROW, C.TITLE: "Mug rack"})]
    probs = tiny_backend.score_grades(prompts, ["4", "3", "2", "1"])
    assert all(abs(sum(p) - 1) < 1e-5 and len(p) == 4 for p in probs)
    gens = tiny_backend.generate(prompts, SamplingConfig(max_tokens=1, grade_logprobs=True), ["4", "3", "2", "1"])
    for p, g in zip(probs, gens):
        lp = g.grade_logprobs[0]
        z = sum(math.exp(v) for v in lp.values())
        assert [round(math.exp(lp[k]) / z, 4) for k in "4321"] == [round(x, 4) for x in p]


def test_assistant_prefill_and_stop_strings(tiny_backend):
    from toolkit.generation import SamplingConfig

    prompt = PromptBuilder(get_scale()).student(ROW) + [{"role": "assistant", "content": "4\nReason:"}]
    text = tiny_backend.render(prompt)
    assert text.rstrip().endswith("4\nReason:") and text.count("<|im_start|>assistant") == 1
    g = tiny_backend.generate([prompt], SamplingConfig(max_tokens=30, temperature=1.0, seed=3, stop=["\n"]))[0]
    assert "\n" not in g.texts[0]


def test_multi_token_grade_labels_are_refused(tiny_backend):
    with pytest.raises(UserError, match="is 2 tokens|is 3 tokens|tokens in this model"):
        tiny_backend.score_grades([PromptBuilder(get_scale()).student(ROW)], ["Excellent", "Irrelevant"])


def test_non_finite_grade_probabilities_are_refused(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolkit.generation import BackendConfig
    from toolkit.generation.hf import TransformersBackend

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")  # one broken weight: every logit becomes NaN
    backend = TransformersBackend(BackendConfig(model=str(tiny_model_dir), batch_size=2), model=model,
                                  tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
    b = PromptBuilder(get_scale())
    with pytest.raises(UserError, match=r"non-finite grade probabilities for 2 of the 2 prompts.*--batch-size 1"):
        backend.score_grades([b.student(ROW), b.student({**ROW, C.TITLE: "Mug rack"})], ["4", "3", "2", "1"])


def test_model_spec_errors(tmp_path, monkeypatch):
    from toolkit.core.models import resolve_model
    from toolkit.core.stagefolder.remote import is_hub_model_id

    with pytest.raises(UserError, match="no such folder"):
        resolve_model("./nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"someone/some-model: cannot reach the Hub \(HF_HUB_OFFLINE=1\) and it is not in "
                                        r"the local Hub cache"):
        resolve_model("someone/some-model")
    with pytest.raises(UserError, match="not a hub id"):
        resolve_model("someone/some-model@")
    # the default model's hub id is the Hub's bf16 weights at a commit, not the packaged Q4_1 copy under another name
    assert is_hub_model_id("HuggingFaceTB/SmolLM2-135M-Instruct") and not is_hub_model_id("default")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(UserError, match=r"HuggingFaceTB/SmolLM2-135M-Instruct: cannot reach the Hub \(HF_HUB_OFFLINE=1\)"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")


# -- gen-cot ---------------------------------------------------------------------------


def _pairs(cli, repo, tmp_path):
    cli("ingest", repo / "demo/pairs.jsonl", "-o", tmp_path / "pairs")
    return tmp_path / "pairs"


def test_gen_cot_tiny_model_accounts_for_every_sample(cli, repo, tmp_path, tiny_model_dir):
    pairs = _pairs(cli, repo, tmp_path)
    r = cli("gen-cot", pairs, "-o", tmp_path / "cot", "--model", tiny_model_dir, "--limit", "6", "--samples", "2",
            "--shard-size", "4", "--step-tokens", "6", "--dtype", "float32")
    assert r.exit_code == 0, r.stderr
    stats = json.loads((tmp_path / "cot/stats.json").read_text())
    rejects = pl.read_parquet(tmp_path / "cot/rejects.parquet")
    sft = pl.read_parquet(tmp_path / "cot/sft.parquet")
    assert stats["generated"] == 12 == sft.height + rejects.height
    assert sum(stats["dropped"].values()) == rejects.height and rejects["drop_reason"].null_count() == 0
    assert len(list((tmp_path / "cot" / SHARDS).glob("*.parquet"))) == 2
    assert "gen-cot: 6 pairs x 2 samples" in r.stdout
    # rerun: every shard reused
    r = cli("gen-cot", pairs, "-o", tmp_path / "cot", "--model", tiny_model_dir, "--limit", "6", "--samples", "2",
            "--shard-size", "4", "--step-tokens", "6", "--dtype", "float32")
    assert "shards 0 new, 2 reused" in r.stdout


def test_gen_cot_free_mode_asks_for_a_pairs_k_samples_in_one_request(cli, repo, tmp_path, tiny_model_dir, monkeypatch):
    import toolkit.generation.base as base

    real, calls = base.make_backend, []

    def spying(cfg):
        backend = real(cfg)
        generate = backend.generate
        backend.generate = lambda prompts, sampling, *a: calls.append((len(prompts), sampling.n)) or generate(prompts, sampling, *a)
        return backend

    monkeypatch.setattr(base, "make_backend", spying)
    pairs = _pairs(cli, repo, tmp_path)
    r = cli("gen-cot", pairs, "-o", tmp_path / "cot", "--model", tiny_model_dir, "--limit", "4", "--samples", "3", "--mode", "free",
            "--max-tokens", "8", "--shard-size", "4", "--dtype", "float32")
    assert r.exit_code == 0, r.stderr
    assert calls == [(4, 3)]  # 4 pairs, n = 3 each: one prefill per pair, not 12 prompts
    rows = pl.concat([pl.read_parquet(tmp_path / "cot" / f) for f in ("sft.parquet", "rejects.parquet")], how="diagonal_relaxed")
    got = rows.group_by(C.PAIR_ID).agg(pl.col(C.SAMPLE_IDX).sort())
    assert got.height == 4 and all(s == [0, 1, 2] for s in got[C.SAMPLE_IDX].to_list())
    r = cli("gen-cot", pairs, "-o", tmp_path / "cot", "--model", tiny_model_dir, "--limit", "4", "--samples", "3", "--mode", "free",
            "--max-tokens", "8", "--shard-size", "4", "--dtype", "float32", "--force")
    assert r.exit_code == 0 and "shards 1 new, 0 reused" in r.stdout and calls == [(4, 3)] * 2


def test_gen_cot_guided_grade_written_by_name_counts_as_its_label(cli, repo, tmp_path, tiny_model_dir, monkeypatch):
    import toolkit.generation.base as base
    from test_preferences import StepBackend

    monkeypatch.setattr(base, "make_backend", lambda cfg: StepBackend("Excellent."))
    pairs = _pairs(cli, repo, tmp_path)
    r = cli("gen-cot", pairs, "-o", tmp_path / "cot", "--model", tiny_model_dir, "--limit", "8", "--samples", "1", "--split", "")
    assert r.exit_code == 0, r.stderr
    rows = pl.concat([pl.read_parquet(tmp_path / "cot" / f) for f in ("sft.parquet", "rejects.parquet")], how="diagonal_relaxed")
    assert rows.height == 8 and (rows[C.PRED_GRADE] == 4).all() and rows[C.TEXT].str.ends_with("\nGrade: 4").all()
    kept = pl.read_parquet(tmp_path / "cot/sft.parquet")
    assert kept.height == (rows[C.GRADE] == 4).sum() >= 1 and (kept[C.GRADE] == 4).all()  # the others: grade_mismatch


def test_pairs_with_retrieved_rule_ids_but_no_index_warn_that_prompts_get_no_rules(caplog):
    from toolkit.model_stage import attach_rules

    df = pl.DataFrame({C.QUERY: ["mug", "kettle"], C.TITLE: ["Red mug", "Steel kettle"], C.RULE_IDS: [["r1", "r2"], []]})
    assert attach_rules(df, None, 3) == [[], []]
    assert "no --index was given" in caplog.text
    caplog.clear()
    assert attach_rules(df.drop(C.RULE_IDS), None, 3) == [[], []] and caplog.text == ""


@pytest.mark.slow
def test_gen_cot_default_model_keeps_agreeing_label_first_rationales(cli, repo, tmp_path, default_model_dir):
    pairs = _pairs(cli, repo, tmp_path)
    r = cli("gen-cot", pairs, "-o", tmp_path / "cot", "--limit", "4", "--samples", "1", "--step-tokens", "48")
    assert r.exit_code == 0, r.stderr
    sft = pl.read_parquet(tmp_path / "cot/sft.parquet")
    stats = json.loads((tmp_path / "cot/stats.json").read_text())
    assert stats["kept"] == sft.height >= 1
    # a guided step cut at --step-tokens drops the rationale (it reads cut off mid-sentence), counted
    rejects = pl.read_parquet(tmp_path / "cot/rejects.parquet")
    cut = rejects.filter(pl.col("drop_reason") == "truncated_step")
    assert (cut[C.FINISH_REASON] == "length").all() and stats["dropped"]["truncated_step"] == cut.height
    assert sft.height + rejects.height == 4 and C.RULE_TEXTS in sft.columns  # the rules each rationale was written from
    scale = get_scale()
    for row in sft.iter_rows(named=True):
        answer = row[C.COMPLETION][0]
        assert answer["role"] == "assistant"
        assert answer["content"].startswith(scale.by_value(row[C.GRADE]).label + "\nReason: 1. Query understanding:")
        assert [m["role"] for m in row[C.PROMPT]] == ["system", "user"]
    # readable by datasets in TRL's conversational prompt/completion format
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "cot/sft.parquet"), split="train")
    assert ds[0][C.COMPLETION][0]["role"] == "assistant"


def test_gen_cot_resumes_after_sigkill_with_identical_rows(cli, repo, tmp_path, tiny_model_dir):
    pairs = _pairs(cli, repo, tmp_path)
    args = [str(pairs), "--model", str(tiny_model_dir), "--limit", "8", "--shard-size", "2", "--step-tokens", "8",
            "--dtype", "float32", "--batch-size", "2", "--temperature", "1.0"]
    exe = [sys.executable, "-m", "toolkit", "gen-cot"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # uninterrupted reference run
    subprocess.run(exe + args + ["-o", str(tmp_path / "ref")], check=True, env=env, capture_output=True)
    # a run killed once its first shard is on disk
    proc = subprocess.Popen(exe + args + ["-o", str(tmp_path / "run")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "run" / SHARDS
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("shard-*.parquet"))) < 1 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(shards.glob("shard-*.parquet")))
    assert 1 <= n_before < 4, "the run should have been killed part-way"
    assert not (tmp_path / "run" / "sft.parquet").exists()
    r = subprocess.run(exe + args + ["-o", str(tmp_path / "run")], check=True, env=env, capture_output=True, text=True)
    assert f"shards {4 - n_before} new, {n_before} reused" in r.stdout
    for name in ("sft.parquet", "rejects.parquet"):
        a = pl.read_parquet(tmp_path / "ref" / name).sort(C.PAIR_ID, C.SAMPLE_IDX)
        b = pl.read_parquet(tmp_path / "run" / name).sort(C.PAIR_ID, C.SAMPLE_IDX)
        assert a.equals(b), name


def test_score_on_a_cpu_is_float32_so_its_numbers_do_not_move_with_the_batch(cli, repo, tmp_path, tiny_model_dir):
    """Without --dtype, `toolkit score` on a CPU scores in float32 (its config says so): the probabilities are the same
    at any batch size. In bf16, which `auto` gave on CPUs with AMX, a fine-tuned model's grades moved with the batch
    (benchmarks/README.md, "Scoring precision"). A dtype given is kept."""
    import yaml
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU `auto` stays bfloat16")
    pairs = _pairs(cli, repo, tmp_path)
    probs = {}
    for bs in (1, 7):
        r = cli("score", pairs, "--model", tiny_model_dir, "--batch-size", bs, "-o", tmp_path / f"s{bs}")
        assert r.exit_code == 0, r.stderr
        assert yaml.safe_load((tmp_path / f"s{bs}/config.yaml").read_text())["backend"]["dtype"] == "float32"
        probs[bs] = np.asarray(pl.read_parquet(tmp_path / f"s{bs}/predictions.parquet")["grade_probs"].to_list())
    assert probs[1].shape == (109, 4) and np.abs(probs[1] - probs[7]).max() < 1e-5
    r = cli("score", pairs, "--model", tiny_model_dir, "--split", "test", "--dtype", "bfloat16", "-o", tmp_path / "bf")
    assert r.exit_code == 0 and yaml.safe_load((tmp_path / "bf/config.yaml").read_text())["backend"]["dtype"] == "bfloat16"
