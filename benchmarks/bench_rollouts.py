"""Rollouts benchmark: `make-prefs` + `label-difficulty` at scale, the toolkit (polars) beside a
straightforward pandas groupby/apply implementation of the same rules, on the same synthetic input.

Run (the recorded numbers; a few minutes on 2 cores):
    .venv/bin/python benchmarks/bench_rollouts.py
Quick check:
    .venv/bin/python benchmarks/bench_rollouts.py --pairs 20000 --pandas-pairs 20000

Input: --pairs query-item pairs x --samples rollouts (default 1M x 10 = 10M rows), written once to
--data (reused while the sizes match). Each implementation runs in its own subprocess, which reports
its wall time and peak RSS (getrusage of that process). The pandas version runs on the first
--pandas-pairs pairs (default 100k = 1M rows, because at 10M rows it takes very long); the toolkit
runs on that same slice as well as on the full input, so the ratio is measured like for like and
also given per row. Both implementations must produce the same preference pairs (checked).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

GRADES = [4, 3, 2, 1]
GRADE_P = [0.4, 0.3, 0.15, 0.15]


# -- synthetic rollouts folder ------------------------------------------------------------


def generate(folder: Path, pairs: int, samples: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    """rollouts.parquet + prompts.parquet + manifest.json with realistic pass rates and ~2% unparseable,
    written `chunk` pairs at a time (each chunk seeded by (seed, chunk number)), so any size fits in memory."""
    import pyarrow.parquet as pq

    from toolkit.core.grades import get_scale

    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        for c, lo in enumerate(range(0, pairs, chunk)):
            for name, df in zip(("rollouts", "prompts"), _chunk(lo, min(pairs, lo + chunk), samples, (seed, c))):
                table = df.to_arrow()
                if name not in writers:
                    writers[name] = pq.ParquetWriter(folder / f"{name}.parquet", table.schema, compression="zstd")
                writers[name].write_table(table, row_group_size=250_000)
    finally:
        for w in writers.values():
            w.close()
    manifest = {"stage": "sample", "grade_scale": get_scale("taosr4").to_dict(), "counts": {"pairs": pairs, "samples": samples}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _chunk(lo: int, hi: int, samples: int, seed: tuple):
    """Rollouts and prompts of pairs lo..hi-1."""
    import numpy as np
    import polars as pl

    from toolkit.core import columns as C

    rng = np.random.default_rng(list(seed))
    pairs = hi - lo
    gold = rng.choice(GRADES, size=pairs, p=GRADE_P)
    skill = rng.beta(2.0, 1.2, size=pairs)  # per-pair chance of a correct sample: mostly easy, a long hard tail
    pid = np.repeat(np.arange(pairs), samples)
    correct = rng.random(pairs * samples) < skill[pid]
    unparseable = ~correct & (rng.random(pairs * samples) < 0.05)
    off = rng.integers(1, len(GRADES), size=pairs * samples)  # a wrong grade: gold shifted around the scale
    g = gold[pid]
    wrong = np.array(GRADES)[(np.searchsorted(-np.array(GRADES), -g) + off) % len(GRADES)]
    pred = np.where(correct, g, wrong)
    ids = pl.Series(C.PAIR_ID, np.arange(lo, hi)).cast(pl.String).str.zfill(16)
    ro = pl.DataFrame({
        C.PAIR_ID: ids.gather(pid), C.SAMPLE_IDX: np.tile(np.arange(samples, dtype=np.int32), pairs),
        C.PRED_GRADE: pred, C.GRADE: g, "_bad": unparseable,
    }).with_columns(
        pl.when("_bad").then(pl.format("I cannot decide for pair {} (sample {}).", C.PAIR_ID, C.SAMPLE_IDX))
        .otherwise(pl.format("{}\nReason: the item matches the query's product type; attribute check {} of pair {}.",
                             C.PRED_GRADE, C.SAMPLE_IDX, C.PAIR_ID)).alias(C.TEXT),
        pl.lit("stop").alias(C.FINISH_REASON),
        pl.when("_bad").then(pl.lit("missing_label")).otherwise(pl.lit("ok")).alias(C.PARSE_STATUS),
        pl.when("_bad").then(None).otherwise(pl.col(C.PRED_GRADE)).alias(C.PRED_GRADE),
        pl.lit(None, dtype=pl.List(pl.Float64)).alias(C.GRADE_PROBS),
    ).with_columns((pl.col(C.PRED_GRADE) == pl.col(C.GRADE)).fill_null(False).alias(C.CORRECT)).drop("_bad")
    system = "You are a relevance judge for e-commerce search. Grade how well the item matches the query: 4 Excellent, 3 Related, 2 Mismatch, 1 Irrelevant."
    prompts = pl.DataFrame({C.PAIR_ID: ids, C.GRADE: gold}).with_columns(
        pl.concat_list(
            pl.struct(pl.lit("system").alias("role"), pl.lit(system).alias("content")),
            pl.struct(pl.lit("user").alias("role"), pl.format("Query: query {}\n\nItem:\nTitle: product {} with a long descriptive title\n\nAnswer with the grade first.", C.PAIR_ID, C.PAIR_ID).alias("content")),
        ).alias(C.PROMPT),
        pl.format("query {}", C.PAIR_ID).alias(C.QUERY), pl.format("product {}", C.PAIR_ID).alias(C.TITLE),
    )
    return ro, prompts


def slice_folder(src: Path, dst: Path, pairs: int) -> None:
    import polars as pl

    from toolkit.core import columns as C

    dst.mkdir(parents=True, exist_ok=True)
    keep = pl.scan_parquet(src / "prompts.parquet").head(pairs)
    keep.sink_parquet(dst / "prompts.parquet")
    pl.scan_parquet(src / "rollouts.parquet").join(keep.select(C.PAIR_ID), on=C.PAIR_ID, how="semi").sort(C.PAIR_ID, C.SAMPLE_IDX).sink_parquet(dst / "rollouts.parquet")
    shutil.copy(src / "manifest.json", dst / "manifest.json")


def fake_teacher(rows: list[dict]) -> list[str]:
    """An instant teacher: a label-first answer for the gold grade."""
    return [f"{r['grade']}\nReason: the teacher explains grade {r['grade']}." for r in rows]


# -- the two implementations (each runs in its own process) ---------------------------------


def run_toolkit(folder: Path, out: Path, k: int) -> dict:
    from toolkit.difficulty import LabelDifficultyConfig, label_difficulty
    from toolkit.preferences import MakePrefsConfig, make_preferences

    t0 = time.perf_counter()
    prefs = make_preferences(MakePrefsConfig(rollouts=str(folder), out=str(out / "prefs"), pairs_per_prompt=k, force=True), teacher=fake_teacher)
    t1 = time.perf_counter()
    diff = label_difficulty(LabelDifficultyConfig(rollouts=str(folder), out=str(out / "difficulty"), force=True))
    t2 = time.perf_counter()
    return {"make_prefs_s": t1 - t0, "label_difficulty_s": t2 - t1, "pairs": prefs.counts["pairs"], "grpo": diff.counts["grpo"],
            "window": diff.counts["window"]}


def _pandas_group_pairs(g, k: int):
    """TaoSR1 rules for one group (farthest, dedupe, unparseable fallback): [(chosen_idx|None, rejected_idx)]."""
    n, c = len(g), int(g["correct"].sum())
    if c == n:
        return []
    g = g.sort_values("sample_idx").drop_duplicates("text")
    good = g[g["correct"]]["sample_idx"].tolist()[:k]
    bad = g[~g["correct"]].copy()
    bad["prio"] = bad["parse_status"].ne("ok").astype(int)
    bad["dist"] = (bad["pred_grade"] - bad["grade"]).abs().fillna(0)
    bad = bad.sort_values(["prio", "dist", "sample_idx"], ascending=[True, False, True])["sample_idx"].tolist()[:k]
    if not bad:
        return []
    if c == 0:
        return [(None, r) for r in bad]
    return [(good[i % len(good)], bad[i % len(bad)]) for i in range(max(len(good), len(bad)))]


def run_pandas(folder: Path, out: Path, k: int) -> dict:
    """The same rules the way a pandas user writes them: groupby/apply for the per-group pairing rules,
    merges for texts and prompts, groupby aggregations for pass rates."""
    import numpy as np
    import pandas as pd

    from toolkit.core.parsing import parse_answer

    t0 = time.perf_counter()
    ro = pd.read_parquet(folder / "rollouts.parquet", columns=["pair_id", "sample_idx", "text", "parse_status", "pred_grade", "grade", "correct"])
    prompts = pd.read_parquet(folder / "prompts.parquet")
    picks = ro.groupby("pair_id", sort=True).apply(lambda g: _pandas_group_pairs(g, k))
    rows = [(pid, i, ch, rj) for pid, lst in picks.items() for i, (ch, rj) in enumerate(lst)]
    pairs = pd.DataFrame(rows, columns=["pair_id", "i", "chosen_idx", "rejected_idx"]).astype({"chosen_idx": "Int64", "rejected_idx": "Int64"})
    taught = prompts[prompts["pair_id"].isin(pairs.loc[pairs["chosen_idx"].isna(), "pair_id"])]
    answers = pd.DataFrame({"pair_id": taught["pair_id"], "teacher_text": fake_teacher(taught.to_dict("records")), "g": taught["grade"]})
    answers = answers[[parse_answer(t, ["4", "3", "2", "1"]).label == str(g) for t, g in zip(answers["teacher_text"], answers["g"])]]
    pairs = pairs.merge(answers[["pair_id", "teacher_text"]], on="pair_id", how="left")
    pairs = pairs[pairs["chosen_idx"].notna() | pairs["teacher_text"].notna()]
    texts = ro[["pair_id", "sample_idx", "text"]].astype({"sample_idx": "Int64"})
    pairs = pairs.merge(texts.rename(columns={"sample_idx": "chosen_idx", "text": "chosen_text"}), on=["pair_id", "chosen_idx"], how="left")
    pairs = pairs.merge(texts.rename(columns={"sample_idx": "rejected_idx", "text": "rejected_text"}), on=["pair_id", "rejected_idx"], how="left")
    pairs["chosen_text"] = pairs["chosen_text"].fillna(pairs["teacher_text"])
    pairs = pairs.merge(prompts[["pair_id", "prompt"]], on="pair_id", how="left").sort_values(["pair_id", "i"])
    pairs["chosen"] = [[{"role": "assistant", "content": t}] for t in pairs["chosen_text"]]
    pairs["rejected"] = [[{"role": "assistant", "content": t}] for t in pairs["rejected_text"]]
    (out / "pandas").mkdir(parents=True, exist_ok=True)
    pairs[["prompt", "chosen", "rejected", "pair_id", "chosen_idx", "rejected_idx"]].to_parquet(out / "pandas" / "preferences.parquet")
    t1 = time.perf_counter()

    stats = ro.groupby("pair_id").agg(grade=("grade", "first"), n_samples=("correct", "size"), n_correct=("correct", "sum"))
    stats["pass_rate"] = stats["n_correct"] / stats["n_samples"]
    stats["difficulty"] = pd.cut(stats["pass_rate"], [-np.inf, 0, 0.4, 0.8, np.inf], labels=["unsolved", "hard", "medium", "easy"])
    window = stats[(stats["n_correct"] > 0) & (stats["n_correct"] < 0.9 * stats["n_samples"] - 1e-9)]
    m = window.groupby("grade").size().min()
    grpo = window.groupby("grade").sample(n=m, random_state=0).join(prompts.set_index("pair_id")[["prompt"]])
    stats.to_parquet(out / "pandas" / "difficulty.parquet")
    grpo.to_parquet(out / "pandas" / "grpo.parquet")
    t2 = time.perf_counter()
    return {"make_prefs_s": t1 - t0, "label_difficulty_s": t2 - t1, "pairs": len(pairs), "grpo": len(grpo), "window": len(window)}


def child(args) -> None:
    fn = {"toolkit": run_toolkit, "pandas": run_pandas}[args.child]
    res = fn(Path(args.folder), Path(args.out), args.k)
    res["total_s"] = res["make_prefs_s"] + res["label_difficulty_s"]
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


# -- the driver -----------------------------------------------------------------------------


def spawn(mode: str, folder: Path, out: Path, k: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--folder", str(folder), "--out", str(out), "-k", str(k)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    res["process_s"] = time.perf_counter() - t0
    return res


def same_pairs(out: Path) -> bool:
    import polars as pl

    from toolkit.core import columns as C

    a = pl.read_parquet(out / "prefs" / "preferences.parquet").select(C.PAIR_ID, C.CHOSEN_SAMPLE_IDX, C.REJECTED_SAMPLE_IDX)
    b = pl.read_parquet(out / "pandas" / "preferences.parquet").select(
        C.PAIR_ID, pl.col("chosen_idx").cast(pl.Int64).alias(C.CHOSEN_SAMPLE_IDX), pl.col("rejected_idx").cast(pl.Int64).alias(C.REJECTED_SAMPLE_IDX))
    key = [C.PAIR_ID, C.CHOSEN_SAMPLE_IDX, C.REJECTED_SAMPLE_IDX]
    return a.sort(key, nulls_last=True).equals(b.sort(key, nulls_last=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--pandas-pairs", type=int, default=100_000, help="pairs of the slice the pandas version runs on (0: all)")
    ap.add_argument("-k", type=int, default=1, help="pairs per prompt")
    ap.add_argument("--data", default="/tmp/taosr_bench_rollouts", help="where the synthetic input and outputs go")
    ap.add_argument("--child", choices=["toolkit", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    data = Path(args.data)
    full = data / f"rollouts_{args.pairs}x{args.samples}"
    if not (full / "manifest.json").exists():
        print(f"writing {args.pairs:,} pairs x {args.samples} rollouts to {full} ...", flush=True)
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"from bench_rollouts import generate; from pathlib import Path; generate(Path({str(full)!r}), {args.pairs}, {args.samples})"], check=True)
    np_ = args.pandas_pairs or args.pairs
    part = data / f"rollouts_{np_}x{args.samples}_slice" if np_ < args.pairs else full
    if part != full and not (part / "manifest.json").exists():
        slice_folder(full, part, np_)
    print(f"cpus: {os.cpu_count()}  input: {args.pairs * args.samples:,} rows; pandas slice: {np_ * args.samples:,} rows", flush=True)
    results = {"toolkit full": spawn("toolkit", full, data / "out_full", args.k)}
    if part != full:
        results["toolkit slice"] = spawn("toolkit", part, data / "out_slice", args.k)
    results["pandas slice" if part != full else "pandas full"] = spawn("pandas", part, data / ("out_slice" if part != full else "out_full"), args.k)
    agree = same_pairs(data / ("out_slice" if part != full else "out_full"))
    print(f"\n{'run':14s} {'rows':>11s} {'make-prefs s':>12s} {'label-diff s':>12s} {'total s':>8s} {'peak RSS MB':>11s} {'pairs':>9s} {'grpo':>8s}")
    for name, r in results.items():
        rows = (args.pairs if name.endswith("full") else np_) * args.samples
        print(f"{name:14s} {rows:>11,} {r['make_prefs_s']:12.2f} {r['label_difficulty_s']:12.2f} {r['total_s']:8.2f} {r['peak_rss_mb']:11.0f} {r['pairs']:>9,} {r['grpo']:>8,}")
    pd_key = "pandas slice" if part != full else "pandas full"
    tk_key = "toolkit slice" if part != full else "toolkit full"
    same = results[pd_key]["total_s"] / results[tk_key]["total_s"]
    per_row = (results[pd_key]["total_s"] / (np_ * args.samples)) / (results["toolkit full"]["total_s"] / (args.pairs * args.samples))
    print(f"\nspeed-up on the same {np_ * args.samples:,} rows: {same:.1f}x; per row, pandas slice vs toolkit full: {per_row:.1f}x")
    print(f"identical preference pairs (toolkit vs pandas, farthest rule): {agree}")


if __name__ == "__main__":
    main()
