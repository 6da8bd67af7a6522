"""Retrieval quality of the rules index on our labelled set (issue 3).

Run:  .venv/bin/python benchmarks/bench_retrieval_quality.py
      (options: --qrels demo/retrieval_qrels.jsonl --rules demo/guideline.md --model default)

demo/retrieval_qrels.jsonl holds 50 demo query-item pairs with the guideline rules a careful
annotator would consult. Every setup below ranks all 44 rules of demo/guideline.md for each
pair (through the toolkit's own retrieval code), and we report recall@k (share of a pair's
relevant rules in its top k, averaged over pairs) and MRR (1 / rank of the first relevant rule).
The setup marked `default` is what `toolkit retrieve` does without flags.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrieval_index.build import BuildIndexConfig, build_index  # noqa: E402
from retrieval_index.index import RuleIndex  # noqa: E402
from retrieval_index.retrieve import DEFAULT_LEXICAL_WEIGHT, pair_vectors, retrieve_for_pairs  # noqa: E402

KS = (1, 3, 5, 10)
# (name, text mode, lexical weight, category scope)
SETUPS = [
    ("dense: query only", "query", 0.0, True),
    ("dense: item title only", "item", 0.0, True),
    ("dense: query+title", "both", 0.0, True),
    ("dense: query+title, no scope filter", "both", 0.0, False),
    ("BM25 only: query + title", "both", 1000.0, True),
    ("hybrid: query only, w=1.0", "query", 1.0, True),
    ("hybrid: query+title, w=0.3", "both", 0.3, True),
    ("hybrid: query+title, w=0.5", "both", 0.5, True),
    ("hybrid: query+title, w=1.0", "both", 1.0, True),
    ("hybrid: query+title, w=2.0", "both", 2.0, True),
    ("hybrid: query+title, w=1.0, no scope filter", "both", 1.0, False),
]


def reciprocal_ranks(ranked: list[list[str]], relevant: list[set[str]]) -> np.ndarray:
    return np.array([next((1 / i for i, x in enumerate(r, 1) if x in rel), 0.0) for r, rel in zip(ranked, relevant)])


def metrics(ranked: list[list[str]], relevant: list[set[str]]) -> dict[str, float]:
    out = {f"R@{k}": float(np.mean([len(rel & set(r[:k])) / len(rel) for r, rel in zip(ranked, relevant)])) for k in KS}
    out["MRR"] = float(reciprocal_ranks(ranked, relevant).mean())
    return out


def bootstrap_ci(diff: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean of per-pair differences (paired bootstrap over pairs)."""
    idx = np.random.default_rng(seed).integers(0, len(diff), (n, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qrels", default=str(REPO / "demo/retrieval_qrels.jsonl"))
    ap.add_argument("--rules", default=str(REPO / "demo/guideline.md"))
    ap.add_argument("--pairs", default=str(REPO / "demo/pairs.jsonl"), help="where the pairs' item categories come from")
    ap.add_argument("--model", default="default")
    args = ap.parse_args()

    qrels = [json.loads(x) for x in Path(args.qrels).read_text().splitlines() if x.strip()]
    cats = {(p["query"], p["title"]): p.get("category") for p in map(json.loads, Path(args.pairs).read_text().splitlines()) if p}
    queries, titles = [q["query"] for q in qrels], [q["title"] for q in qrels]
    categories = [cats.get((q["query"], q["title"])) for q in qrels]
    relevant = [set(q["relevant_rules"]) for q in qrels]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        build_index(BuildIndexConfig([args.rules], tmp, model=args.model))
        index = RuleIndex.load(tmp)
        n = len(index)
        print(f"{len(qrels)} labelled pairs, {n} rules, model {index.model_id}, index built in {time.perf_counter() - t:.1f} s\n")
        vectors = {mode: pair_vectors(index, queries, titles, mode) for mode in ("query", "item", "both")}
        rows, ranked = [], {}
        for name, mode, weight, scope in SETUPS:
            ids, _ = retrieve_for_pairs(index, queries, titles, categories, k=n, text=mode, lexical_weight=weight, scope=scope, vectors=vectors[mode])
            default = mode == "both" and weight == DEFAULT_LEXICAL_WEIGHT and scope
            rows.append((name + ("  (default)" if default else ""), metrics(ids, relevant)))
            ranked[name] = ids
    head = ["setup"] + [f"R@{k}" for k in KS] + ["MRR"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, m in rows:
        print(f"| {name} | " + " | ".join(f"{m[h]:.3f}" for h in head[1:]) + " |")
    base_name, best_name = "dense: query+title", next(name for name, _ in rows if name.endswith("(default)"))
    base, best = dict(rows)[base_name], dict(rows)[best_name]
    diff = reciprocal_ranks(ranked[best_name.removesuffix("  (default)")], relevant) - reciprocal_ranks(ranked[base_name], relevant)
    lo, hi = bootstrap_ci(diff)
    print(f"\ndefault ({best_name.removesuffix('  (default)')}) vs plain dense ({base_name}): R@5 {best['R@5']:.3f} vs {base['R@5']:.3f} "
          f"({best['R@5'] / base['R@5']:.2f}x), MRR {best['MRR']:.3f} vs {base['MRR']:.3f} ({best['MRR'] / base['MRR']:.2f}x); "
          f"MRR gain 95% paired-bootstrap interval [{lo:+.3f}, {hi:+.3f}] over {len(relevant)} pairs")


if __name__ == "__main__":
    main()
