"""Greedy batching of tile jobs on one device: no timer, no learned wait.

How it works: requests put their tile jobs in one queue; a single dispatcher runs a
forward pass whenever the device is free, taking everything queued (up to
``max_jobs``). An idle service therefore runs a lone job at once, and under load the jobs
that arrived during one pass form the next batch: batches grow with the traffic and
shrink back the moment it stops.

Why not BentoML's adaptive batcher: its dispatcher holds a job back while
``n · (wait + a) <= 0.95 · mean_wait``, where ``mean_wait`` is the average queueing
time of the last 50 batches, which includes the time jobs spent held back by that very
rule. After a burst the average is seconds long, so each later lone job is held for about
that long and measured again at about that long: single requests stayed at 4-5 s
(instead of 0.7-1.7 s) for minutes after 16 clients × 5 requests.

Load shedding: a job that waited more than ``max_wait_s`` in the queue is refused with
``ServiceUnavailable`` (503; the API passes it on with ``Retry-After``) instead of
being run late for a client that has given up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Job = TypeVar("Job")
Result = TypeVar("Result")


class Overloaded(Exception):
    """A job waited longer than the batcher's ``max_wait_s``."""


@dataclass
class _Entry(Generic[Job, Result]):
    jobs: list[Job]
    future: asyncio.Future[list[Result]]
    queued: float = field(default_factory=time.monotonic)


class Batcher(Generic[Job, Result]):
    """Runs lists of jobs from concurrent callers in as few passes as the device allows.

    Args:
        run: the forward passes of a list of jobs (results in job order); called in one
            worker thread, one call at a time.
        max_jobs: most jobs one call of ``run`` gets (a caller's list is never split).
        max_wait_s: jobs queued longer than this are refused with ``overloaded``.
        overloaded: builds the exception a shed caller gets (default ``Overloaded``).
        on_batch: called with the number of jobs of every call of ``run`` (metrics).
    """

    def __init__(self, run: Callable[[list[Job]], Sequence[Result]], *, max_jobs: int = 64,
                 max_wait_s: float = 60.0,
                 overloaded: Callable[[str], Exception] = Overloaded,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._run, self.max_jobs, self.max_wait_s = run, max_jobs, max_wait_s
        self._overloaded, self._on_batch = overloaded, on_batch
        self._queue: deque[_Entry[Job, Result]] = deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cellzoo-network")
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task | None = None

    async def submit(self, jobs: list[Job]) -> list[Result]:
        """The results of ``jobs``, in order, once a pass has run them."""
        loop = asyncio.get_running_loop()
        if self._dispatcher is None or self._dispatcher.done():
            self._wake = asyncio.Event()
            self._dispatcher = loop.create_task(self._dispatch())
        entry: _Entry[Job, Result] = _Entry(list(jobs), loop.create_future())
        self._queue.append(entry)
        self._wake.set()  # type: ignore[union-attr]
        return await entry.future

    def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake or asyncio.Event()
        while True:
            await wake.wait()
            wake.clear()
            while self._queue:
                batch = self._take()
                if not batch:
                    continue
                jobs = [job for entry in batch for job in entry.jobs]
                try:
                    results = await loop.run_in_executor(self._executor, self._run, jobs)
                except Exception as error:  # noqa: BLE001 (each caller gets the failure)
                    for entry in batch:
                        if not entry.future.done():
                            entry.future.set_exception(error)
                    continue
                if self._on_batch is not None:
                    self._on_batch(len(jobs))
                start = 0
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_result(list(results[start:start + len(entry.jobs)]))
                    start += len(entry.jobs)

    def _take(self) -> list[_Entry[Job, Result]]:
        """The next batch: queued entries in order, up to ``max_jobs`` jobs (at least one
        entry); entries whose caller left are dropped, those that waited too long shed."""
        batch: list[_Entry[Job, Result]] = []
        count, now = 0, time.monotonic()
        while self._queue:
            entry = self._queue[0]
            if entry.future.done():  # cancelled: the caller is gone
                self._queue.popleft()
                continue
            waited = now - entry.queued
            if waited > self.max_wait_s:
                self._queue.popleft()
                log.warning("shed %d tile job(s) that waited %.1f s (limit %.1f s)",
                            len(entry.jobs), waited, self.max_wait_s)
                entry.future.set_exception(self._overloaded(
                    f"the network service is overloaded: a job waited {waited:.0f} s"))
                continue
            if batch and count + len(entry.jobs) > self.max_jobs:
                break
            batch.append(self._queue.popleft())
            count += len(entry.jobs)
        return batch
