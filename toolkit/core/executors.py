"""Where a model stage's shards run: `--executor local` (this process, one shard after another) or
`--executor ray` (a pool of Ray actors on a cluster, one model replica each).

The stage's `work(i, items)` is shipped to every actor once (cloudpickle); each actor builds its own backend
on its first shard (the transformers or vLLM CPU backend here, one vLLM engine per GPU on a GPU cluster) and
keeps it for the shards it is given. The pool hands an actor its next shard only when it has returned the last
one (backpressure), results come back as they finish, and the driver writes each shard into the output folder
under the name the local executor uses (toolkit.core.shards.run_shards): a run killed anywhere, driver or
worker, resumes, and a run may switch executors between attempts. A dead actor is restarted and its shard
retried (`max_restarts`, `max_task_retries`).

Actors ask for a fraction of a CPU (`--ray-cpus`, default 0.5): on small machines an actor pool that holds
whole CPUs can starve Ray's own tasks and hang. Ray gives an actor as many math-library threads as the CPUs it
asks for (at least one), so a lone actor at 0.5 CPU computes on one thread where a local run uses every core:
give fewer actors more CPUs (`--ray-cpus 2`) when the cluster is one small machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import polars as pl

from toolkit.core.errors import UserError, missing_extra
from toolkit.core.options import opt
from toolkit.core.shards import Executor, Task, run_local

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
@dataclass(kw_only=True)
class ExecutorOptions:
    """The executor fields of a model stage's config (gen-cot, sample, score): a base class, keyword-only, so the
    stage's own fields keep their order. Not hashed: where shards run changes no row."""

    executor: str = opt("local", choices=EXECUTORS, show_default=True,
                        help="Where the shards run: local (this process) or ray (actors on a Ray cluster, "
                             "one model each).")
    ray_address: str = opt("auto", show_default=True,
                           help="[ray] the cluster: auto (the one `ray start` made here, or RAY_ADDRESS), "
                                "HOST:PORT, or local (a private one for this run).")
    ray_workers: int | None = opt(None, type=int,
                                  help="[ray] actors, each with its own model (default: the cluster's CPUs / "
                                       "--ray-cpus).")
    ray_cpus: float = opt(0.5, show_default=True,
                          help="[ray] CPUs each actor asks for; fractions keep Ray's own tasks running.")

    # how shards run, not what they hold: not hashed, so shards are reused when the executor changes
    NOT_HASHED: ClassVar[tuple[str, ...]] = ("force", "executor", "ray_address", "ray_workers", "ray_cpus")


class _ShardWorker:
    """One Ray actor: the stage's work function, with the backend it builds on first use."""

    def __init__(self, work: Callable[[int, list], pl.DataFrame]):
        self.work = work

    def run(self, i: int, part: list) -> tuple[int, pl.DataFrame]:
        return i, self.work(i, part)


def ray_executor(address: str = "auto", workers: int | None = None, cpus: float = 0.5) -> Executor:
    """An executor running shards on the Ray cluster at `address` ("auto": the one `ray start` made on this
    machine, else RAY_ADDRESS; "local": a private cluster for this run) with `workers` actors (default: as many as
    the cluster's CPUs hold at `cpus` each, at most one per shard)."""

    def run(work: Callable[[int, list], pl.DataFrame], tasks: list[Task]) -> Iterator[tuple[int, pl.DataFrame]]:
        if not tasks:
            return
        try:
            import ray
            from ray.util import ActorPool
        except ImportError as e:
            raise missing_extra("ray", e.name or "ray") from None
        connect(ray, address)
        fit = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        if workers and workers > fit:  # actors the cluster cannot place would wait for CPUs forever
            log.warning("--ray-workers %d at --ray-cpus %g: the cluster holds %d; using %d", workers, cpus, fit, fit)
        n = min(workers or fit, fit)
        actor = ray.remote(num_cpus=cpus, max_restarts=2, max_task_retries=2)(_ShardWorker)
        actors = [actor.remote(work) for _ in range(min(n, len(tasks)))]
        log.info("ray: %d shard(s) on %d actor(s) at %s", len(tasks), len(actors), address)
        try:
            yield from ActorPool(actors).map_unordered(lambda a, t: a.run.remote(*t), tasks)
        finally:
            for a in actors:
                ray.kill(a)

    return run


def connect(ray, address: str) -> None:
    """Join the cluster at `address` once per process; a one-line error when there is none."""
    if ray.is_initialized():
        return
    _probe(address)
    try:
        ray.init(address=None if address == "local" else address, log_to_driver=False, include_dashboard=False,
                 configure_logging=False)
    except ConnectionError as e:
        raise UserError(f"--ray-address {address}: no Ray cluster there ({str(e).splitlines()[0][:160]}); "
                        "start one with `ray start --head` (or pass --ray-address local for a private one, "
                        "or --executor local)") from None


def _probe(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT with nothing listening fails at once (Ray itself retries its connection for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # auto, local, or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"--ray-address {address}: no Ray cluster there ({e.strerror or type(e).__name__}); "
                        "start one with `ray start --head`, or pass --ray-address local for a private one, "
                        "or --executor local") from None


def make_executor(cfg) -> Executor:
    """The executor a stage config asks for (its executor, ray_address, ray_workers, ray_cpus fields)."""
    kind = getattr(cfg, "executor", "local") or "local"
    if kind == "local":
        return run_local
    if kind == "ray":
        return ray_executor(cfg.ray_address, cfg.ray_workers, cfg.ray_cpus)
    raise UserError(f"--executor must be one of {', '.join(EXECUTORS)}; got {kind!r}")
