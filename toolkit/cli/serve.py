"""`toolkit serve`: the relevance judge as an HTTP scoring service."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option
from toolkit.cli.options import config_from, options_from
from toolkit.serving.config import ServeConfig


@click.command("serve")
@config_option
@options_from(ServeConfig)
def serve(**kw):
    """Serve a relevance judge over HTTP: grade probabilities, CumPT tiers, rationales.

    POST /v1/score takes one query with its items ({"query": ..., "items": [{"title": ...}]})
    or independent pairs ({"pairs": [{"query": ..., "title": ...}]}) and returns, per pair,
    the first-token grade probabilities (best grade first), the argmax grade and, with
    --tiers, the CumPT grade, tier and β. `"explain": true` also generates the rationale.
    Scores equal `toolkit score`'s for the same pairs. GET /healthz (alive), /readyz (model
    loaded and warm), /docs (OpenAPI). SIGTERM finishes the requests in flight, then exits.

    \b
    Example:
      toolkit serve --model out/demo/grpo --index out/demo/index --tiers out/demo/tiers --port 8080
      curl -s localhost:8080/v1/score -H 'content-type: application/json' \\
        -d '{"query": "running shoes", "items": [{"title": "Trail running shoe"}]}'
    """
    import logging

    from toolkit.serving.server import serve as run

    cfg = config_from(ServeConfig, kw)
    quiet = logging.getLogger().level > logging.WARNING
    if not quiet:
        logging.getLogger("toolkit.serving").setLevel(min(logging.INFO, logging.getLogger().level))
    run(cfg, log_level="warning" if quiet else "info")


COMMANDS = [serve]
