"""An index folder, loaded: snippets, their faiss index, and the embedder they were built with.

Folder layout (written by `toolkit build-index`):
  snippets.parquet   one row per snippet (toolkit.core.columns.SNIPPET_COLUMNS); row i = faiss row i
  embeddings.npy     float32 (count, dim), L2-normalised; the cache a rebuild reuses
  index.faiss        the faiss index
  manifest.json      model_id, dim, metric, count, index spec, per-snippet text hashes, counts
  config.yaml        the resolved build config
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from retrieval_index.store import IndexSpec, read_faiss, search_faiss
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.stagefolder import read_manifest, sha256_file, sha256_json
from toolkit.core.stagefolder.files import EMBEDDINGS_FILE, FAISS_FILE, SNIPPETS_FILE

log = logging.getLogger(__name__)

STAGE = "build-index"


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    kind: str
    text: str
    grade_hint: str | None
    tags: tuple[str, ...]


def read_index_manifest(folder: "str | Path") -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such index folder; build one with `toolkit build-index RULES.md -o {folder}`")
    m = read_manifest(folder)
    if not m or m.get("stage") != STAGE:
        raise UserError(f"{folder}: not an index folder (no build-index manifest.json); build one with "
                        f"`toolkit build-index RULES.md -o {folder}`")
    return m


def rebuild_hint(folder: Path, manifest: dict | None) -> str:
    """The command that rebuilds this index folder from the files it was built from."""
    sources = " ".join(str(p) for p in (manifest or {}).get("inputs", {})) or "RULES_FILES..."
    return f"rebuild it: toolkit build-index {sources} -o {folder} --force"


def check_outputs(folder: Path, manifest: dict, names: tuple[str, ...]) -> None:
    """Files changed since the build (a truncated copy, an edit) are corrupt: refuse with the fix."""
    for name in names:
        path = folder / name
        expected = manifest.get("outputs", {}).get(name)
        if not path.exists():
            raise UserError(f"{path}: missing, the index folder is incomplete; {rebuild_hint(folder, manifest)}")
        if expected and sha256_file(path) != expected:
            raise UserError(f"{path}: corrupt (its content changed since the build); {rebuild_hint(folder, manifest)}")


class RuleIndex:
    """Search an index folder by text (embedding with the model it was built with) or by vectors."""

    def __init__(self, folder: Path, manifest: dict, snippets: pl.DataFrame, faiss_index, spec: IndexSpec,
                 model: str | None = None, embedder=None):
        self.folder, self.manifest, self.snippets, self._faiss, self.spec = (
            folder, manifest, snippets, faiss_index, spec)
        self.model_id: str = manifest["model_id"]
        self.dim: int = int(manifest["dim"])
        self._model = model
        self._embedder = self._vectors = self._lexical = None
        if embedder is not None:
            self._embedder = check_embedder(embedder, manifest, folder)
        self.ids: list[str] = snippets[C.SNIPPET_ID].to_list()
        self.kinds = snippets[C.SNIPPET_KIND].to_numpy()
        self._row = {sid: i for i, sid in enumerate(self.ids)}

    @classmethod
    def load(cls, folder: "str | Path", model: str | None = None, verify: bool = True, embedder=None,
             search: bool = True) -> "RuleIndex":
        """Open an index folder. `model` (a --model value) or `embedder` (an Embedder object), when
        given, must be the embedder the index was built with; by default the recorded model is used.
        `search=False`: for looking rules up by id only; the faiss file is read on the first search, so faiss
        need not be installed (e.g. a GPU machine that scores pairs retrieved elsewhere)."""
        folder = Path(folder)
        m = read_index_manifest(folder)
        if model is not None:
            check_model(m, folder, model)
        if verify:
            check_outputs(folder, m, (SNIPPETS_FILE, FAISS_FILE))
        snippets = pl.read_parquet(folder / SNIPPETS_FILE)
        if snippets.height != int(m["count"]):
            raise UserError(f"{folder}: {snippets.height} snippets but the manifest says {m['count']}; "
                            f"{rebuild_hint(folder, m)}")
        index = cls._read_faiss(folder, m, snippets.height) if search else None
        return cls(folder, m, snippets, index, IndexSpec(**m["index_spec"]), model, embedder)

    @staticmethod
    def _read_faiss(folder: Path, m: dict, n: int):
        index = read_faiss(folder / FAISS_FILE, int(m["count"]), int(m["dim"]), rebuild_hint(folder, m))
        if n != index.ntotal:
            raise UserError(f"{folder}: {n} snippets but {index.ntotal} vectors; {rebuild_hint(folder, m)}")
        return index

    @property
    def faiss(self):
        if self._faiss is None:
            self._faiss = self._read_faiss(self.folder, self.manifest, len(self.ids))
        return self._faiss

    @property
    def rules_id(self) -> str:
        """Which rule texts the ids stand for (the per-snippet text hashes), independent of where the rules file was
        and of the embedder: retrieved ids stay valid for any build with the same id."""
        return sha256_json(self.manifest.get("snippet_hashes") or {})

    def __len__(self) -> int:
        return len(self.ids)

    def embedder_spec(self):
        """Where this index's embedding model loads from (ModelSpec), checked against the recorded id."""
        from retrieval_index.embedder import resolve_model

        spec = resolve_model(self._model or self.model_id)
        if self._model is None and spec.model_id != self.model_id and recorded_unpinned(self.model_id, spec.model_id):
            log.warning("%s: built with the hub embedder %s before the toolkit recorded its commit; using %s (rebuild "
                        "the index to record it)", self.folder, self.model_id, spec.model_id)
            spec = type(spec)(self.model_id, spec.load_from)  # the recorded id: check_embedder compares it
        if self._model is None and spec.model_id != self.model_id:
            raise UserError(f"{self.folder}: built with embedder {self.model_id}, which resolves to "
                            f"{spec.model_id} here; pass --model with the original model's path")
        if spec.model_id != self.model_id:
            check_embedder(spec, self.manifest, self.folder)  # the id check; the dimension is checked on use
        return spec

    @property
    def embedder(self):
        if self._embedder is None:
            from retrieval_index.embedder import load_embedder

            self._embedder = check_embedder(load_embedder(self.embedder_spec()), self.manifest, self.folder)
        return self._embedder

    def mask(self, kind: str | None = None, tags: "tuple[str, ...] | list[str]" = (),
             category: str | None = None) -> np.ndarray | None:
        """Rows allowed by the filters (None = all): kind, any of `tags`, category scope matching `category`."""
        allowed = np.ones(len(self), dtype=bool)
        if kind and kind != "any":
            allowed &= self.kinds == kind
        if tags:
            wanted = set(tags)
            allowed &= np.array([bool(wanted.intersection(t)) for t in self.snippets[C.SNIPPET_TAGS].to_list()],
                                dtype=bool)
        if category:
            allowed &= self.scope_mask(category)
        return None if allowed.all() else allowed

    def scope_mask(self, category: str | None) -> np.ndarray:
        from retrieval_index.snippets import scope_matches

        scopes = self.snippets[C.SNIPPET_SCOPE].to_list()
        return np.array([scope_matches(s, category) for s in scopes], dtype=bool)

    @property
    def scoped_rows(self) -> np.ndarray:
        """Rows whose snippet is limited to some categories."""
        return np.flatnonzero(self.snippets[C.SNIPPET_SCOPE].list.len().fill_null(0).to_numpy() > 0)

    def search_vectors(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None):
        """Dense top-k: (scores, rows), rows -1 where fewer than k rows are allowed."""
        if vectors.shape[1] != self.dim:
            raise UserError(f"{self.folder}: query vectors have dimension {vectors.shape[1]}, the index {self.dim}; "
                            f"embed with {self.model_id}")
        return search_faiss(self.faiss, vectors, k, allowed, self.spec)

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            path = self.folder / EMBEDDINGS_FILE
            try:
                vecs = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise UserError(f"{path}: unreadable ({e}); {rebuild_hint(self.folder, self.manifest)}") from None
            if vecs.shape != (len(self), self.dim):
                raise UserError(f"{path}: shape {vecs.shape}, expected ({len(self)}, {self.dim}); "
                                f"{rebuild_hint(self.folder, self.manifest)}")
            self._vectors = vecs
        return self._vectors

    @property
    def lexical(self):
        if self._lexical is None:
            from retrieval_index.lexical import LexicalIndex

            self._lexical = LexicalIndex(self.snippets[C.SNIPPET_TEXT].to_list())
        return self._lexical

    def rank(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None,
             lexical_texts: list[str] | None = None, lexical_weight: float = 0.0):
        """Top-k (scores, rows) per query: cosine, plus `lexical_weight` x BM25 scaled to [0, 1] per query.

        Hybrid: the union of the dense and the lexical top candidates is re-scored exactly.
        """
        if not lexical_weight or lexical_texts is None:
            return self.search_vectors(vectors, k, allowed)
        n_allowed = len(self) if allowed is None else int(allowed.sum())
        pool = max(1, min(max(4 * k, 32), n_allowed))
        d_scores, d_rows = self.search_vectors(vectors, pool, allowed)
        from retrieval_index.lexical import top_per_row

        lex = self.lexical.scores(self.lexical.query_matrix(lexical_texts), allowed)
        l_rows = top_per_row(lex, pool)
        cand = np.sort(np.concatenate([d_rows, l_rows], axis=1), axis=1)
        valid = cand >= 0
        valid[:, 1:] &= cand[:, 1:] != cand[:, :-1]  # each row once
        safe = np.where(valid, cand, 0)
        dense = np.einsum("nd,ncd->nc", vectors, np.asarray(self.vectors[safe.ravel()]).reshape(*safe.shape, self.dim))
        lex_c = np.asarray(lex[np.repeat(np.arange(len(vectors)), cand.shape[1]), safe.ravel()]).reshape(safe.shape)
        top_lex = lex.max(axis=1).toarray().reshape(-1, 1)
        fused = np.where(valid, dense + lexical_weight * lex_c / np.maximum(top_lex, 1e-9), -np.inf).astype(np.float32)
        kk = min(k, fused.shape[1])
        order = np.argsort(-fused, axis=1, kind="stable")[:, :kk]
        scores = np.take_along_axis(fused, order, axis=1)
        rows = np.where(np.isfinite(scores), np.take_along_axis(cand, order, axis=1), -1)
        return scores, rows

    def search(self, texts: list[str], k: int = 5, kind: str | None = None, tags=(), category: str | None = None,
               lexical_texts: list[str] | None = None, lexical_weight: float = 0.0) -> list[list[Hit]]:
        """Top-k snippets for each text (embedded as a search query), filtered; hybrid when lexical_weight > 0."""
        vecs = self.embedder.encode(list(texts), query=True)
        lexical_texts = lexical_texts if lexical_texts is not None else list(texts)
        scores, rows = self.rank(vecs, k, self.mask(kind, tags, category), lexical_texts, lexical_weight)
        return [[self.hit(r, s) for r, s in zip(rr, ss) if r >= 0] for rr, ss in zip(rows, scores)]

    def hit(self, row: int, score: float) -> Hit:
        r = self.snippets.row(int(row), named=True)
        return Hit(r[C.SNIPPET_ID], float(score), r[C.SNIPPET_KIND], r[C.SNIPPET_TEXT], r[C.SNIPPET_GRADE_HINT],
                   tuple(r[C.SNIPPET_TAGS] or ()))

    def get(self, snippet_id: str) -> dict:
        """A snippet's record by id (for prompts: text, grade hint, scope)."""
        if snippet_id not in self._row:
            raise UserError(f"{self.folder}: no snippet with id {snippet_id!r}")
        return self.snippets.row(self._row[snippet_id], named=True)


def recorded_unpinned(recorded: str, model_id: str) -> bool:
    """The index recorded a hub embedder as `owner/name`, before the toolkit pinned hub ids, and `model_id` is that
    model at a commit (`owner/name@COMMIT`)."""
    return "@" not in recorded and model_id.partition("@")[0] == recorded


def check_model(manifest: dict, folder: Path, model: str) -> None:
    """Refuse a --model other than the one the index was built with (before loading it)."""
    from retrieval_index.embedder import resolve_model
    from toolkit.core.stagefolder.remote import is_hub_model_id, split_model_id

    recorded = manifest["model_id"]
    if is_hub_model_id(model) and split_model_id(model)[0] != split_model_id(recorded)[0]:
        model_id = model  # another hub model: no need to look up its commit
    else:
        model_id = resolve_model(model).model_id
        if recorded_unpinned(recorded, model_id):
            model_id = recorded
    if model_id != recorded:
        raise UserError(
            f"{folder}: built with embedder {recorded} (dimension {manifest['dim']}), not {model_id}; search with "
            f"--model {recorded} (or leave --model out), or rebuild the index with --model {model}"
        )


def check_embedder(embedder, manifest: dict, folder: Path):
    """Refuse an embedder whose id or dimension differs from the index's."""
    if embedder.model_id != manifest["model_id"]:
        raise UserError(
            f"{folder}: built with embedder {manifest['model_id']} (dimension {manifest['dim']}), not "
            f"{embedder.model_id}; search with --model {manifest['model_id']} (or leave --model out), or rebuild the "
            "index with the new model"
        )
    if int(embedder.dim) != int(manifest["dim"]):
        raise UserError(
            f"{folder}: built with vectors of dimension {manifest['dim']} but embedder {embedder.model_id} gives "
            f"{embedder.dim}; the model changed since the build; {rebuild_hint(folder, manifest)}"
        )
    return embedder
