"""The paper's quality table at small scale, on CPU, with the embedded default model.

    .venv/bin/python benchmarks/bench_quality.py \
        --data ../shared/data/crowdflower/train_shared.csv --format crowdflower --budget small

Rows (each evaluated on the test split, argmax and CumPT with β fitted on dev):
zero-shot; cross-encoder baseline; SFT label-only; SFT with label-first CoT; + DPO on pass@N
pairs; + GRPO on the difficulty-filtered set. Any ingested dataset works: pass `--pairs
FOLDER` (the output of `toolkit ingest`) instead of `--data/--format`.

The whole run is one pipeline (benchmarks/out/quality/pipeline.yaml, written by this script)
run by `toolkit run`, so an interrupted benchmark resumes where it stopped. Budget flags bound
the time: the number of train pairs (a seeded random sample over all train queries, `toolkit split
--max-rows`), dev and test pairs, training steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BUDGETS = {
    # train pairs for gen-cot / sampling, eval pairs per split, SFT / DPO / GRPO / baseline steps
    "tiny": dict(train=24, eval=40, sft_steps=4, dpo_steps=2, grpo_steps=2, baseline_steps=10, n=4),
    "small": dict(train=160, eval=300, sft_steps=40, dpo_steps=20, grpo_steps=8, baseline_steps=150, n=4),
    "medium": dict(train=600, eval=800, sft_steps=150, dpo_steps=60, grpo_steps=20, baseline_steps=600, n=6),
    # issue 19's CPU budget (2 h 35 min on 2 cores for CrowdFlower, ~3 h 10 min for Home Depot, when it scored in bf16;
    # scoring in float32 adds an estimated 25 min; Home Depot's 49,750 train
    # pairs make the cross-encoder's 2 epochs 39 min; benchmarks/README.md): the cross-encoder and label-only SFT on the
    # FULL train split (label-only capped by steps: 120 x 8 rows drawn from all 5,599), gen-cot / sample on a seeded
    # sample of train pairs, test capped at 2,000 pairs (CrowdFlower's whole test split is 1,203; Home Depot's ~10,700
    # would take 25 min a model to score), dev capped for β and the trainers' dev evaluation
    "cpu": dict(full=True, gen=320, dev=400, test=2000, label_steps=120, label_lr=1e-4, cot_steps=60, dpo_steps=24, grpo_steps=10,
                baseline_epochs=2, n=4, eval_every=40, eval_limit=200,
                # room for the CoT SFT model's 5-step reason (~150 tokens): at 64 (the run of 2026-12-05) 1,274 of 1,280
                # rollouts were cut, leaving DPO 2 pairs. The teacher is guided (cot_step_tokens a step, as gen-cot):
                # free, the 135M teacher echoed the prompt and 112 of 115 answers had no grade even at 256 tokens
                rollout_tokens=192,
                # gen-cot's and the make-prefs teacher's step cap, chosen on dev (2026-12-05): at 40, 90 of 320 rationales
                # had a step cut and 145 were kept (CoT SFT dev 17.3); at 64, 238 kept (dev 21.8)
                cot_step_tokens=64),
    # issue 19's GPU budget: one borrowed H100/H200 for 15 device minutes, of which ~9 compute once the wheels and the
    # GGUF have travelled (benchmarks/README.md, "The GPU budget"). Label-only SFT takes 2 whole epochs of the train
    # split at batch 64; generation runs at batch 160 prompts, the teacher's too (the transformers backend: no vLLM there;
    # `generate` of a 135M model is bound by its decode steps, not the batch: 3 batches of 480 prompts, not 8). Plain label-only
    # SFT trains last (`plain_last`), so a run cut at its time limit still has the pipeline's rows. The cross-encoder
    # (2 epochs, no GPU needed) and the data stages (split, index, retrieve) run on the CPU machine beforehand.
    "gpu": dict(full=True, gen=480, dev=400, test=2000, label_epochs=2, label_batch=64, label_lr=1e-4, cot_steps=60,
                cot_batch=16, dpo_steps=24, grpo_steps=10, baseline_epochs=2, n=4, eval_every=25, eval_limit=400,
                rollout_tokens=192, cot_step_tokens=64, gen_batch=160, plain_last=True),
}


def _source(args) -> tuple[list[dict], str]:
    """The pairs every budget starts from: an ingest stage of --data, or the given --pairs folder."""
    if args.pairs:
        return [], str(Path(args.pairs).resolve())
    return [{"name": "pairs", "run": "ingest", "args": [str(Path(args.data).resolve())], "options": {"format": args.format}}], "{pairs}"


def _gen(args) -> dict:
    """gen-cot's and sample's backend options (vLLM on CPU needs eager mode)."""
    return {"backend": "vllm", "enforce-eager": True} if args.backend == "vllm" else {"backend": args.backend}


def pipeline(args, b: dict) -> dict:
    if b.get("full"):
        return full_pipeline(args, b)
    stages, src = _source(args)
    # a 135M model at small step counts: higher learning rates than the trainers' defaults (which are for 7B+ models)
    sft = {"max-steps": b["sft_steps"], "batch-size": 4, "learning-rate": 5e-5}
    gen = _gen(args)
    stages += [
        {"name": "splits", "run": "split", "args": [src], "options": {"fractions": "train=0.7,dev=0.15,test=0.15", "seed": args.seed,
                                                                       "max-rows": f"train={b['train']},dev={b['eval']},test={b['eval']}"}},
        {"name": "index", "run": "build-index", "args": [str(REPO / "demo/guideline.md")]},
        {"name": "retrieved", "run": "retrieve", "args": ["{splits}"], "options": {"index": "{index}", "k": 3}},
        {"name": "cot", "run": "gen-cot", "args": ["{retrieved}"], "options": {"index": "{index}", "split": "train", "step-tokens": 40, **gen}},
        {"name": "sft_label", "run": "train sft", "args": ["{cot}"], "options": {"label-only": True, **sft}},
        {"name": "sft_cot", "run": "train sft", "args": ["{cot}"], "options": sft},
        {"name": "rollouts", "run": "sample", "args": ["{retrieved}"], "options": {"model": "{sft_cot}", "index": "{index}", "n": b["n"], "split": "train",
                                                                   "max-tokens": 64, **gen}},
        {"name": "prefs", "run": "make-prefs", "args": ["{rollouts}"], "options": {"no-teacher": True}},
        {"name": "dpo", "run": "train dpo", "args": ["{prefs}"], "options": {"model": "{sft_cot}", "max-steps": b["dpo_steps"], "batch-size": 4,
                                                                 "learning-rate": 5e-6}},
        {"name": "difficulty", "run": "label-difficulty", "args": ["{rollouts}"]},
        {"name": "grpo", "run": "train grpo", "args": ["{difficulty}"], "options": {"model": "{dpo}", "max-steps": b["grpo_steps"], "num-generations": b["n"],
                                                                        "batch-size": 2 * b["n"], "learning-rate": 5e-6,
                                                                        "max-completion-length": 48}},
        {"name": "baseline", "run": "train baseline", "args": ["{splits}"], "options": {"max-steps": b["baseline_steps"]}},
    ]
    models = {"zero-shot": "default", "SFT label-only": "{sft_label}", "SFT CoT (label-first)": "{sft_cot}", "+ DPO": "{dpo}", "+ GRPO": "{grpo}"}
    for i, (row, model) in enumerate(models.items()):
        for split in ("dev", "test"):
            stages.append({"name": f"m{i}_{split}", "run": "score", "args": ["{retrieved}"],
                           "options": {"model": model, "index": "{index}", "split": split}})
    return {"out": str(Path(args.out).resolve()), "stages": stages, "_rows": list(models)}


def full_pipeline(args, b: dict) -> dict:
    """The full-split budget: every row trains on the same train split, label-only SFT and the baseline on all of it.

    Stages build on each other as a team would run them: CoT SFT starts from the class-weighted label-only model
    (which has seen far more pairs than the teacher's filtered rationales), DPO from CoT SFT on its own pass@N pairs,
    GRPO from DPO with online difficulty sampling. Every LLM trainer evaluates on dev and keeps its best step.
    """
    stages, src = _source(args)
    split = {"fractions": "train=0.7,dev=0.15,test=0.15", "seed": args.seed}
    gen = _gen(args)
    dev = {"eval-pairs": "{retrieved}", "eval-index": "{index}", "eval-every": b["eval_every"], "eval-limit": b["eval_limit"],
           "select-best": "macro_f1"}
    length = {"max-steps": b["label_steps"]} if "label_steps" in b else {"epochs": b["label_epochs"]}
    label = {"label-only": True, "pairs-index": "{index}", **length, "batch-size": b.get("label_batch", 8),
             "learning-rate": b["label_lr"], **dev}
    gen_batch = {"batch-size": b["gen_batch"]} if "gen_batch" in b else {}
    teacher_batch = {"teacher-batch-size": b["gen_batch"]} if "gen_batch" in b else {}
    stages += [
        # the same query assignment (seed) twice: all train pairs, and a seeded sample of them for generation
        {"name": "splits", "run": "split", "args": [src], "options": {**split, "max-rows": f"dev={b['dev']},test={b['test']}"}},
        {"name": "splits_gen", "run": "split", "args": [src], "options": {**split, "max-rows": f"train={b['gen']}"}},
        {"name": "index", "run": "build-index", "args": [str(REPO / "demo/guideline.md")]},
        {"name": "retrieved", "run": "retrieve", "args": ["{splits}"], "options": {"index": "{index}", "k": 3}},
        {"name": "retrieved_gen", "run": "retrieve", "args": ["{splits_gen}"], "options": {"index": "{index}", "k": 3}},
        {"name": "baseline", "run": "train baseline", "args": ["{splits}"], "options": {"epochs": b["baseline_epochs"]}},
        {"name": "sft_label", "run": "train sft", "args": ["{retrieved}"], "options": label},
        {"name": "sft_label_w", "run": "train sft", "args": ["{retrieved}"], "options": {**label, "class-weights": "inverse"}},
        {"name": "cot", "run": "gen-cot", "args": ["{retrieved_gen}"], "options": {"index": "{index}", "split": "train",
                                                                             "step-tokens": b["cot_step_tokens"], **gen, **gen_batch}},
        {"name": "sft_cot", "run": "train sft", "args": ["{cot}"], "options": {"model": "{sft_label_w}", "class-weights": "inverse",
                                                                     "max-steps": b["cot_steps"], "batch-size": b.get("cot_batch", 4),
                                                                     "learning-rate": 5e-5, **dev}},
        {"name": "rollouts", "run": "sample", "args": ["{retrieved_gen}"], "options": {"model": "{sft_cot}", "index": "{index}", "n": b["n"],
                                                                       "split": "train", "max-tokens": b["rollout_tokens"], **gen, **gen_batch}},
        # groups the model got wrong every time take the teacher's (the base model's) answer for the gold grade as chosen
        {"name": "prefs", "run": "make-prefs", "args": ["{rollouts}"], "options": {"teacher-backend": gen["backend"], "teacher-model": "default",
                                                                    "teacher-mode": "guided",
                                                                    "teacher-step-tokens": b["cot_step_tokens"], **teacher_batch}},
        {"name": "dpo", "run": "train dpo", "args": ["{prefs}"], "options": {"model": "{sft_cot}", "max-steps": b["dpo_steps"], "batch-size": 4,
                                                                 "learning-rate": 5e-6, **dev, "eval-every": 8}},
        {"name": "difficulty", "run": "label-difficulty", "args": ["{rollouts}"]},
        {"name": "grpo", "run": "train grpo", "args": ["{difficulty}"], "options": {"model": "{dpo}", "max-steps": b["grpo_steps"],
                                                                        "num-generations": b["n"], "batch-size": 2 * b["n"],
                                                                        "learning-rate": 5e-6, "max-completion-length": 48,
                                                                        **dev, "eval-every": 5}},
    ]
    if b.get("plain_last"):
        stages.append(stages.pop(next(k for k, st in enumerate(stages) if st["name"] == "sft_label")))
    models = {"SFT label-only": "{sft_label}", "SFT label-only, class-weighted": "{sft_label_w}",
              "SFT CoT (label-first)": "{sft_cot}", "+ DPO": "{dpo}", "+ GRPO": "{grpo}"}
    # each model is scored right after the stage that trains it, so a run stopped part way has whole rows; in float32,
    # as the trainers' dev evaluation: in bf16 (`--dtype auto` on a CPU with AMX, or a GPU) these models' scores move
    # with the batch (benchmarks/README.md: 50-59 of 400 dev argmaxes flipped, macro-F1 25.3-27.9 by batch size)
    for i, model in enumerate(models.values()):
        after = next(k for k, st in enumerate(stages) if st["name"] == model.strip("{}")) + 1
        stages[after:after] = [{"name": f"m{i}_{s}", "run": "score", "args": ["{retrieved}"],
                                "options": {"model": model, "index": "{index}", "split": s, "dtype": "float32"}}
                               for s in ("dev", "test")]
    return {"out": str(Path(args.out).resolve()), "stages": stages, "_rows": list(models), "_baseline_at": 0}


def evaluate_rows(out: Path, rows: list[str], echo, baseline_at: int = 1) -> list[dict]:
    """Fit β on dev and evaluate test for each model (and the baseline's own predictions)."""
    table = []
    sources = [(row, out / f"m{i}_dev", out / f"m{i}_test") for i, row in enumerate(rows)]
    sources.insert(baseline_at, ("cross-encoder baseline", out / "baseline", out / "baseline"))
    for row, dev, test in sources:
        table.append(evaluate_row(out, row, dev, test))
    return table


def evaluate_row(out: Path, row: str, dev: Path, test: Path) -> dict:
    """One row: β fitted on the dev predictions, the test predictions evaluated with it."""
    from toolkit.cli import cli

    tiers, ev = out / "eval" / f"{_slug(row)}-tiers", out / "eval" / _slug(row)
    cli.main(["tier", "fit", "--predictions", str(dev), "--split", "dev", "-o", str(tiers)], standalone_mode=False)
    cli.main(["eval", "--predictions", str(test), "--split", "test", "--tier-rule", str(tiers), "-o", str(ev), "--no-plots"],
             standalone_mode=False)
    return _row(row, ev)


def report(out: Path, table: list[dict]) -> None:
    """quality.md, quality.json and the plots in the pipeline folder; the table printed."""
    md = markdown(table)
    (out / "quality.md").write_text(md + "\n")
    (out / "quality.json").write_text(json.dumps(table, indent=2))
    print(md)
    for p in plots(out, table):
        print(f"plot: {p}")


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-")


def _row(name: str, ev: Path) -> dict:
    import polars as pl

    from toolkit.core.grades import GradeScale
    from toolkit.core.metrics import classification_metrics, grade_indices

    m = json.loads((ev / "metrics.json").read_text())
    scale = GradeScale.from_dict(m["scale"])
    preds = pl.read_parquet(ev / "predictions.parquet")
    gold = grade_indices(preds["grade"].to_list(), scale)
    cum = classification_metrics(gold, grade_indices(preds["cumpt_grade"].to_list(), scale, "cumpt_grade", allow_missing=True), scale)
    boot = m.get("bootstrap") or {}
    ece = (m.get("calibration") or {}).get("ece")
    rank = m.get("ranking") or {}  # the order within queries: the same for both decisions
    return {
        "row": name, "n": m["n"], "ndcg": rank.get("ndcg@10"), "ndcg_random": rank.get("ndcg@10_random"),
        "argmax": {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "f1": {str(g["grade"]): g["f1"] for g in m["per_grade"]},
                   "ci": boot.get("macro_f1"), "ece": ece},
        "cumpt": {"macro_f1": cum["macro_f1"], "accuracy": cum["accuracy"], "f1": {str(g["grade"]): g["f1"] for g in cum["per_grade"]},
                  "beta": m["tiering"]["beta"], "ci": boot.get("cumpt_macro_f1"), "ece": ece},
    }


def plots(out: Path, table: list[dict]) -> list[Path]:
    """quality.png: test macro-F1 per stage, argmax and CumPT, with the bootstrap intervals; beta_curves.png: each row's
    dev macro-F1 against β (from its `tier fit` folder)."""
    from toolkit.core import plots as P

    if not P.available():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(9, 4.2))
    x = np.arange(len(table))
    for k, (d, color) in enumerate((("argmax", "#7f7f7f"), ("cumpt", "#1f77b4"))):
        f1 = np.array([100 * t[d]["macro_f1"] for t in table])
        ci = [t[d].get("ci") or (t[d]["macro_f1"], t[d]["macro_f1"]) for t in table]
        err = np.array([[f - 100 * lo for f, (lo, _) in zip(f1, ci)], [100 * hi - f for f, (_, hi) in zip(f1, ci)]])
        ax.bar(x + (k - 0.5) * 0.38, f1, 0.38, yerr=err, capsize=3, color=color, label="argmax" if d == "argmax" else "CumPT (β on dev)")
    ax.set_xticks(x, [t["row"] for t in table], rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("test macro-F1 (95% interval over queries)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out / "quality.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in table:
        curve = out / "eval" / f"{_slug(t['row'])}-tiers" / "beta_curve.json"
        if curve.exists():
            g = json.loads(curve.read_text())["grid"]
            ax.plot(g["beta"], [100 * v for v in g["macro_f1"]], label=f"{t['row']} (β={t['cumpt']['beta']:.2f})")
    ax.set_xlabel("β (CumPT)")
    ax.set_ylabel("dev macro-F1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "beta_curves.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def markdown(table: list[dict]) -> str:
    grades = list(table[0]["argmax"]["f1"])
    head = ("| model | decision | " + " | ".join(f"F1 {g}" for g in grades)
            + " | macro-F1 | 95% interval (queries) | accuracy | ECE | NDCG@10 |")
    lines = [head, "|" + "---|" * (len(grades) + 7)]
    for t in table:
        for d in ("argmax", "cumpt"):
            x = t[d]
            label = d if d == "argmax" else f"CumPT β={x['beta']:.2f}"
            ci = f"{100 * x['ci'][0]:.1f}–{100 * x['ci'][1]:.1f}" if x.get("ci") else "n/a"
            ece = f"{x['ece']:.3f}" if x.get("ece") is not None else "n/a"
            lines.append(f"| {t['row']} | {label} | " + " | ".join(f"{100 * x['f1'][g]:.1f}" for g in grades)
                         + f" | **{100 * x['macro_f1']:.1f}** | {ci} | {100 * x['accuracy']:.1f} | {ece} | "
                         + (f"{t['ndcg']:.3f} |" if t.get("ndcg") is not None else "n/a |"))
    floor = next((t["ndcg_random"] for t in table if t.get("ndcg_random") is not None), None)
    if floor is not None:  # the same test pairs for every row
        lines.append(f"\nNDCG@10: the order of each test query's items by expected grade; a random order gets {floor:.3f}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="Raw dataset file (with --format).")
    ap.add_argument("--format", default="crowdflower")
    ap.add_argument("--pairs", help="An ingested pairs folder (instead of --data).")
    ap.add_argument("--budget", choices=list(BUDGETS), default="small")
    ap.add_argument("--out", help="Pipeline folder (default benchmarks/out/quality, or quality-BUDGET for the full-split budgets).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto",
                    help="generation backend of gen-cot and sample (scoring is one forward pass: transformers); "
                         "auto = vllm when installed")
    args = ap.parse_args()
    if args.out is None:
        args.out = str(REPO / "benchmarks/out" / ("quality-" + args.budget if BUDGETS[args.budget].get("full") else "quality"))
    if not args.pairs and not args.data:
        ap.error("pass --data FILE --format NAME, or --pairs FOLDER")
    import importlib.util

    import yaml

    if args.backend == "auto":
        args.backend = "vllm" if importlib.util.find_spec("vllm") else "transformers"

    from toolkit.cli.runner import Pipeline, run_pipeline, summary_table

    spec = pipeline(args, BUDGETS[args.budget])
    rows = spec.pop("_rows")
    baseline_at = spec.pop("_baseline_at", 1)
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.time()
    outcomes = run_pipeline(Pipeline.load(out / "pipeline.yaml"), echo=lambda s: print(s, flush=True))
    print(summary_table(outcomes))
    report(out, evaluate_rows(out, rows, print, baseline_at))
    print(f"\nbudget {args.budget} {BUDGETS[args.budget]}; {time.time() - t0:.0f} s; command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
