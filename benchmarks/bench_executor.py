"""Local executor vs Ray (1 and 2 actors) for `toolkit score` and `toolkit sample`, side by side in one run.

    .venv/bin/python benchmarks/bench_executor.py [--pairs 96] [--model default] [--repeats 2]

Starts a private Ray cluster on this machine once (`ray start --head`, 2 CPUs), then times each command as a user
runs it (a fresh output folder each time, the model loaded by each worker, Ray already up), alternating
local / ray-1 / ray-2 per repeat, and prints pairs/s and the ratio to local. Prints the reproduce command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}


def toolkit(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "toolkit", *args], check=True, env=ENV, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--model", default="default")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--stages", default="score,sample")
    ap.add_argument("--ray-cpus", default="0.5", help="CPUs per actor; Ray gives an actor as many torch threads")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    subprocess.run([sys.executable, "-m", "toolkit", "ingest", str(ROOT / "demo/pairs.jsonl"), "-o", str(work / "pairs")],
                   check=True, env=ENV, capture_output=True)
    ray = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    port = "6391"
    subprocess.run([ray, "start", "--head", "--port", port, "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
                    "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
                   check=True, env=ENV, capture_output=True)
    address = f"127.0.0.1:{port}"
    ray_args = ["--executor", "ray", "--ray-address", address, "--ray-cpus", args.ray_cpus]
    setups = {"local": [], "ray-1": [*ray_args, "--ray-workers", "1"], "ray-2": [*ray_args, "--ray-workers", "2"]}
    stages = {
        "score": ["score", str(work / "pairs"), "--model", args.model, "--split", "", "--limit", str(args.pairs),
                  "--shard-size", "16"],
        "sample": ["sample", str(work / "pairs"), "--model", args.model, "--split", "", "--limit", str(args.pairs),
                   "--shard-size", "16", "-n", "4", "--max-tokens", "32"],
    }
    stages = {k: v for k, v in stages.items() if k in args.stages.split(",")}
    times: dict = {(s, k): [] for s in stages for k in setups}
    try:
        for r in range(args.repeats):
            for stage, cmd in stages.items():
                for name, extra in setups.items():
                    out = work / f"{stage}-{name}-{r}"
                    times[(stage, name)].append(toolkit(*cmd, *extra, "-o", str(out)))
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        subprocess.run([ray, "stop", "--force"], env=ENV, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.pairs} pairs, model {args.model}, {os.cpu_count()} CPUs, {args.repeats} repeats (median wall time), "
          f"--ray-cpus {args.ray_cpus}")
    print("| stage | executor | seconds | pairs/s | vs local |")
    print("|---|---|---:|---:|---:|")
    for stage in stages:
        base = statistics.median(times[(stage, "local")])
        for name in setups:
            t = statistics.median(times[(stage, name)])
            print(f"| {stage} | {name} | {t:.1f} | {args.pairs / t:.2f} | {base / t:.2f}x |")
    print(f"reproduce: .venv/bin/python benchmarks/bench_executor.py --pairs {args.pairs} --model {args.model} "
          f"--repeats {args.repeats} --stages {args.stages} --ray-cpus {args.ray_cpus}")


if __name__ == "__main__":
    main()
