"""Run the service with uvicorn (what `toolkit serve` calls)."""

from __future__ import annotations

import logging
import socket

from toolkit.core.errors import UserError, missing_extra
from toolkit.serving.config import ServeConfig

log = logging.getLogger(__name__)


def _imports():
    try:
        import fastapi  # noqa: F401
        import fastapi_offline  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise missing_extra("serve", e.name or "fastapi") from None
    return uvicorn


def check_port(host: str, port: int) -> None:
    """A one-line error when the address is taken (uvicorn would log and exit later)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                        "pass another --port or stop what uses it") from None


def serve(cfg: ServeConfig, log_level: str = "info") -> None:
    """Check inputs, start the server, block until SIGTERM/SIGINT; raise UserError if the model failed to load."""
    uvicorn = _imports()
    from toolkit.serving.app import FAILED, create_app
    from toolkit.serving.judge import Judge

    judge = Judge.open(cfg)
    check_port(cfg.host, cfg.port)
    holder: dict = {}

    def on_fatal():
        server = holder.get("server")
        if server is not None:
            server.should_exit = True

    app = create_app(judge, cfg, on_fatal)
    config = uvicorn.Config(
        app, host=cfg.host, port=cfg.port, log_config=None, log_level=log_level, access_log=cfg.access_log,
        timeout_graceful_shutdown=cfg.graceful_timeout_s or None, server_header=False,
    )
    server = uvicorn.Server(config)
    holder["server"] = server
    log.info("serving on http://%s:%d (API docs: /docs; ready when /readyz answers 200)", cfg.host, cfg.port)
    server.run()
    state = app.state.service
    if state.status == FAILED:
        raise UserError(f"the model failed to load: {state.error}")
