"""The cross-encoder row's spread over seeds, and whether one seed gives one model.

    .venv/bin/python benchmarks/bench_baseline_seeds.py --splits /tmp/qgpu/splits --seeds 0,1,2 --repeat 0

For each seed: `toolkit train baseline SPLITS --epochs E --seed K`, β fitted on dev (`toolkit tier fit`), test
evaluated with it (`toolkit eval --tier-rule`), exactly as bench_quality.py evaluates its rows. Prints the table
(bench_quality's format), then the mean, standard deviation and range of test macro-F1 over the seeds, argmax and
CumPT. `--repeat K` trains seed K a second time into its own folder and compares the two runs' predictions: the
share of predicted grades that differ and the largest difference of a grade probability (0 and 0.0 when training
is deterministic). Each run is a stage folder, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as Q  # noqa: E402


def train(splits: str, out: Path, seed: int, epochs: float) -> float:
    from toolkit.cli import cli

    t0 = time.time()
    cli.main(["train", "baseline", splits, "-o", str(out), "--epochs", str(epochs), "--seed", str(seed), "-q"],
             standalone_mode=False)
    return time.time() - t0


def compare(a: Path, b: Path) -> dict:
    """Share of predicted grades that differ between two prediction folders, and the largest probability gap."""
    import numpy as np
    import polars as pl

    pa, pb = (pl.read_parquet(p / "predictions.parquet").sort("pair_id") for p in (a, b))
    if pa["pair_id"].to_list() != pb["pair_id"].to_list():
        raise SystemExit(f"{a} and {b} predict different pairs")
    probs_a, probs_b = np.array(pa["grade_probs"].to_list()), np.array(pb["grade_probs"].to_list())
    return {"pairs": pa.height, "grades_differ": int((pa["pred_grade"] != pb["pred_grade"]).sum()),
            "max_prob_diff": float(np.abs(probs_a - probs_b).max())}


def spread(table: list[dict], decision: str) -> str:
    f1 = [100 * t[decision]["macro_f1"] for t in table]
    sd = statistics.stdev(f1) if len(f1) > 1 else 0.0
    return f"{decision}: mean {statistics.mean(f1):.1f}, sd {sd:.1f}, range {min(f1):.1f}-{max(f1):.1f} ({len(f1)} seeds)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", required=True, help="A `toolkit split` folder with train, dev and test pairs.")
    ap.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds of `train baseline --seed`.")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, help="Train this seed twice and compare the two runs' predictions.")
    ap.add_argument("--out", default="/tmp/ce_seeds", help="Folder of the runs and their evaluations.")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    table, times = [], {}
    for seed in seeds:
        run = out / f"seed{seed}"
        times[seed] = train(args.splits, run, seed, args.epochs)
        table.append(Q.evaluate_row(out, f"cross-encoder seed {seed}", run, run))
    print(Q.markdown(table))
    print("\ntest macro-F1 over seeds:")
    for d in ("argmax", "cumpt"):
        print("  " + spread(table, d))
    print("train + predict seconds: " + ", ".join(f"seed {s} {t:.0f}" for s, t in times.items()))
    if args.repeat is not None:
        first, again = out / f"seed{args.repeat}", out / f"seed{args.repeat}-again"
        if not first.exists():
            train(args.splits, first, args.repeat, args.epochs)
        train(args.splits, again, args.repeat, args.epochs)
        print(f"seed {args.repeat} trained twice: {compare(first, again)}")
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
