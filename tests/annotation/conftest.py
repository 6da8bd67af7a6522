"""Fixtures for the review tests: a real local Argilla stack and annotator users.

The stack (Redis, osmem-server, argilla-server 2.8 and its worker) is started once per test
session by annotation/stack/argilla_stack.sh in a temporary state folder on free ports, and
stopped at the end; the first run installs what is missing (redis-server from apt, the server
venv .venv-argilla from PyPI: about a minute). To reuse a server that is already running:
TOOLKIT_TEST_ARGILLA_URL=... TOOLKIT_TEST_ARGILLA_KEY=... (an owner's key).

Run: .venv/bin/python -m pytest tests/annotation -q
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # review_data

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "annotation" / "stack" / "argilla_stack.sh"
ANNOTATORS = ("alice", "bob", "carol")


@dataclass
class Stack:
    url: str
    key: str
    client: object  # argilla.Argilla as the owner


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="session")
def argilla_stack(tmp_path_factory):
    pytest.importorskip("argilla", reason="the Argilla SDK is the [argilla] extra: pip install 'taosr-toolkit[argilla]'")
    import argilla as rg

    url, key = os.environ.get("TOOLKIT_TEST_ARGILLA_URL"), os.environ.get("TOOLKIT_TEST_ARGILLA_KEY")
    state = None
    if not url:
        state = tmp_path_factory.mktemp("argilla-stack")
        env = {**os.environ, "ARGILLA_STACK_DIR": str(state), "ARGILLA_STACK_PORT": "0"}
        r = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, timeout=120)
            pytest.fail(f"the local Argilla stack did not start:\n{r.stderr[-3000:]}")
        vals = _read_env(state / "stack.env")
        url, key = vals["ARGILLA_API_URL"], vals["ARGILLA_API_KEY"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = rg.Argilla(api_url=url, api_key=key)
        yield Stack(url, key, client)
    finally:
        if state is not None:
            env = {**os.environ, "ARGILLA_STACK_DIR": str(state)}
            subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, timeout=120)


class Annotator:
    """An annotator user with its own API key and SDK client; answers records as a person would."""

    def __init__(self, owner, url: str, name: str):
        import argilla as rg

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            user = owner.users(name) or rg.User(username=name, password=f"{name}-password", role="annotator", client=owner).create()
            key = owner.http_client.get(f"/api/v1/users/{user.id}").json()["api_key"]
            self.client = rg.Argilla(api_url=url, api_key=key)
        self.name, self.id, self.owner = name, user.id, owner

    def join(self, workspace: str) -> None:
        ws = self.owner.workspaces(workspace)
        if self.name not in {u.username for u in ws.users}:
            ws.add_user(self.name)

    def answer(self, record_uuid, status: str = "submitted", **values) -> None:
        """POST /api/v1/records/{id}/responses with this annotator's own key (what the UI's Submit does)."""
        from argilla._models import UserResponseModel

        body = UserResponseModel(values={q: {"value": v} for q, v in values.items()}, status=status, user_id=self.id)
        self.client.api.records.create_record_response(record_uuid, body)


@pytest.fixture(scope="session")
def annotators(argilla_stack) -> dict[str, Annotator]:
    return {n: Annotator(argilla_stack.client, argilla_stack.url, n) for n in ANNOTATORS}


@pytest.fixture
def record_uuids(argilla_stack):
    """record id -> server uuid of a dataset (the owner lists them; annotators may not)."""

    def get(dataset: str, workspace: str = "review") -> dict[str, object]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = argilla_stack.client.datasets(dataset, workspace=workspace)
            return {r.id: r._server_id for r in ds.records(with_suggestions=False, with_responses=False)}

    return get


@pytest.fixture
def unique():
    """A fresh dataset name per test, so tests never see each other's records."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The first six demo pairs and a stage-like folder per review kind."""
    import review_data as D

    root = tmp_path_factory.mktemp("review-data")
    pairs = D.demo_pairs(REPO, root / "pairs")
    folders = {kind: D.write_kind(kind, pairs, root / kind) for kind in D.FRAMES}
    return {"root": root, "pairs": pairs, "pairs_dir": root / "pairs", **folders}
