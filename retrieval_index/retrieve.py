"""`toolkit retrieve`: the top-k rules (and optionally knowledge) for every query-item pair.

Batched: each distinct search text is embedded once, and pairs are searched in blocks. What
is searched (`text`): the query, the item title, or both (default: `query | title`, plus a
BM25 score on query and title words; the best setup on demo/retrieval_qrels.jsonl). Filters:
snippet kind, tags, and each rule's category scope against the pair's item category.
Results go into list columns next to each pair (toolkit.core.columns.RULE_IDS / RULE_SCORES).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from retrieval_index.index import RuleIndex
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.executors import ExecutorOptions, make_executor
from toolkit.core.options import opt
from toolkit.core.pairs import validate_pairs
from toolkit.core.stagefolder import (input_hashes, Key, recorded_result, StageConfig, StageFolder, StageResult,
                                      write_parquet, write_stage, writes_output)
from toolkit.core.tables import read_pairs, read_parquet

log = logging.getLogger(__name__)

STAGE = "retrieve"
TEXT_MODES = ("both", "query", "item")
DEFAULT_LEXICAL_WEIGHT = 1.0  # cosine + 1.0 x BM25 scaled to [0, 1]; see benchmarks/README.md
BLOCK = 512  # pairs searched together


def pair_texts(queries: list[str], titles: list[str], text: str) -> tuple[list[str], list[str]]:
    """(text to embed, text for BM25) per pair."""
    if text == "query":
        return list(queries), list(queries)
    if text == "item":
        return list(titles), list(titles)
    return [f"{q} | {t}" for q, t in zip(queries, titles)], [f"{q} {t}" for q, t in zip(queries, titles)]


def retrieve_for_pairs(
    index: RuleIndex,
    queries: list[str],
    titles: list[str],
    categories: list[str | None] | None = None,
    k: int = 5,
    text: str = "both",
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
    kind: str | None = "rule",
    tags: "tuple[str, ...] | list[str]" = (),
    scope: bool = True,
    vectors: np.ndarray | None = None,
) -> tuple[list[list[str]], list[list[float]]]:
    """Snippet ids (best first) and scores for each pair. `vectors` skips embedding (one row per pair)."""
    if text not in TEXT_MODES:
        raise UserError(f"--text {text!r} is not known; use one of: {', '.join(TEXT_MODES)}")
    n = len(queries)
    _, lex_texts = pair_texts(queries, titles, text)
    if vectors is None:
        vectors = pair_vectors(index, queries, titles, text)
    base = index.mask(kind, tags)
    groups = _scope_groups(index, categories if scope and categories is not None else None, n)
    ids: list[list[str]] = [[] for _ in range(n)]
    scores: list[list[float]] = [[] for _ in range(n)]
    for allowed_scoped, members in groups:
        allowed = base
        if allowed_scoped is not None:
            allowed = allowed_scoped if base is None else base & allowed_scoped
        for start in range(0, len(members), BLOCK):
            rows_idx = members[start : start + BLOCK]
            s, r = index.rank(vectors[rows_idx], k, allowed, [lex_texts[i] for i in rows_idx], lexical_weight)
            for i, rr, ss in zip(rows_idx, r, s):
                keep = rr >= 0
                ids[i] = [index.ids[j] for j in rr[keep]]
                scores[i] = [round(float(x), 6) for x in ss[keep]]
    return ids, scores


def rule_texts(index: RuleIndex, queries: list[str], titles: list[str], categories: list[str | None] | None,
               k: int) -> list[list[str]]:
    """The texts of the top-k rules per pair (what the prompts show)."""
    ids, _ = retrieve_for_pairs(index, queries, titles, categories, k=k)
    return [[index.get(i)[C.SNIPPET_TEXT] for i in row] for row in ids]


def _scope_groups(index: RuleIndex, categories: list[str | None] | None,
                  n: int) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """Pairs grouped by which category-scoped snippets apply to them (one search mask per group)."""
    scoped = index.scoped_rows
    if categories is None or len(scoped) == 0:
        return [(None, np.arange(n))]
    from retrieval_index.snippets import scope_matches

    scope_col = index.snippets[C.SNIPPET_SCOPE]
    distinct: dict[tuple[str, ...], int] = {}
    scope_of_row = np.array([distinct.setdefault(tuple(scope_col[int(r)]), len(distinct)) for r in scoped])
    key_of: dict[str | None, bytes] = {}
    members: dict[bytes, list[int]] = {}
    for i, cat in enumerate(categories):
        if cat not in key_of:
            applies = np.array([scope_matches(s, cat) for s in distinct], dtype=bool)
            key_of[cat] = applies[scope_of_row].tobytes()
        members.setdefault(key_of[cat], []).append(i)
    out = []
    for key, idx in members.items():
        applies = np.frombuffer(key, dtype=bool)
        allowed = np.ones(len(index), dtype=bool)
        allowed[scoped] = applies
        out.append((None if applies.all() else allowed, np.asarray(idx)))
    return out


@dataclass
class RetrieveConfig(StageConfig, ExecutorOptions):
    input: str
    index: str = opt(flags=("-i", "--index"), type="path", help="Index folder from `toolkit build-index`.")
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder: the input's Parquet files plus rule_ids / rule_scores columns.")
    k: int = opt(5, flags=("-k", "--k"), show_default=True, help="Rules per pair.")
    text: str = opt("both", choices=TEXT_MODES, show_default=True,
                    help="What is searched: `query | title`, the query alone, or the item title alone.")
    lexical_weight: float = opt(DEFAULT_LEXICAL_WEIGHT, show_default=True,
                                help="Weight of the BM25 score (scaled to [0, 1] per pair) added to the cosine; 0 = "
                                     "dense only.")
    kind: str = opt("rule", choices=("rule", "knowledge", "any"), show_default=True, help="Snippet kind for rule_ids.")
    tags: list[str] = opt(default_factory=list, flags=("--tag",), multiple=True,
                          help="Only snippets with this tag (repeatable: any of them).")
    scope: bool = opt(True, flags=("--no-scope",), negate=True,
                      help="Ignore the rules' category scopes (by default a scoped rule goes only to pairs in its "
                           "categories).")
    knowledge_k: int = opt(0, show_default=True, help="Also write knowledge_ids / knowledge_scores with this many "
                                                      "knowledge snippets per pair.")
    model: str | None = opt(None, help="Embedding model; must be the one the index was built with (default: the one "
                                       "it records).")
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def __post_init__(self):
        if self.k < 1:
            raise UserError(f"-k must be >= 1; got {self.k}")
        if self.knowledge_k < 0:
            raise UserError(f"--knowledge-k must be >= 0; got {self.knowledge_k}")
        if self.text not in TEXT_MODES:
            raise UserError(f"--text {self.text!r} is not known; use one of: {', '.join(TEXT_MODES)}")
        if self.kind not in ("rule", "knowledge", "any"):
            raise UserError(f"--kind {self.kind!r} is not known; use rule, knowledge or any")
        if not 0 <= self.lexical_weight <= 10:
            raise UserError(f"--lexical-weight must be between 0 (dense only) and 10; got {self.lexical_weight}")
        self.tags = list(self.tags or [])


@dataclass
class RetrieveResult(StageResult):
    STAGE = STAGE

    def brief(self) -> str:
        return f"{self.counts['pairs']} pairs"

    def headline(self) -> str:
        c = self.counts
        return (f"{c['pairs']} pairs x top-{c['k']} {c['kind']} snippets ({c['setup']}); "
                f"{c['snippets_used']} of {c['snippets_allowed']} snippets used, {c['pairs_without_results']} pairs "
                "without any")


def _input_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise UserError(f"{path}: no .parquet files in this folder; pass the output of `toolkit ingest` or "
                            "`toolkit split`")
        return files
    read_pairs(path, [C.QUERY, C.TITLE])  # the reader's one-line errors for a missing or bad file
    return [path]


@writes_output(STAGE)
def retrieve(cfg: RetrieveConfig, embedder=None) -> RetrieveResult:
    """Add rule (and knowledge) ids and scores to every pair; keeps the input's file layout (one file per split).

    `embedder` (optional) replaces loading the index's recorded model; it must match the index."""
    files = _input_files(Path(cfg.input))
    inputs = input_hashes([cfg.input, cfg.index])
    done = recorded_result(RetrieveResult, cfg, inputs)
    if done is not None:
        return done
    index = RuleIndex.load(cfg.index, cfg.model, embedder=embedder)
    source = StageFolder.open(cfg.input)
    scale = source.scale()
    frames = []
    for f in files:
        df = read_parquet(f) if f.suffix == ".parquet" else read_pairs(f, [C.QUERY, C.TITLE])
        missing = [c for c in (C.QUERY, C.TITLE) if c not in df.columns]
        if missing:
            raise UserError(f"{f}: column(s) {', '.join(missing)} missing; found: {', '.join(df.columns)}; pass "
                            "canonical pairs from `toolkit ingest`")
        df, _ = validate_pairs(df, scale, str(f))
        frames.append(df.drop([c for c in (C.RULE_IDS, C.RULE_SCORES, C.KNOWLEDGE_IDS, C.KNOWLEDGE_SCORES)
                               if c in df.columns]))
    every = pl.concat(frames, how="diagonal_relaxed")
    queries, titles = every[C.QUERY].fill_null("").to_list(), every[C.TITLE].fill_null("").to_list()
    cats = every[C.CATEGORY].to_list() if C.CATEGORY in every.columns else None
    kind = None if cfg.kind == "any" else cfg.kind
    common = dict(categories=cats, text=cfg.text, lexical_weight=cfg.lexical_weight, tags=cfg.tags, scope=cfg.scope)
    vectors = pair_vectors(index, queries, titles, cfg.text,
                           executor=None if cfg.executor == "local" else make_executor(cfg))
    ids, scores = retrieve_for_pairs(index, queries, titles, k=cfg.k, kind=kind, vectors=vectors, **common)
    cols = {C.RULE_IDS: ids, C.RULE_SCORES: scores}
    if cfg.knowledge_k:
        cols[C.KNOWLEDGE_IDS], cols[C.KNOWLEDGE_SCORES] = retrieve_for_pairs(
            index, queries, titles, k=cfg.knowledge_k, kind="knowledge", vectors=vectors, **common)
    allowed = index.mask(kind, cfg.tags)
    used = Counter(i for row in ids for i in row)
    counts = {
        "pairs": every.height, "k": cfg.k, "kind": cfg.kind,
        "snippets_allowed": int(len(index) if allowed is None else allowed.sum()),
        "snippets_used": len(used), "pairs_without_results": sum(1 for row in ids if not row),
        "setup": f"text={cfg.text}, " + (f"hybrid lexical_weight={cfg.lexical_weight:g}" if cfg.lexical_weight
                                          else "dense only") + (", category scope" if cfg.scope and cats else ""),
        "most_used": dict(used.most_common(10)),
    }

    def write(tmp: Path) -> tuple[dict, dict]:
        start = 0
        for f, df in zip(files, frames):
            part = [pl.Series(name, vals[start : start + df.height],
                              dtype=pl.List(pl.String if name.endswith("ids") else pl.Float32))
                    for name, vals in cols.items()]
            write_parquet(df.with_columns(part), tmp / (f.stem + ".parquet"))
            start += df.height
        extra = {"index_model_id": index.model_id, "index_fingerprint": index.manifest.get("fingerprint"),
                 "index_rules_id": index.rules_id}
        if source.get(Key.GRADE_SCALE):  # the pairs' scale travels on (3- and 5-grade data)
            extra[Key.GRADE_SCALE] = source.get(Key.GRADE_SCALE)
        return counts, extra

    return write_stage(RetrieveResult, cfg, inputs, write)


def pair_vectors(index: RuleIndex, queries: list[str], titles: list[str], text: str, executor=None) -> np.ndarray:
    """One query vector per pair; each distinct text is embedded once: here, or in chunks by `executor`
    (toolkit.core.executors; a Ray actor pool loads the index's model once per actor)."""
    from retrieval_index.embedder import encode_in_chunks, encode_on

    dense_texts, _ = pair_texts(queries, titles, text)
    unique = list(dict.fromkeys(dense_texts))
    where = {t: i for i, t in enumerate(unique)}
    if executor is None:
        vectors = encode_in_chunks(index.embedder, unique, query=True, desc="embedding pairs")
    else:
        vectors = encode_on(executor, index.embedder_spec(), unique, query=True, desc="embedding pairs")
        if len(unique) and vectors.shape[1] != int(index.manifest["dim"]):
            raise UserError(f"{index.folder}: built with vectors of dimension {index.manifest['dim']} but the "
                            f"embedder gives {vectors.shape[1]}; rebuild the index")
    return vectors[[where[t] for t in dense_texts]]
