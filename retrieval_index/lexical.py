"""BM25 over snippet texts, as sparse matrices: the lexical half of hybrid retrieval.

Guideline rules quote the words shoppers type ("gluten free", "alternative to", "refurbished",
"case, charger"), which a small sentence embedder blurs; adding a weighted BM25 score to the
cosine measured better on our labelled set (benchmarks/README.md). Built in memory from the
snippet texts when an index is opened for hybrid search (about 1 s per 50k snippets).
"""

from __future__ import annotations

import re

import numpy as np

from toolkit.core.errors import missing_extra

_WORD = re.compile(r"\w+")
STOP_WORDS = frozenset(
    "a an and are as at be but by for from has have if in into is it its no not of on or so than that the their "
    "then there these they this to was were when which while will with".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-case words without stop words; a plural `s` is dropped (shoes -> shoe, cases -> case)."""
    out = []
    for w in _WORD.findall(text.lower()):
        if w in STOP_WORDS:
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return out


def _sparse():
    try:
        import scipy.sparse as sp
    except ImportError:
        raise missing_extra("index", "scipy") from None
    return sp


class LexicalIndex:
    """Okapi BM25 (k1=1.2, b=0.75): doc-term weights precomputed, queries as binary term vectors."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75):
        sp = _sparse()
        self.vocab: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        lengths = np.zeros(len(texts), dtype=np.float32)
        for d, text in enumerate(texts):
            toks = tokenize(text)
            lengths[d] = len(toks)
            counts: dict[int, int] = {}
            for t in toks:
                j = self.vocab.setdefault(t, len(self.vocab))
                counts[j] = counts.get(j, 0) + 1
            rows += [d] * len(counts)
            cols += list(counts)
            tfs += list(counts.values())
        n, v = len(texts), max(1, len(self.vocab))
        tf = np.asarray(tfs, dtype=np.float32)
        rows_a, cols_a = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        df = np.bincount(cols_a, minlength=v).astype(np.float32)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * lengths / max(float(lengths.mean()) if n else 1.0, 1e-9))
        weights = idf[cols_a] * tf * (k1 + 1) / (tf + norm[rows_a])
        # terms x docs, so a batch of queries (q x terms) times it gives (q x docs) scores
        self.weights = sp.csr_matrix((weights, (cols_a, rows_a)), shape=(v, n), dtype=np.float32)
        self.n_docs = n

    def query_matrix(self, texts: list[str]):
        """Binary (len(texts) x terms) matrix of the known terms of each text."""
        sp = _sparse()
        rows, cols = [], []
        for i, text in enumerate(texts):
            ids = {self.vocab[t] for t in tokenize(text) if t in self.vocab}
            rows += [i] * len(ids)
            cols += list(ids)
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(texts), self.weights.shape[0]), dtype=np.float32)

    def scores(self, query_matrix, allowed: np.ndarray | None = None):
        """Sparse (queries x docs) BM25 scores; columns outside `allowed` are zeroed."""
        s = (query_matrix @ self.weights).tocsr()
        if allowed is not None:
            s.data[~allowed[s.indices]] = 0
            s.eliminate_zeros()
        return s


def top_per_row(scores, pool: int) -> np.ndarray:
    """Column ids of the `pool` highest entries of each row of a CSR matrix; -1 pads short rows."""
    n, m = scores.shape
    out = np.full((n, pool), -1, dtype=np.int64)
    if n * m <= 1 << 24:  # small enough to do densely, in C
        dense = scores.toarray()
        kk = min(pool, m)
        top = np.argpartition(-dense, kk - 1, axis=1)[:, :kk] if kk < m else np.tile(np.arange(m), (n, 1))
        out[:, :kk] = np.where(np.take_along_axis(dense, top, axis=1) > 0, top, -1)
        return out
    for i in range(n):
        lo, hi = scores.indptr[i], scores.indptr[i + 1]
        cols, vals = scores.indices[lo:hi], scores.data[lo:hi]
        if len(cols) > pool:
            cols = cols[np.argpartition(-vals, pool - 1)[:pool]]
        out[i, : len(cols)] = cols
    return out
