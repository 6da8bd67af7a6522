"""Label-noise recovery through a review round, on real data (issue 16's benchmark).

    .venv/bin/python benchmarks/bench_label_noise.py --data ../shared/data/crowdflower/train_shared.csv

1. `toolkit ingest` + `toolkit split` (train/dev/test by query, 80/10/10, seed 0).
2. Flip a known 15% of the train grades (seeded; each to a uniformly drawn other grade).
3. A model trained on the noisy grades scores every train row out of fold (5 folds grouped by query, so no
   row is scored by a model that saw its own noisy label): multinomial logistic regression on all-MiniLM-L6-v2
   embeddings of query and title (their product, difference and cosine), class-balanced. It writes a scored
   folder (`predictions.parquet` with `grade_probs`), the input `toolkit review select` takes.
4. For budgets of 5/10/20% of the train rows and every policy (entropy, margin, disagreement, random), the real
   `review select` picks the rows; we count how many flipped rows each sends to review.
5. Simulated reviewers answer every selected row with its original grade (`finish_pull`, the code `review pull`
   runs after fetching answers), `review apply` writes the corrected pairs, and the same model is retrained on
   them; macro-F1 on the test split (queries never trained on) for clean, noisy and applied train labels.

The model is deliberately cheap (minutes on 2 CPU cores) so every policy and budget runs in one go; the
selection, pull and apply are the toolkit's own code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolkit.core import columns as C  # noqa: E402

POLICIES = ("disagreement", "disagreement/none", "margin", "entropy", "random")  # /none: --stratify none
BUDGETS = (5, 10, 20)


def embed(texts: list[str]) -> np.ndarray:
    from retrieval_index.embedder import encode_in_chunks, load_embedder

    return encode_in_chunks(load_embedder(None), texts)


def lexical(queries: list[str], titles: list[str]) -> np.ndarray:
    """Share of the query's words in the title (exact and as a prefix), and the title's length."""
    rows = []
    for q, t in zip(queries, titles):
        qw, tw = q.lower().split(), t.lower().split()
        tset = set(tw)
        exact = sum(w in tset for w in qw) / max(1, len(qw))
        prefix = sum(any(x.startswith(w[:4]) for x in tw) for w in qw) / max(1, len(qw))
        rows.append([exact, prefix, len(tw), len(qw)])
    return np.array(rows, dtype=float)


def features(q: np.ndarray, t: np.ndarray, lex: np.ndarray | None = None) -> np.ndarray:
    cos = (q * t).sum(1, keepdims=True)
    parts = [q * t, np.abs(q - t), cos] + ([lex] if lex is not None else [])
    return np.hstack(parts)


MODEL = "logreg"


def fit_predict(x_train, y_train, x_test):
    from sklearn.linear_model import LogisticRegression

    if MODEL == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, class_weight="balanced", random_state=0)
    else:
        clf = LogisticRegression(max_iter=2000, class_weight="balanced", C=1.0)
    clf.fit(x_train, y_train)
    proba = clf.predict_proba(x_test)
    full = np.zeros((len(x_test), 4))
    for j, c in enumerate(clf.classes_):
        full[:, 4 - int(c)] = proba[:, j]  # best grade first, as the scale orders them
    return full


def macro_f1(gold, pred) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, labels=[1, 2, 3, 4], average="macro", zero_division=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/crowdflower/train_shared.csv"))
    ap.add_argument("--format", default="crowdflower")
    ap.add_argument("--noise", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks/out/label-noise"))
    ap.add_argument("--model", choices=["logreg", "hgb"], default="logreg",
                    help="the scorer: logistic regression on embeddings, or gradient boosting on 64 principal components of them + word-overlap features")
    args = ap.parse_args()
    global MODEL
    MODEL = args.model
    t0 = time.time()
    from sklearn.model_selection import GroupKFold

    from annotation import settings as S
    from annotation.apply import ApplyConfig, apply
    from annotation.inputs import read_rows
    from annotation.pull import PullConfig, finish_pull
    from annotation.select import SelectConfig, select
    from toolkit.core.grades import get_scale
    from toolkit.ingest import IngestConfig, ingest
    from toolkit.core.stagefolder import write_manifest, write_parquet
    from toolkit.core.progress import configure
    from toolkit.splits import SplitConfig, split

    configure(0, 0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scale = get_scale("taosr4")
    ingest(IngestConfig(inputs=[args.data], format=args.format, out=str(out / "pairs")))
    split(SplitConfig(input=str(out / "pairs"), out=str(out / "splits"), fractions={"train": 0.8, "dev": 0.1, "test": 0.1}, seed=args.seed))
    train = pl.read_parquet(out / "splits" / "train.parquet").with_columns(pl.col(C.PAIR_ID).cast(pl.String))
    test = pl.read_parquet(out / "splits" / "test.parquet")
    # the noise has its own random stream: with default_rng(seed) it would be the very stream `review select --policy random
    # --seed` draws its scores from, and random selection would pick exactly the rows that were not flipped (seen: 0 found)
    rng = np.random.default_rng([args.seed, 15])
    clean = train[C.GRADE].to_numpy()
    flip = rng.random(train.height) < args.noise
    noisy = clean.copy()
    for i in np.flatnonzero(flip):
        noisy[i] = rng.choice([g for g in (1, 2, 3, 4) if g != clean[i]])
    print(f"train {train.height} rows ({train[C.QUERY].n_unique()} queries), flipped {int(flip.sum())} ({100 * flip.mean():.1f}%); "
          f"test {test.height} rows", flush=True)
    # the noisy pairs, as a pairs folder (what a team would have ingested)
    noisy_dir = out / "noisy-pairs"
    noisy_dir.mkdir(exist_ok=True)
    for name in ("dev", "test"):
        pl.read_parquet(out / "splits" / f"{name}.parquet").write_parquet(noisy_dir / f"{name}.parquet")
    train.with_columns(pl.Series(C.GRADE, noisy)).write_parquet(noisy_dir / "train.parquet")
    write_manifest(noisy_dir, "split", {"noise": args.noise, "seed": args.seed}, {}, {}, {"grade_scale": scale.to_dict()})

    t = time.time()
    qv, tv = embed(train[C.QUERY].to_list()), embed(train[C.TITLE].to_list())
    qt, tt = embed(test[C.QUERY].to_list()), embed(test[C.TITLE].to_list())
    x_train, x_test = features(qv, tv), features(qt, tt)
    if args.model == "hgb":  # boosting on 64 principal components of the embedding features, plus word overlap: fast enough here
        from sklearn.decomposition import PCA

        pca = PCA(n_components=64, random_state=0).fit(x_train[:, :-1])
        x_train = np.hstack([pca.transform(x_train[:, :-1]), x_train[:, -1:], lexical(train[C.QUERY].to_list(), train[C.TITLE].to_list())])
        x_test = np.hstack([pca.transform(x_test[:, :-1]), x_test[:, -1:], lexical(test[C.QUERY].to_list(), test[C.TITLE].to_list())])
    print(f"embedded {train.height + test.height} pairs in {time.time() - t:.0f} s", flush=True)
    groups = train[C.QUERY].str.to_lowercase().to_numpy()
    oof = np.zeros((train.height, 4))
    for tr, va in GroupKFold(n_splits=5).split(x_train, noisy, groups):
        oof[va] = fit_predict(x_train[tr], noisy[tr], x_train[va])
    scored = out / "scored-noisy"
    scored.mkdir(exist_ok=True)
    pred = 4 - oof.argmax(1)
    write_parquet(train.select(C.PAIR_ID, C.QUERY, C.TITLE, C.SPLIT).with_columns(
        pl.Series(C.GRADE, noisy), pl.Series(C.GRADE_PROBS, oof.tolist(), dtype=pl.List(pl.Float64)), pl.Series(C.PRED_GRADE, pred)),
        scored / "predictions.parquet")
    write_manifest(scored, "score", {"model": f"minilm-{args.model}-oof"}, {}, {}, {"grade_scale": scale.to_dict()})
    print(f"out-of-fold macro-F1 vs noisy labels {100 * macro_f1(noisy, pred):.1f}, vs clean {100 * macro_f1(clean, pred):.1f}", flush=True)

    flipped = set(np.asarray(train[C.PAIR_ID].to_list())[flip])
    table = []
    for budget in BUDGETS:
        for policy in POLICIES:
            name, _, strat = policy.partition("/")
            sel = out / f"select-{name}{'-' + strat if strat else ''}-{budget}"
            select(SelectConfig(input=str(scored), out=str(sel), policy=name, budget=f"{budget}%", stratify=strat or "grade", seed=args.seed, force=True))
            ids = set(pl.read_parquet(sel / "predictions.parquet")[C.PAIR_ID].to_list())
            found = len(ids & flipped)
            table.append({"budget_pct": budget, "policy": policy, "reviewed": len(ids), "flipped_found": found,
                          "per_100_reviews": 100 * found / len(ids), "share_of_flips_found": found / len(flipped)})
    for row in table:
        rand = next(r for r in table if r["budget_pct"] == row["budget_pct"] and r["policy"] == "random")
        row["x_random"] = row["flipped_found"] / rand["flipped_found"] if rand["flipped_found"] else None

    # a review round on the best selection (disagreement, not stratified) at each budget: reviewers give the original grade
    original = dict(zip(train[C.PAIR_ID].to_list(), clean.tolist()))
    f1 = {"clean": macro_f1(test[C.GRADE].to_numpy(), 4 - fit_predict(x_train, clean, x_test).argmax(1)),
          "noisy": macro_f1(test[C.GRADE].to_numpy(), 4 - fit_predict(x_train, noisy, x_test).argmax(1))}
    for budget in BUDGETS:
        sel = out / f"select-disagreement-none-{budget}"
        df, names = read_rows(S.get_kind("errors"), sel)
        responses = [{C.RECORD_ID: rid, C.PAIR_ID: pid, C.REVIEWER: "reviewer", C.QUESTION: q, C.VALUE: v, C.RESPONSE_STATUS: "submitted"}
                     for rid, pid in zip(df["__record_id"], df[C.PAIR_ID]) for q, v in (("grade", str(original[pid])), ("accept", "yes"))]
        pulled = out / f"reviewed-{budget}"
        finish_pull(PullConfig(input=str(sel), kind="errors", out=str(pulled)), df, names, scale, responses, set(df["__record_id"]), {}, 1,
                    {"url": "simulated", "workspace": "-", "dataset": "-"})
        applied = out / f"pairs-applied-{budget}"
        res = apply(ApplyConfig(pairs=str(noisy_dir), reviews=[str(pulled)], out=str(applied), force=True))
        fixed = pl.read_parquet(applied / "train.parquet").with_columns(pl.col(C.PAIR_ID).cast(pl.String))
        y = np.array([dict(zip(fixed[C.PAIR_ID], fixed[C.GRADE]))[p] for p in train[C.PAIR_ID]])
        f1[f"applied_{budget}"] = macro_f1(test[C.GRADE].to_numpy(), 4 - fit_predict(x_train, y, x_test).argmax(1))
        f1[f"flips_left_{budget}"] = int((y != clean).sum())
        print(f"budget {budget}%: {res.summary()}", flush=True)
    lines = ["| budget | policy | reviewed | flipped rows found | per 100 reviews | share of all flips | × random |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in table:
        x = "–" if r["x_random"] is None else f"{r['x_random']:.1f}×"
        lines.append(f"| {r['budget_pct']}% | {r['policy']} | {r['reviewed']} | {r['flipped_found']} | {r['per_100_reviews']:.1f} | "
                     f"{100 * r['share_of_flips_found']:.0f}% | {x} |")
    lines += ["", "| train labels | test macro-F1 | flipped rows left |", "|---|---:|---:|",
              f"| clean (before the noise) | {100 * f1['clean']:.1f} | 0 |", f"| noisy ({100 * args.noise:.0f}% flipped) | {100 * f1['noisy']:.1f} | {int(flip.sum())} |"]
    lines += [f"| noisy + review apply of the disagreement (unstratified) {b}% round | {100 * f1[f'applied_{b}']:.1f} | {f1[f'flips_left_{b}']} |" for b in BUDGETS]
    md = "\n".join(lines)
    (out / "label_noise.md").write_text(md + "\n")
    (out / "label_noise.json").write_text(json.dumps({"selection": table, "macro_f1": f1}, indent=2))
    print(md)
    print(f"\n{time.time() - t0:.0f} s; command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
