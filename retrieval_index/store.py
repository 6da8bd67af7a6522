"""faiss indexes over L2-normalised vectors (inner product = cosine): build, save, load, search.

Index types: `flat` (exact; the default below AUTO_APPROX_MIN snippets), `ivf` (inverted lists,
k-means cells; fast to build) and `hnsw` (graph; no training, slower to build). `auto` picks
flat for small knowledge bases and ivf for large ones. Search takes an optional boolean mask
of allowed rows (filters), applied inside faiss with a bitmap selector.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from toolkit.core.errors import UserError, missing_extra
from toolkit.core.options import opt

log = logging.getLogger(__name__)

INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
AUTO_APPROX_MIN = 200_000  # `auto` switches from exact to ivf at this many snippets
APPROX_TYPE = "ivf"
METRIC = "inner_product"  # on L2-normalised vectors: cosine similarity


def faiss_module():
    try:
        import faiss
    except ImportError:
        raise missing_extra("index", "faiss-cpu") from None
    return faiss


@dataclass
class IndexSpec:
    """How the faiss index is built and searched; 0 means "choose from the size"."""

    type: str = opt("auto", flags=("--index-type",), param="index_type", choices=INDEX_TYPES, show_default=True,
                    help="flat: exact search; ivf / hnsw: approximate, for large knowledge bases; auto: flat below "
                         "200k snippets, ivf above.")
    nlist: int = opt(0, help="[ivf] number of cells (default about 2*sqrt(snippets)).")
    nprobe: int = opt(0, help="[ivf] cells visited per search (default nlist/16, at least 8).")
    hnsw_m: int = opt(32, show_default=True, help="[hnsw] graph degree.")
    ef_construction: int = 64  # no option: Python only
    ef_search: int = opt(128, show_default=True, help="[hnsw] candidate list size per search.")

    def __post_init__(self):
        if self.type not in INDEX_TYPES:
            raise UserError(f"--index-type {self.type!r} is not known; use one of: {', '.join(INDEX_TYPES)}")
        for name in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if int(getattr(self, name)) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0; got {getattr(self, name)}")

    def resolve(self, n: int) -> "IndexSpec":
        """Fix `auto` and the size-dependent defaults for a knowledge base of n snippets."""
        kind = self.type if self.type != "auto" else (APPROX_TYPE if n >= AUTO_APPROX_MIN else "flat")
        nlist = self.nlist or max(1, min(int(2 * math.sqrt(n)), n // 39 or 1))
        nprobe = self.nprobe or min(nlist, max(8, nlist // 16))
        if kind != "ivf":
            nlist = nprobe = 0
        return IndexSpec(kind, nlist, nprobe, self.hnsw_m, self.ef_construction, self.ef_search)

    def as_dict(self) -> dict:
        return asdict(self)


def build_faiss(vectors: np.ndarray, spec: IndexSpec, seed: int = 0):
    """A faiss index over `vectors` (rows = snippet rows). `spec` must be resolved."""
    faiss = faiss_module()
    n, dim = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if spec.type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    elif spec.type == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, spec.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        train = vectors
        if n > 64 * spec.nlist:  # k-means on a sample: 64 points per cell is plenty, and far faster
            train = vectors[np.random.default_rng(seed).choice(n, 64 * spec.nlist, replace=False)]
        index.cp.max_points_per_centroid = 64
        index.train(train)
        index.nprobe = spec.nprobe
    else:
        raise ValueError(f"unresolved index type {spec.type}")
    index.add(vectors)
    return index


def search_faiss(index, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None, spec: IndexSpec | None = None):
    """Top-k rows and scores per query vector; rows are -1 where fewer than k rows are allowed."""
    faiss = faiss_module()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    k = max(1, min(k, index.ntotal))
    sel = bitmap = None
    if allowed is not None and not allowed.all():
        if not allowed.any():
            return np.full((len(vectors), k), -np.inf, np.float32), np.full((len(vectors), k), -1, np.int64)
        # faiss scans vector by vector under a selector; a masked matmul is far faster
        if isinstance(index, faiss.IndexFlat):
            return _masked_flat_search(index, vectors, k, allowed)
        bitmap = np.packbits(allowed.astype(bool), bitorder="little")
        sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
    ivf = faiss.extract_index_ivf(index) if "IVF" in type(index).__name__ else None
    if ivf is not None:
        params = faiss.SearchParametersIVF(sel=sel, nprobe=(spec.nprobe if spec and spec.nprobe else ivf.nprobe))
    elif isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(k, spec.ef_search if spec else index.hnsw.efSearch))
    else:
        params = faiss.SearchParameters(sel=sel) if sel is not None else None
    scores, rows = index.search(vectors, k, params=params)
    del bitmap  # kept alive until the search is done
    return scores, rows


def _masked_flat_search(index, vectors: np.ndarray, k: int, allowed: np.ndarray):
    faiss = faiss_module()
    xb = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)  # a view, no copy
    cols = np.flatnonzero(allowed)
    sub = xb[cols] if len(cols) < index.ntotal // 2 else None
    penalty = np.where(allowed, 0, -np.inf).astype(np.float32)[None, :]
    kk = min(k, len(cols))
    scores = np.full((len(vectors), k), -np.inf, np.float32)
    rows = np.full((len(vectors), k), -1, np.int64)
    step = max(1, min(len(vectors), (1 << 24) // max(1, index.ntotal)))  # at most ~64 MB of scores at a time
    for start in range(0, len(vectors), step):
        q = vectors[start : start + step]
        if sub is not None:
            s, idx = q @ sub.T, cols
        else:
            s, idx = q @ xb.T, None
            s += penalty
        top = (np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1]
               else np.tile(np.arange(s.shape[1]), (len(q), 1)))
        ts = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-ts, axis=1, kind="stable")
        top, ts = np.take_along_axis(top, order, axis=1), np.take_along_axis(ts, order, axis=1)
        scores[start : start + len(q), :kk] = ts
        rows[start : start + len(q), :kk] = top if idx is None else idx[top]
    return scores, rows


def write_faiss(index, path: Path) -> None:
    faiss_module().write_index(index, str(path))


def read_faiss(path: Path, expect_count: int, expect_dim: int,
               fix: str = "rebuild it with toolkit build-index ... --force"):
    """Load an index file; a truncated or foreign file is a one-line error with the fix."""
    faiss = faiss_module()
    if not path.exists():
        raise UserError(f"{path}: missing; the index folder is incomplete; {fix}")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        raise UserError(f"{path}: corrupt faiss index ({str(e).strip().splitlines()[-1][:100]}); {fix}") from None
    if index.ntotal != expect_count or index.d != expect_dim:
        raise UserError(f"{path}: holds {index.ntotal} vectors of dimension {index.d} but the manifest says "
                        f"{expect_count} of {expect_dim}; {fix}")
    return index
