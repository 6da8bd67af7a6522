"""Serving benchmark (issue 10): `toolkit serve` under load, beside offline `toolkit score` on the same pairs.

Run (the recorded numbers; about 15-20 minutes on our busy 2-core machine):
    .venv/bin/python benchmarks/bench_serving.py
Quick check (a few minutes):
    .venv/bin/python benchmarks/bench_serving.py --pool 2 --items 10 --levels 1,2 --min-requests 2

What runs (loopback only; default SmolLM2-135M-Instruct, dtype auto = bf16 here, --threads for both sides):
1. Pairs: --pool search requests of --items items each (demo queries x demo items, all pairs distinct),
   ingested with `toolkit ingest`.
2. Offline, in this process, on all the pool's pairs: `toolkit score` (toolkit.scoring.score with a
   preloaded backend: full prompts, its default batch of 16), then the service's scorer in-process
   (one call per request, batch 32) with full prompts and with shared-prefix reuse (the latter again
   after the load run; the mean of both is reported, as the machine's load drifts).
3. The service: `toolkit serve` in a subprocess, with this process as the load generator (httpx
   AsyncClient). Per concurrency level c, c clients send the pool's requests (cycled) until
   max(c, --min-requests) are answered: pairs/s = pairs answered / wall time; latency per request.
   Before the levels, the service overhead is measured pair-wise: each request in-process and over
   HTTP back to back, in both orders, so both see the same load (the machine is shared; it drifts).
4. Checks: the service's probabilities at c=1 against `toolkit score`'s for the same pairs.
Every phase is bounded: a level stops taking new requests after --level-s seconds.
Writes --work/results.json and prints the markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ITEM_FIELDS = ("title", "description", "attributes", "category", "brand")


def build_pool(work: Path, n_requests: int, n_items: int) -> list[dict]:
    """Requests {query, items} made of demo queries and demo items, ingested; items carry pair ids."""
    import polars as pl

    demo = [json.loads(line) for line in (REPO / "demo" / "pairs.jsonl").read_text().splitlines() if line.strip()]
    queries = list(dict.fromkeys(r["query"] for r in demo))
    items = list({r["title"]: {f: r.get(f) for f in ITEM_FIELDS} for r in demo}.values())
    if n_items * 2 > len(items) or n_requests > 2 * len(queries):
        raise SystemExit(f"at most {2 * len(queries)} requests of {len(items) // 2} items from the demo data")
    gold = {(r["query"], r["title"]): r["grade"] for r in demo}
    rows = []
    for r in range(n_requests):
        q = queries[r % len(queries)]
        start = 7 * (r % len(queries)) + (r // len(queries)) * n_items  # a query's two requests get disjoint items
        for k in range(n_items):
            it = items[(start + k) % len(items)]
            rows.append({"query": q, **it, "grade": gold.get((q, it["title"]), 1), "item_id": f"{r}:{k}"})
    (work / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    subprocess.run([sys.executable, "-m", "toolkit", "-q", "ingest", str(work / "pairs.jsonl"), "-o", str(work / "pairs"), "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    df = pl.read_parquet(work / "pairs" / "pairs.parquet")
    assert df.height == len(rows), "pairs were dropped as duplicates"
    pool = []
    for r in range(n_requests):
        part = df.filter(pl.col("item_id").str.starts_with(f"{r}:"))
        items_r = [{"id": x["pair_id"], **{f: x[f] for f in ITEM_FIELDS if x[f]}} for x in part.iter_rows(named=True)]
        pool.append({"query": part["query"][0], "items": items_r})
    return pool


def offline(args, work: Path, pool: list[dict]) -> tuple:
    import torch

    from toolkit.generation.base import BackendConfig
    from toolkit.generation.hf import TransformersBackend
    from toolkit.scoring import ScoreConfig, score
    from toolkit.serving.config import ServeConfig
    from toolkit.serving.judge import Judge
    from toolkit.serving.prefix import PrefixScorer
    from toolkit.serving.schemas import ScoreRequest

    torch.set_num_threads(args.threads)
    bcfg = BackendConfig(model=args.model, dtype=args.dtype)
    hf = TransformersBackend(bcfg)
    n = sum(len(p["items"]) for p in pool)
    out: dict = {"pairs": n}
    judge = Judge.open(ServeConfig(model=args.model, dtype=args.dtype, batch_size=32))
    judge.load(backend=hf)
    rows = [ScoreRequest(**p).rows() for p in pool]
    judge.scorer = None
    judge.probs(rows[0][:4])  # warm-up: the first forward pass pays one-time costs
    shutil.rmtree(work / "scores", ignore_errors=True)  # `toolkit score` would skip shards scored by an earlier run
    t = time.perf_counter()
    score(ScoreConfig(pairs=str(work / "pairs"), out=str(work / "scores"), backend=bcfg, force=True), backend=hf)
    out["toolkit_score_s"] = time.perf_counter() - t
    hf.cfg.batch_size = 32
    for name, scorer in (("full_prompt_s", None), ("shared_prefix_s", PrefixScorer(hf, judge.scale.labels, 32))):
        judge.scorer = scorer
        t = time.perf_counter()
        probs = [judge.probs(r) for r in rows]
        out[name] = time.perf_counter() - t
        out[name.replace("_s", "_probs")] = probs
    full, fast = (np.concatenate([np.asarray(p) for p in out.pop(k)]) for k in ("full_prompt_probs", "shared_prefix_probs"))
    out["prefix_vs_full_max_gap"] = float(np.abs(full - fast).max())
    out["dtype"] = judge.dtype
    return out, judge, rows


def paired(url: str, judge, pool: list[dict], rows: list) -> dict:
    """HTTP overhead, measured pair-wise: each request scored in-process and over HTTP back to back
    (the server is otherwise idle), in both orders, so both see the same machine load."""
    import httpx

    from toolkit.serving.prefix import PrefixScorer

    judge.scorer = PrefixScorer(judge.backend, judge.scale.labels, 32)
    inproc = http = 0.0
    with httpx.Client(timeout=3600) as client:
        for first_http in (False, True):  # two passes, in both orders
            for body, r in zip(pool, rows):
                for use_http in (first_http, not first_http):
                    t = time.perf_counter()
                    if use_http:
                        client.post(url + "/v1/score", json=body).raise_for_status()
                        http += time.perf_counter() - t
                    else:
                        judge.probs(r)
                        inproc += time.perf_counter() - t
    return {"in_process_s": inproc, "http_s": http, "overhead": http / inproc - 1}


def offline_again(judge, rows: list, out: dict) -> None:
    """The shared-prefix scorer in-process once more (after the load run: the machine's load drifts),
    then the exactness check in float32 on the first request."""
    from toolkit.serving.prefix import PrefixScorer

    judge.scorer = PrefixScorer(judge.backend, judge.scale.labels, 32)
    t = time.perf_counter()
    for r in rows:
        judge.probs(r)
    out["shared_prefix_again_s"] = time.perf_counter() - t
    fp32_gap = None
    if judge.dtype != "float32":
        judge.backend.model.float()
        p32 = np.asarray(judge.probs(rows[0]))
        judge.scorer = None
        f32 = np.asarray(judge.probs(rows[0]))
        fp32_gap = float(np.abs(p32 - f32).max())
    out["prefix_vs_full_max_gap_fp32"] = fp32_gap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, work: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "toolkit", "serve", "--model", args.model, "--dtype", args.dtype, "--threads", str(args.threads),
           "--port", str(port)]
    log = open(work / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(work / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise SystemExit("server not ready in 600 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def load_level(url: str, pool: list[dict], clients: int, n_requests: int, level_s: float) -> dict:
    import httpx

    latencies, pairs, results = [], 0, {}
    next_i = 0
    stop_at = time.perf_counter() + level_s

    async def client(http):
        nonlocal next_i, pairs
        while next_i < n_requests and time.perf_counter() < stop_at:
            i = next_i
            next_i += 1
            body = pool[i % len(pool)]
            t = time.perf_counter()
            r = await http.post(url + "/v1/score", json=body)
            latencies.append(time.perf_counter() - t)
            r.raise_for_status()
            pairs += len(body["items"])
            for res in r.json()["results"]:
                results[res["id"]] = res["grade_probs"]

    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=clients)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies)
    return {"clients": clients, "requests": len(lat), "pairs": pairs, "wall_s": wall, "pairs_per_s": pairs / wall,
            "p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)), "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on both sides (1: fastest on our busy 2-core machine)")
    ap.add_argument("--pool", type=int, default=8, help="distinct requests (offline runs score all their pairs)")
    ap.add_argument("--items", type=int, default=50, help="items per request")
    ap.add_argument("--levels", default="1,8,32", help="concurrent clients per level")
    ap.add_argument("--min-requests", type=int, default=8, help="requests answered per level (at least one per client)")
    ap.add_argument("--level-s", type=float, default=600, help="a level sends no new request after this many seconds")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_serving"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    pool = build_pool(args.work, args.pool, args.items)
    print(f"pool: {len(pool)} requests x {args.items} items; load average {load0:.1f}", flush=True)
    off, judge, rows = offline(args, args.work, pool)
    print(json.dumps(off, indent=1), flush=True)
    proc, url = start_server(args, args.work)
    levels = []
    try:
        off["paired"] = paired(url, judge, pool, rows)
        print(f"paired: in-process {off['paired']['in_process_s']:.1f} s, over HTTP {off['paired']['http_s']:.1f} s", flush=True)
        for c in [int(x) for x in args.levels.split(",")]:
            lv = asyncio.run(load_level(url, pool, c, max(c, args.min_requests), args.level_s))
            levels.append(lv)
            print(f"c={c}: {lv['requests']} requests, {lv['pairs_per_s']:.2f} pairs/s, p50 {lv['p50_s']:.2f} s, p99 {lv['p99_s']:.2f} s", flush=True)
    finally:
        stop_server(proc)
    offline_again(judge, rows, off)
    report(args, off, levels, load0)


def report(args, off: dict, levels: list[dict], load0: float) -> None:
    import polars as pl

    n = off["pairs"]
    ref = {r["pair_id"]: r["grade_probs"] for r in pl.read_parquet(args.work / "scores" / "predictions.parquet").iter_rows(named=True)}
    served = levels[0]["results"]
    ids = [i for i in served if i in ref]
    a, b = np.asarray([served[i] for i in ids]), np.asarray([ref[i] for i in ids])
    check = {"pairs_compared": len(ids), "max_abs_diff": float(np.abs(a - b).max()), "argmax_agree": float((a.argmax(1) == b.argmax(1)).mean())}
    off["shared_prefix_s"] = (off["shared_prefix_s"] + off.pop("shared_prefix_again_s")) / 2  # before and after the load run
    rates = {k: n / off[k] for k in ("toolkit_score_s", "full_prompt_s", "shared_prefix_s")}
    res = {"args": {k: str(v) for k, v in vars(args).items()}, "load_average_start": load0, "load_average_end": os.getloadavg()[0],
           "offline": off, "offline_pairs_per_s": rates, "levels": [{k: v for k, v in lv.items() if k != "results"} for lv in levels],
           "check_vs_toolkit_score": check}
    (args.work / "results.json").write_text(json.dumps(res, indent=1))
    print("\n| run | clients | requests | pairs/s | p50 latency | p99 latency | vs `toolkit score` |\n|---|---:|---:|---:|---:|---:|---:|")
    base = rates["toolkit_score_s"]
    print(f"| `toolkit score` (offline, full prompts, batch 16) | – | – | {base:.2f} | – | – | 1.00× |")
    print(f"| scorer in-process, full prompts (batch 32) | – | {args.pool} | {rates['full_prompt_s']:.2f} | – | – | {rates['full_prompt_s'] / base:.2f}× |")
    print(f"| scorer in-process, shared prefix (batch 32) | – | {args.pool} | {rates['shared_prefix_s']:.2f} | – | – | {rates['shared_prefix_s'] / base:.2f}× |")
    for lv in levels:
        print(f"| `toolkit serve` over HTTP | {lv['clients']} | {lv['requests']} | {lv['pairs_per_s']:.2f} | {lv['p50_s']:.2f} s | "
              f"{lv['p99_s']:.2f} s | {lv['pairs_per_s'] / base:.2f}× |")
    prefix = rates["shared_prefix_s"]
    pair = off["paired"]
    print(f"\nshared-prefix gain: {prefix / rates['full_prompt_s']:.2f}× (same batch); service overhead, paired (each request "
          f"in-process and over HTTP back to back): {100 * pair['overhead']:+.1f}% ({pair['in_process_s']:.1f} s vs {pair['http_s']:.1f} s)")
    print(f"check vs toolkit score: {json.dumps(check)}; prefix vs full max gap {off['prefix_vs_full_max_gap']:.3g} "
          f"({off['dtype']}), in float32 {off['prefix_vs_full_max_gap_fp32']}; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
