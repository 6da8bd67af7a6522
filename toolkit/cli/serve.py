"""`toolkit serve`: the relevance judge as an HTTP scoring service."""

from __future__ import annotations

import click

from toolkit.cli.common import config_option


@click.command("serve")
@config_option
@click.option("--model", help="Checkpoint folder (e.g. out/demo/grpo), hub id, or `default` (SmolLM2-135M-Instruct, embedded).")
@click.option("--tiers", type=click.Path(), help="tiers.json from `toolkit tier fit` (or its folder): adds CumPT grade, tier and β per pair.")
@click.option("--scale", help="Grade scale (default: the tier rule's, else the checkpoint's manifest, else taosr4).")
@click.option("--index", type=click.Path(), help="Rules index folder: retrieve guideline rules for pairs that bring none (as `toolkit score --index`).")
@click.option("--rules-k", default=3, show_default=True, type=int, help="Rules per pair from --index.")
@click.option("--backend", type=click.Choice(["transformers", "vllm"]), default="transformers", show_default=True,
              help="transformers (CPU/GPU, shared-prefix reuse) or vllm (in-process engine with prefix caching).")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "float32", "bfloat16"]),
              help="auto = bfloat16 on GPUs and CPUs with AMX/AVX-512 BF16, else float32.")
@click.option("--threads", type=int, help="[transformers] torch CPU threads (default: torch's choice; 1 can be faster on a busy machine).")
@click.option("--enforce-eager", is_flag=True, help="[vllm] skip torch.compile (faster start, slower steps).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all interfaces).")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port to listen on.")
@click.option("--no-prefix-reuse", is_flag=True, help="[transformers] score every pair's full prompt (no shared-prefix KV cache).")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Rows per forward pass.")
@click.option("--max-batch", default=64, show_default=True, type=int,
              help="Pairs gathered from concurrent requests into one scoring call (a request is never split; small requests gain most).")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=float, help="How long to wait for more requests before scoring a batch.")
@click.option("--max-pairs", default=512, show_default=True, type=int, help="Pairs per request (413 above).")
@click.option("--max-text-chars", default=2000, show_default=True, type=int, help="Characters per text field (422 above).")
@click.option("--max-body-bytes", default=4_000_000, show_default=True, type=int, help="Request body size (413 above).")
@click.option("--max-explain-pairs", default=8, show_default=True, type=int, help="Pairs per request with explain=true (413 above).")
@click.option("--max-queued-pairs", default=8192, show_default=True, type=int,
              help="Pairs waiting for the model across requests; above it new requests get 503 + Retry-After.")
@click.option("--explain-max-tokens", default=96, show_default=True, type=int, help="Token budget of a generated rationale.")
@click.option("--graceful-timeout", "graceful_timeout_s", default=60.0, show_default=True, type=float,
              help="On SIGTERM/Ctrl-C, seconds to wait for requests in flight.")
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(no_prefix_reuse, **kw):
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

    from toolkit.serving.config import ServeConfig
    from toolkit.serving.server import serve as run

    cfg = ServeConfig(prefix_reuse=not no_prefix_reuse, **kw)
    quiet = logging.getLogger().level > logging.WARNING
    if not quiet:
        logging.getLogger("toolkit.serving").setLevel(min(logging.INFO, logging.getLogger().level))
    run(cfg, log_level="warning" if quiet else "info")


COMMANDS = [serve]
