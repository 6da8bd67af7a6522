"""Speed and memory of the retrieval index (issue 3), measured side by side in one run.

Run:  .venv/bin/python benchmarks/bench_index.py
      (options: --snippets 10000 --pairs 100000 --scale 1000000 --parts build,retrieval,scale --hnsw)

Parts (each runs in its own process, so its peak memory is its own):
- build: `build_index` (the code behind `toolkit build-index`: read a JSONL rules file, hash,
  embed, index, write the folder and manifest) vs plain `SentenceTransformer.encode` +
  `faiss.IndexFlatIP.add` on the same synthetic snippet texts, same loaded model and batch
  size; best of two alternating rounds each. Then an incremental rebuild after editing 1%.
- retrieval: the default `toolkit retrieve` path (hybrid dense + BM25, query+title, category
  scope) for 100k synthetic pairs over the 10k-snippet index from `build`. Search is timed on
  all pairs; embedding the pair texts is timed on 10k distinct texts (100k distinct texts
  would take ~4 minutes on 2 cores) and the end-to-end rate is derived from both.
- scale: a 1M-snippet synthetic knowledge base with the approximate (IVF) index `auto` picks:
  build time, memory, recall@10 vs exact search. Embedding 1M texts on 2 cores would take
  ~40 minutes, so the vectors are synthetic, shaped like real ones: 20k centres drawn from a
  Gaussian with the mean and covariance of MiniLM vectors of our snippet texts, 50 vectors per
  centre with noise of --tau (0.6) times that spread, L2-normalised; the queries are 1,000 fresh
  draws. Each query's exact 1st / 10th neighbour then has cosine ~0.85 / ~0.80, close to real
  MiniLM neighbourhoods (0.88 / 0.75 among the 5.6k Google taxonomy paths). --tau 0.9 is a
  looser, harder set; --isotropic --tau 1.0 a worst case without any low-dimensional structure.
  --hnsw adds an HNSW build (slow on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRODUCTS = ["running shoes", "wireless earbuds", "water bottle", "yoga mat", "frying pan", "espresso machine", "phone case",
            "laptop charger", "desk lamp", "dog food", "olive oil", "shampoo", "baby lotion", "bike helmet", "aa batteries",
            "monitor", "smartphone", "hair dryer", "kettle", "socks", "backpack", "rain jacket", "tent", "blender", "toaster",
            "keyboard", "mouse", "headphones", "speaker", "notebook", "printer paper", "candle", "towel", "pillow", "cutting board"]
ATTRS = ["waterproof", "wireless", "stainless steel", "500 ml", "11 inch", "128 GB", "USB-C", "organic", "gluten free", "for kids",
         "men's", "women's", "unisex", "refurbished", "2 pack", "24 pack", "black", "red", "leather", "cotton", "fragrance free",
         "65 W", "27 inch", "size 8", "large", "travel size", "non-stick", "BPA-free", "noise cancelling", "compact"]
SYLLABLES = ["nor", "vik", "key", "strel", "au", "re", "lo", "tide", "well", "lu", "ma", "bro", "gra", "no", "ra", "bri", "sa", "vol", "ter", "pel"]
TEMPLATES = [
    "If the query asks for {a} {p} and the item is {p} without {a}, the item is at most Related.",
    "A {p} listing that states {a} matches a query for {a} {p}.",
    "An accessory for {p} is Mismatch for a query that names {p}; this covers {a} variants.",
    "{B} makes {p}; a {B} {p} that is {a} is Excellent for a {B} {p} query.",
    "For {p}, {a} is a key attribute; an item that contradicts it is Mismatch.",
    "A {p} from another brand than {B} is Related when the query names {B}.",
    "Replacement parts for {p} are Mismatch when the query names {p} ({a}).",
    "Product category knowledge: {p} sold as {a} belong under the {c} department.",
]
CATEGORIES = ["Electronics", "Grocery", "Beauty", "Sports & Outdoors", "Home & Kitchen", "Clothing, Shoes & Accessories", "Pet Supplies", "Office Supplies"]


def brands(rng, n):
    return sorted({"".join(rng.choice(SYLLABLES, 2)).capitalize() for _ in range(n * 3)})[:n]


def snippet_records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    bs = brands(rng, 200)
    seen, out = set(), []
    while len(out) < n:
        t = TEMPLATES[rng.integers(len(TEMPLATES))]
        text = t.format(p=rng.choice(PRODUCTS), a=rng.choice(ATTRS), B=rng.choice(bs), c=rng.choice(CATEGORIES))
        if text in seen:
            continue
        seen.add(text)
        rec = {"id": f"S{len(out):06d}", "text": text}
        if rng.random() < 0.1:
            rec["category"] = str(rng.choice(CATEGORIES))
        out.append(rec)
    return out


def pairs(n: int, per_query: int = 10, seed: int = 1):
    rng = np.random.default_rng(seed)
    bs = brands(rng, 200)
    queries, titles, cats = [], [], []
    for _ in range(n // per_query):
        b, p, a = rng.choice(bs), rng.choice(PRODUCTS), rng.choice(ATTRS)
        q = " ".join(x for x in (b.lower() if rng.random() < 0.5 else "", p, a if rng.random() < 0.6 else "") if x)
        for _ in range(per_query):
            queries.append(q)
            titles.append(f"{rng.choice(bs)} {rng.choice(PRODUCTS).title()}, {rng.choice(ATTRS)}, {rng.choice(ATTRS)} #{rng.integers(1000)}")
            cats.append(f"{rng.choice(CATEGORIES)} > Sub {rng.integers(20)}")
    return queries, titles, cats


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- parts (each in its own process) ---------------------------------------------------


def part_build(args) -> dict:
    import faiss

    from retrieval_index.build import BuildIndexConfig, build_index
    from retrieval_index.embedder import load_embedder

    work = Path(args.work)
    recs = snippet_records(args.snippets)
    texts = [r["text"] for r in recs]
    src = work / "snippets.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    emb = load_embedder("default", args.batch_size)
    emb.encode(texts[:64])  # warm-up, both sides share the loaded model

    def plain():
        t, c = time.perf_counter(), time.process_time()
        vecs = emb.model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs.astype(np.float32))
        return time.perf_counter() - t, time.process_time() - c

    def toolkit(out):
        t, c = time.perf_counter(), time.process_time()
        build_index(BuildIndexConfig([str(src)], str(out), batch_size=args.batch_size, force=True))
        return time.perf_counter() - t, time.process_time() - c

    runs_plain, runs_tk = [], []
    for r in range(2):  # alternate, best of two: the machine is shared
        runs_plain.append(plain())
        runs_tk.append(toolkit(work / f"index-round{r}"))
    t_plain, t_tk = [w for w, _ in runs_plain], [w for w, _ in runs_tk]
    cpu_plain, cpu_tk = min(c for _, c in runs_plain), min(c for _, c in runs_tk)
    index_dir = work / "index-round1"
    os.replace(index_dir, work / "index")
    edited = recs[:]
    for i in range(0, len(edited), 100):
        edited[i] = {**edited[i], "text": edited[i]["text"] + " (edited)"}
    src.write_text("".join(json.dumps(r) + "\n" for r in edited))
    t = time.perf_counter()
    res = build_index(BuildIndexConfig([str(src)], str(work / "index"), batch_size=args.batch_size))
    t_inc = time.perf_counter() - t
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    build_index(BuildIndexConfig([str(src)], str(work / "index"), batch_size=args.batch_size))  # back to the original texts
    n = len(texts)
    return {"snippets": n, "plain_s": min(t_plain), "toolkit_s": min(t_tk), "plain_per_s": n / min(t_plain), "toolkit_per_s": n / min(t_tk),
            "ratio": min(t_plain) / min(t_tk), "rounds_plain_s": t_plain, "rounds_toolkit_s": t_tk,
            "cpu_plain_s": cpu_plain, "cpu_toolkit_s": cpu_tk, "cpu_ratio": cpu_plain / cpu_tk, "load_avg": os.getloadavg()[0],
            "incremental_s": t_inc, "incremental_embedded": res.counts["embedded"], "peak_mb": peak_mb()}


def part_retrieval(args) -> dict:
    from retrieval_index.index import RuleIndex
    from retrieval_index.retrieve import DEFAULT_LEXICAL_WEIGHT, pair_texts, retrieve_for_pairs

    queries, titles, cats = pairs(args.pairs)
    index = RuleIndex.load(Path(args.work) / "index")
    emb = index.embedder
    dense_texts, _ = pair_texts(queries, titles, "both")
    distinct = list(dict.fromkeys(dense_texts))[: args.embed_sample]
    emb.encode(distinct[:64], query=True)
    rss0 = rss_mb()
    t = time.perf_counter()
    sample = emb.encode(distinct, query=True)
    t_embed = time.perf_counter() - t
    vectors = sample[np.arange(len(queries)) % len(sample)]  # search cost does not depend on which vectors
    t = time.perf_counter()
    index.lexical  # noqa: B018  (BM25 matrices, built once per opened index)
    out = {"lexical_build_s": time.perf_counter() - t}
    for name, weight in (("hybrid", DEFAULT_LEXICAL_WEIGHT), ("dense", 0.0)):
        t = time.perf_counter()
        ids, _ = retrieve_for_pairs(index, queries, titles, cats, k=5, text="both", lexical_weight=weight, vectors=vectors)
        out[f"search_{name}_s"] = time.perf_counter() - t
        assert all(len(r) == 5 for r in ids)
    embed_rate = len(distinct) / t_embed
    search_rate = len(queries) / out["search_hybrid_s"]
    # text=query: every step measured, 100k pairs with 10 pairs per distinct query
    t = time.perf_counter()
    retrieve_for_pairs(index, queries, titles, cats, k=5, text="query")
    t_query_mode = time.perf_counter() - t
    return {"pairs": len(queries), "snippets": len(index), "embed_texts": len(distinct), "embed_per_s": embed_rate,
            "search_hybrid_per_s": search_rate, "search_dense_per_s": len(queries) / out["search_dense_s"],
            "end_to_end_both_per_s": 1 / (1 / embed_rate + 1 / search_rate), "query_mode_s": t_query_mode,
            "query_mode_per_s": len(queries) / t_query_mode, "lexical_build_s": out["lexical_build_s"], "rss_before_mb": rss0, "peak_mb": peak_mb()}


def real_embeddings(args) -> np.ndarray:
    """MiniLM vectors of our synthetic snippet texts: the index from `build`, or 5,000 fresh ones."""
    path = Path(args.work) / "index" / "embeddings.npy"
    if path.exists():
        return np.load(path)
    from retrieval_index.embedder import load_embedder

    return load_embedder("default").encode([r["text"] for r in snippet_records(5000)])


def mixture(n: int, centres: np.ndarray, noise, rng) -> np.ndarray:
    """Each vector: a random centre plus noise(m); L2-normalised."""
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        out[s : s + m] = centres[rng.integers(0, len(centres), m)] + noise(m)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def part_scale(args) -> dict:
    import faiss

    from retrieval_index.store import IndexSpec, build_faiss, search_faiss, write_faiss

    n, dim = args.scale, 384
    rng = np.random.default_rng(0)
    if args.isotropic:  # worst case: random directions, no low-dimensional structure
        def gauss(m, s=1.0):
            return s * rng.standard_normal((m, dim), dtype=np.float32)
        mean = np.zeros(dim, dtype=np.float32)
    else:  # shaped like real MiniLM vectors: their mean and covariance
        real = real_embeddings(args)
        mean = real.mean(axis=0)
        chol = np.linalg.cholesky(np.cov(real.T) + 1e-6 * np.eye(dim)).astype(np.float32)

        def gauss(m, s=1.0):
            return s * (rng.standard_normal((m, dim), dtype=np.float32) @ chol.T)
    centres = mean + gauss(max(1, n // 50))
    x = mixture(n, centres, lambda m: gauss(m, args.tau), rng)
    q = mixture(1000, centres, lambda m: gauss(m, args.tau), rng)
    t = time.perf_counter()
    top, truth = faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
    t_exact = time.perf_counter() - t
    out = {"snippets": n, "dim": dim, "exact_1000_queries_s": t_exact, "types": {}, "tau": args.tau, "isotropic": args.isotropic,
           "top1_cos": float(top[:, 0].mean()), "top10_cos": float(top[:, 9].mean())}
    for kind in ["ivf"] + (["hnsw"] if args.hnsw else []):
        spec = IndexSpec(kind).resolve(n)  # what `auto` picks at 1M: ivf
        rss0 = rss_mb()
        t = time.perf_counter()
        index = build_faiss(x, spec)
        t_build = time.perf_counter() - t
        rss_index = rss_mb() - rss0
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            write_faiss(index, Path(tmp) / "index.faiss")
            size = (Path(tmp) / "index.faiss").stat().st_size / 2**20
        sweep = {}
        for p in ([spec.nprobe // 4, spec.nprobe // 2, spec.nprobe, spec.nprobe * 2] if kind == "ivf" else [32, 64, 128, 256]):
            s = IndexSpec(kind, nlist=spec.nlist, nprobe=p, ef_search=p).resolve(n) if kind == "ivf" else IndexSpec(kind, ef_search=p).resolve(n)
            t = time.perf_counter()
            _, got = search_faiss(index, q, 10, None, s)
            dt = time.perf_counter() - t
            sweep[p] = {"recall@10": float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])), "qps": len(q) / dt}
        default = spec.nprobe if kind == "ivf" else spec.ef_search
        out["types"][kind] = {"spec": spec.as_dict(), "build_s": t_build, "index_rss_mb": rss_index, "file_mb": size,
                              "default_param": default, "recall@10": sweep[default]["recall@10"], "qps": sweep[default]["qps"], "sweep": sweep}
        del index
    out["exact_qps"] = 1000 / t_exact
    out["peak_mb"] = peak_mb()
    return out


PARTS = {"build": part_build, "retrieval": part_retrieval, "scale": part_scale}


def report(res: dict) -> None:
    if b := res.get("build"):
        print(f"\n## build ({b['snippets']:,} snippets, all-MiniLM-L6-v2, batch 64)")
        print(f"plain encode + faiss.add : {b['plain_s']:6.1f} s  {b['plain_per_s']:6.0f} snippets/s   (rounds {', '.join(f'{x:.1f}' for x in b['rounds_plain_s'])})")
        print(f"toolkit build-index      : {b['toolkit_s']:6.1f} s  {b['toolkit_per_s']:6.0f} snippets/s   (rounds {', '.join(f'{x:.1f}' for x in b['rounds_toolkit_s'])})")
        print(f"throughput ratio toolkit/plain = {b['ratio']:.3f} wall-clock, {b['cpu_ratio']:.3f} CPU time "
              f"({b['cpu_plain_s']:.0f} vs {b['cpu_toolkit_s']:.0f} CPU s)  (target >= 0.9; load average {b['load_avg']:.1f} on {os.cpu_count()} cores)")
        print(f"incremental rebuild after editing 1%: {b['incremental_embedded']} re-embedded, {b['incremental_s']:.1f} s; peak RSS {b['peak_mb']:.0f} MB")
    if r := res.get("retrieval"):
        print(f"\n## retrieval ({r['pairs']:,} pairs over {r['snippets']:,} snippets, top-5, category scope)")
        print(f"search, hybrid (default)  : {r['search_hybrid_per_s']:8.0f} pairs/s")
        print(f"search, dense only        : {r['search_dense_per_s']:8.0f} pairs/s")
        print(f"embedding query+title     : {r['embed_per_s']:8.0f} texts/s (on {r['embed_texts']:,} distinct texts)")
        print(f"end to end, query+title   : {r['end_to_end_both_per_s']:8.0f} pairs/s (derived; every pair text distinct)")
        print(f"end to end, --text query  : {r['query_mode_per_s']:8.0f} pairs/s (measured: {r['pairs']:,} pairs, 10 per distinct query, {r['query_mode_s']:.1f} s)")
        print(f"peak RSS {r['peak_mb']:.0f} MB (model and index loaded: {r['rss_before_mb']:.0f} MB); BM25 matrices built in {r['lexical_build_s']:.2f} s")
    if s := res.get("scale"):
        shape = "isotropic Gaussian mixture" if s["isotropic"] else "mixture shaped like MiniLM vectors"
        print(f"\n## scale ({s['snippets']:,} synthetic vectors, dim {s['dim']}, {shape}, noise {s['tau']}); exact search {s['exact_qps']:.0f} queries/s")
        print(f"queries' exact neighbours: mean cosine {s['top1_cos']:.3f} (1st), {s['top10_cos']:.3f} (10th)")
        for kind, t in s["types"].items():
            print(f"{kind}: {t['spec']}  build {t['build_s']:.1f} s, index memory {t['index_rss_mb']:.0f} MB (file {t['file_mb']:.0f} MB), "
                  f"recall@10 {t['recall@10']:.3f} at {t['qps']:.0f} queries/s (default)")
            for p, v in t["sweep"].items():
                print(f"    {'nprobe' if kind == 'ivf' else 'efSearch'} {p:>4}: recall@10 {v['recall@10']:.3f}, {v['qps']:7.0f} queries/s")
        print(f"peak RSS {s['peak_mb']:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snippets", type=int, default=10_000)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--scale", type=int, default=1_000_000)
    ap.add_argument("--embed-sample", type=int, default=10_000, help="distinct pair texts embedded to time the encoder")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--parts", default="build,retrieval,scale")
    ap.add_argument("--hnsw", action="store_true", help="also build an HNSW index at --scale (minutes on 2 cores)")
    ap.add_argument("--tau", type=float, default=0.6, help="scale: within-cluster noise relative to the spread of real vectors")
    ap.add_argument("--isotropic", action="store_true", help="scale: isotropic Gaussian mixture instead (a worst case)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print("RESULT " + json.dumps(PARTS[args.part](args)))
        return
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if "retrieval" in parts and "build" not in parts:
        parts.insert(0, "build")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for part in parts:
            cmd = [sys.executable, __file__, "--part", part, "--work", work, "--snippets", str(args.snippets), "--pairs", str(args.pairs),
                   "--scale", str(args.scale), "--embed-sample", str(args.embed_sample), "--batch-size", str(args.batch_size), "--tau", str(args.tau)]
            cmd += [flag for flag, on in (("--hnsw", args.hnsw), ("--isotropic", args.isotropic)) if on]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"part {part} failed:\n{proc.stderr[-3000:]}")
            results[part] = json.loads(line[7:])
            print(f"[{part}: {time.perf_counter() - t:.0f} s]", file=sys.stderr)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
