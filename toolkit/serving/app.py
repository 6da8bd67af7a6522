"""The HTTP service (FastAPI on uvicorn): `POST /v1/score`, `/healthz`, `/readyz`, `/docs`.

`/docs` (Swagger UI) and `/redoc` load their JS and CSS from the app (fastapi-offline), not a CDN.

Life cycle: the server answers `/healthz` at once; the model loads and warms up on the model
thread in the background, and `/readyz` (and scoring) answer 503 until it is ready. On SIGTERM
or Ctrl-C uvicorn stops accepting connections and waits (up to `graceful_timeout_s`) for the
requests in flight; then the batcher answers whatever is still queued and the model is freed.

Bad input is a 4xx with a one-line `error`, never a 500: a body over `max_body_bytes` (413),
not UTF-8 or not JSON (400), a wrong shape or an empty text (422, naming the field), more
pairs than `max_pairs` or, with `explain`, than `max_explain_pairs` (413), a text longer than
`max_text_chars` (422). When more than `max_queued_pairs` pairs already wait for the model, a
request is turned away with 503 and Retry-After (back-pressure instead of an unbounded queue).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from toolkit import __version__
from toolkit.core import columns as C
from toolkit.core.errors import UserError
from toolkit.serving.batching import Batcher, Closing
from toolkit.serving.config import ServeConfig
from toolkit.serving.guard import BodyGuard
from toolkit.serving.judge import Judge
from toolkit.serving.schemas import ITEM_FIELDS, ErrorResponse, ScoreRequest, ScoreResponse, describe_errors

log = logging.getLogger(__name__)

LOADING, READY, FAILED = "loading", "ready", "failed"
ERRORS = {400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
          503: {"model": ErrorResponse}}


class ServiceState:
    def __init__(self, judge: Judge, cfg: ServeConfig):
        self.judge, self.cfg = judge, cfg
        self.status, self.error = LOADING, None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toolkit-model")
        self.batcher = Batcher(judge.score, self.executor, cfg.max_batch, cfg.max_wait_ms / 1000)
        self.loader: asyncio.Task | None = None
        self.started = time.time()
        self.in_flight = 0  # /v1/score requests being answered
        self.answered = 0

    def load(self) -> None:
        if self.judge.backend is None:
            self.judge.load()
        self.judge.warmup()

    def describe(self) -> dict:
        j = self.judge
        return {
            "status": self.status, "error": self.error, "model": j.model_id, "backend": self.cfg.backend,
            "dtype": j.dtype, "scale": j.scale.name, "beta": j.rule.beta if j.rule else None,
            "tiers": j.rule.tiers if j.rule else None,
            "prefix_reuse": j.scorer is not None, "prefix_check_gap": j.prefix_gap, "rules_index": self.cfg.index,
            "uptime_s": round(time.time() - self.started, 1), "in_flight": self.in_flight, "answered": self.answered,
            "batching": self.batcher.stats.to_dict(), "version": __version__,
        }


def create_app(judge: Judge, cfg: ServeConfig, on_fatal=None) -> FastAPI:
    """The ASGI app. `on_fatal()` is called when the model fails to load (the CLI stops the server)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state: ServiceState = app.state.service
        state.batcher.start()
        state.loader = asyncio.get_running_loop().create_task(_load(state, on_fatal))
        yield
        log.info("shutting down: %d request(s) still in flight", state.in_flight)
        await asyncio.gather(state.loader, return_exceptions=True)
        await state.batcher.close()
        state.executor.shutdown(wait=True)
        judge.close()
        log.info("stopped")

    app = FastAPIOffline(
        title="toolkit serve: TaoSR1 relevance judge",
        version=__version__,
        description=(
            "First-token grade probabilities for query–item pairs (label-first relevance model), the predicted "
            "grade, and the CumPT grade and tier of a fitted tier rule. Optional rationales with `explain=true`."
        ),
        lifespan=lifespan,
    )
    app.state.service = ServiceState(judge, cfg)
    app.add_middleware(BodyGuard, max_body_bytes=cfg.max_body_bytes)
    _handlers(app)
    _routes(app)
    return app


async def _load(state: ServiceState, on_fatal) -> None:
    t0 = time.perf_counter()
    try:
        await state.batcher.run(state.load)
    except Exception as e:  # noqa: BLE001 - reported through /readyz and the exit status
        state.status, state.error = FAILED, f"{type(e).__name__}: {e}" if not isinstance(e, UserError) else str(e)
        log.error("model failed to load: %s", state.error, exc_info=not isinstance(e, UserError))
        if on_fatal:
            on_fatal()
        return
    state.status = READY
    d = state.describe()
    tiers = f", CumPT β = {d['beta']:.4f}" if d["beta"] is not None else ", no tier rule"
    log.info("ready in %.1f s: %s (%s, %s, shared-prefix reuse %s%s)", time.perf_counter() - t0, d["model"],
             d["backend"], d["dtype"], "on" if d["prefix_reuse"] else "off", tiers)


def _error(status: int, message: str, detail=None, headers=None) -> JSONResponse:
    body = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        return _error(422, f"invalid request: {describe_errors(errors)}",
                      jsonable_encoder(errors, exclude={"input", "url", "ctx"}))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        msg = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            msg = f"no such endpoint: {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return _error(exc.status_code, msg, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")


def check_limits(req: ScoreRequest, rows: list[dict], cfg: ServeConfig) -> JSONResponse | None:
    """413 for too many pairs, 422 for a text over the length limit; None when within limits."""
    n = len(rows)
    if n > cfg.max_pairs:
        return _error(413, f"too many pairs in one request: {n} > {cfg.max_pairs} (--max-pairs); split the request")
    if req.explain and n > cfg.max_explain_pairs:
        return _error(413, f"explain=true is limited to {cfg.max_explain_pairs} pairs per request "
                           f"(--max-explain-pairs); got {n}")
    where = "pairs" if req.pairs is not None else "items"
    lim = cfg.max_text_chars
    if len(rows[0][C.QUERY]) > lim and req.pairs is None:
        return _error(422, f"query is {len(rows[0][C.QUERY])} characters, over the limit of {lim} (--max-text-chars)")
    for i, row in enumerate(rows):
        for f in ((C.QUERY,) if req.pairs is not None else ()) + ITEM_FIELDS:
            if len(row[f]) > lim:
                return _error(422, f"{where}[{i}].{f} is {len(row[f])} characters, over the limit of {lim} "
                                   "(--max-text-chars); shorten it")
        for j, rule in enumerate(row.get("rules") or []):
            if len(rule) > lim:
                return _error(422, f"{where}[{i}].rules[{j}] is {len(rule)} characters, over the limit of {lim} "
                                   "(--max-text-chars)")
    return None


def _routes(app: FastAPI) -> None:
    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the model is loaded and warm",
             responses={503: {"description": "loading or failed"}})
    async def readyz(request: Request):
        state: ServiceState = request.app.state.service
        return JSONResponse(state.describe(), status_code=200 if state.status == READY else 503)

    @app.post("/v1/score", response_model=ScoreResponse, response_model_exclude_none=True, responses=ERRORS,
              summary="Score query–item pairs")
    async def score(body: ScoreRequest, request: Request):
        """Grade probabilities (best grade first), argmax grade, and CumPT grade + tier + β when a tier rule is
        loaded.

        Send one query with its items (`query` + `items`, a search request) or independent `pairs`.
        `explain=true` also generates each pair's label-first answer and returns its rationale (slow).
        """
        t0 = time.perf_counter()
        state: ServiceState = request.app.state.service
        if state.status != READY:
            why = ("is still loading; retry when GET /readyz answers 200" if state.status == LOADING
                   else f"failed to load: {state.error}")
            return _error(503, f"the model {why}", headers={"Retry-After": "5"})
        rows = body.rows()
        bad = check_limits(body, rows, state.cfg)
        if bad is not None:
            return bad
        if state.batcher.stats.pending_pairs + len(rows) > state.cfg.max_queued_pairs:
            return _error(503, f"busy: {state.batcher.stats.pending_pairs} pairs are waiting for the model "
                               f"(--max-queued-pairs {state.cfg.max_queued_pairs}); retry shortly",
                          headers={"Retry-After": "1"})
        state.in_flight += 1
        try:
            results = await state.batcher.submit(rows)
            if body.explain:
                for res, extra in zip(results, await state.batcher.run(state.judge.explain, rows)):
                    res.update(extra)
        except Closing:
            return _error(503, "the service is shutting down; retry on another replica", headers={"Retry-After": "5"})
        except UserError as e:
            return _error(422, str(e))
        finally:
            state.in_flight -= 1
        state.answered += 1
        j = state.judge
        return {"model": j.model_id, "scale": j.scale.name, "beta": j.rule.beta if j.rule else None,
                "tiers": j.rule.tiers if j.rule else None, "results": results,
                "elapsed_ms": round(1000 * (time.perf_counter() - t0), 2)}
