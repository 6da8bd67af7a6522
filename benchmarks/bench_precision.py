"""How much a checkpoint's scores move with the precision and the batch: `toolkit score`'s first-token scoring of the
same pairs in float32 and in bfloat16, at several batch sizes, side by side in one run.

    .venv/bin/python benchmarks/bench_precision.py --model CHECKPOINT --pairs SPLITS_FOLDER --split dev

For each (dtype, batch size): macro-F1 and accuracy against the gold grades, how many argmax grades differ from
float32 at the first batch size, the largest change of a grade probability, and the seconds it took. The prompts are
the checkpoint's own (its recorded template and answer order, as `toolkit score` resolves them); rules are not
attached (pass a folder scored without an index). Numbers for benchmarks/README.md ("Scoring precision").
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a checkpoint folder")
    ap.add_argument("--pairs", required=True, help="a pairs folder with the split (toolkit split output)")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=400, help="at most this many pairs (a fixed seeded sample)")
    ap.add_argument("--batch-sizes", default="1,8,16,32")
    args = ap.parse_args()

    from toolkit.core import lineage
    from toolkit.core.stagefolder import scale_of
    from toolkit.generation.base import BackendConfig
    from toolkit.generation.hf import TransformersBackend
    from toolkit.scoring import score_rows
    from toolkit.training import load_dev
    from trainers.dev_eval import metrics_of

    scale = scale_of(args.model)
    order = lineage.resolve_order(None, model=args.model, hub=False)
    template = lineage.resolve_template(None, model=args.model, hub=False)
    dev = load_dev(args.pairs, args.split, None, 3, args.limit, scale, order, 0, template)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    print(f"{args.model}: {len(dev.rows)} {args.split} pairs")
    print("| dtype | batch | macro-F1 | accuracy | argmax changed vs float32 | max abs change of a probability | s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ref = None
    for dtype in ("float32", "bfloat16"):
        for bs in sizes:
            t = time.perf_counter()
            backend = TransformersBackend(BackendConfig(model=args.model, dtype=dtype, batch_size=bs))
            preds = score_rows(backend, dev.builder, dev.rows, dev.rules, "first-token")
            seconds = time.perf_counter() - t
            probs = np.asarray(preds["grade_probs"].to_list())
            ref = probs if ref is None else ref
            m = metrics_of(preds["grade"].to_list(), probs.tolist(), scale)
            print(f"| {dtype} | {bs} | {100 * m['macro_f1']:.2f} | {100 * m['accuracy']:.2f} | "
                  f"{int((probs.argmax(1) != ref.argmax(1)).sum())} | {float(np.abs(probs - ref).max()):.4f} | "
                  f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
