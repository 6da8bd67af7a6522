"""Dynamic batching: concurrent requests gathered into one scoring call on one worker thread.

Requests put their rows on an asyncio queue. The batcher takes the first waiting request, then
keeps gathering for up to `max_wait_s` (or until `max_batch` pairs), and runs one scoring call
for all of them on the single model thread; each request gets its own slice of the results.
While that call runs, new requests wait in the queue and form the next batch, so under load
batches fill up without waiting. A request is never split; one larger than `max_batch` runs
alone. If a gathered call fails, each request is retried alone, so one bad request cannot fail
the others. `close()` stops taking requests, finishes every queued one, then returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class Closing(Exception):
    """The service is shutting down and takes no new requests."""


@dataclass
class _Job:
    rows: list
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    requests: int = 0
    pairs: int = 0
    batches: int = 0
    max_requests_per_batch: int = 0
    in_flight: int = 0  # requests submitted and not answered yet
    pending_pairs: int = 0  # their pairs
    failed: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Batcher:
    """`await submit(rows)` -> `fn(all gathered rows)`'s slice for these rows."""

    def __init__(self, fn, executor: ThreadPoolExecutor, max_batch: int = 256, max_wait_s: float = 0.005):
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_wait_s = max(1, int(max_batch)), max(0.0, float(max_wait_s))
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        self._queue, self._arrived = asyncio.Queue(), asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="toolkit-batcher")

    async def submit(self, rows: list) -> list:
        if self._closing or self._task is None:
            raise Closing("the service is shutting down")
        job = _Job(rows, asyncio.get_running_loop().create_future())
        self.stats.requests += 1
        self.stats.pairs += len(rows)
        self.stats.in_flight += 1
        self.stats.pending_pairs += len(rows)
        try:
            self._queue.put_nowait(job)
            self._arrived.set()
            return await asyncio.shield(job.future)  # a client hanging up does not cancel the shared call
        finally:
            self.stats.in_flight -= 1
            self.stats.pending_pairs -= len(rows)

    async def run(self, fn, *args):
        """Run any other model call (e.g. generation) on the model thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def close(self) -> None:
        """Take no new requests; answer all queued ones; stop."""
        if self._task is None or self._closing:
            return
        self._closing = True
        self._queue.put_nowait(None)
        self._arrived.set()
        await self._task

    # -- the loop ----------------------------------------------------------------

    async def _loop(self) -> None:
        stop = False
        while not stop:
            job = await self._queue.get()
            if job is None:
                break
            batch, stop = await self._gather(job)
            await self._execute(batch)
        # anything queued behind the stop marker (there should be none: submit refuses once closing)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not None:
                await self._execute([job])

    async def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        loop = asyncio.get_running_loop()
        batch, n = [first], len(first.rows)
        deadline = loop.time() + self.max_wait_s
        while n < self.max_batch:
            self._arrived.clear()
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            if job is None:
                return batch, True
            if n + len(job.rows) > self.max_batch:
                await self._execute(batch)  # keep request order: this one starts the next batch
                batch, n = [], 0
            batch.append(job)
            n += len(job.rows)
        return batch, False

    async def _execute(self, batch: list[_Job]) -> None:
        if not batch:
            return
        rows = [r for job in batch for r in job.rows]
        self.stats.batches += 1
        self.stats.max_requests_per_batch = max(self.stats.max_requests_per_batch, len(batch))
        try:
            results = await self.run(self.fn, rows)
        except Exception as e:  # noqa: BLE001 - isolate the failing request below
            if len(batch) == 1:
                self.stats.failed += 1
                _settle(batch[0].future, error=e)
                return
            log.warning("a batch of %d requests failed (%s: %s); retrying each alone", len(batch), type(e).__name__, e)
            for job in batch:
                await self._execute([job])
            return
        start = 0
        for job in batch:
            _settle(job.future, result=results[start : start + len(job.rows)])
            start += len(job.rows)


def _settle(future: asyncio.Future, result=None, error: Exception | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
