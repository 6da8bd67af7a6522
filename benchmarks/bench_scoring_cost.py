"""Scoring cost (issue 7): label-first first-token scoring vs generating the whole answer, same model and pairs.

Run (the recorded numbers; a few minutes on our busy 2-core machine):
    .venv/bin/python benchmarks/bench_scoring_cost.py
Quick check:
    .venv/bin/python benchmarks/bench_scoring_cost.py --pairs 4 --max-tokens 16

Both modes go through `toolkit.scoring.score_rows`, i.e. `toolkit score`'s two modes on the demo
pairs with the default SmolLM2-135M-Instruct (dtype auto = bf16 here): `first-token` (one forward
pass over the prompt; the grade is the softmax over the grade tokens at the label position) and
`generate` (greedy decoding of the answer up to --max-tokens, `toolkit score`'s default 96, then
parsing). Latency per pair: one pair per call; throughput: --batch-size pairs per call. The modes
alternate pair by pair so that the machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on our busy 2-core machine)")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_scoring_cost.json"))
    args = ap.parse_args()

    import torch

    from toolkit.core import columns as C
    from toolkit.generation.base import BackendConfig
    from toolkit.generation.hf import TransformersBackend
    from toolkit.core.grades import get_scale
    from toolkit.core.prompts import PromptBuilder
    from toolkit.scoring import score_rows
    from toolkit.serving.schemas import ScoreRequest

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    demo = [json.loads(line) for line in (REPO / "demo" / "pairs.jsonl").read_text().splitlines() if line.strip()][: args.pairs]
    rows = ScoreRequest(pairs=demo).rows()
    for i, (r, d) in enumerate(zip(rows, demo)):
        r.update({C.PAIR_ID: f"p{i}", C.GRADE: d["grade"]})
    backend = TransformersBackend(BackendConfig(model=args.model, dtype=args.dtype, batch_size=args.batch_size))
    builder = PromptBuilder(get_scale())
    modes = ("first-token", "generate")
    score_rows(backend, builder, rows[:2], [[]] * 2, "first-token")  # warm-up
    score_rows(backend, builder, rows[:1], [[]], "generate", 4)

    latency = {m: [] for m in modes}
    tokens = []
    for r in rows:  # one pair per call, the modes alternating
        for m in modes:
            t = time.perf_counter()
            df = score_rows(backend, builder, [r], [[]], m, args.max_tokens)
            latency[m].append(time.perf_counter() - t)
            if m == "generate":
                tokens.append(len(backend.tokenizer(df[C.TEXT][0] or "", add_special_tokens=False)["input_ids"]))
    throughput = {}
    for m in modes:
        t = time.perf_counter()
        score_rows(backend, builder, rows, [[]] * len(rows), m, args.max_tokens)
        throughput[m] = len(rows) / (time.perf_counter() - t)

    res = {"args": {k: str(v) for k, v in vars(args).items()}, "dtype": str(next(backend.model.parameters()).dtype),
           "load_average": [load0, os.getloadavg()[0]], "generated_tokens_mean": float(np.mean(tokens)),
           "latency_ms": {m: {"mean": 1000 * float(np.mean(v)), "p50": 1000 * float(np.median(v))} for m, v in latency.items()},
           "pairs_per_s": throughput}
    args.out.write_text(json.dumps(res, indent=1))
    ft, gen = res["latency_ms"]["first-token"], res["latency_ms"]["generate"]
    print("| mode | latency per pair (mean / p50, batch 1) | pairs/s (batch %d) |\n|---|---:|---:|" % args.batch_size)
    print(f"| label-first, first token (`toolkit score`) | {ft['mean']:.0f} / {ft['p50']:.0f} ms | {throughput['first-token']:.2f} |")
    print(f"| generate the answer, ≤{args.max_tokens} tokens (`toolkit score --mode generate`) | {gen['mean']:.0f} / {gen['p50']:.0f} ms | "
          f"{throughput['generate']:.2f} |")
    print(f"\nratio: generation costs {gen['mean'] / ft['mean']:.1f}× the latency and {throughput['first-token'] / throughput['generate']:.1f}× "
          f"the throughput of first-token scoring ({np.mean(tokens):.0f} tokens generated per pair on average; {res['dtype']}; "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
