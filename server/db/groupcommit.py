"""Group commit: many concurrent requests answered by one database round of work.

A commit costs a disk flush whatever it holds. Under load (a bet from every socket, a
connect storm of sign-ins) requests are gathered and written together: a batch closes when
``max_batch`` requests wait or ``max_wait`` seconds passed since the first; up to
``concurrency`` batches run at once, and requests keep gathering while they do, so batches
grow with the load and a lone request waits ``max_wait`` at most.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import Generic, TypeVar

from ..metrics import group_commit

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")

CommitBatch = Callable[[list[Req]], Awaitable[Sequence[Res | Exception]]]
"""Does the work of one batch; returns one result (or the exception to raise) per request, in order."""


class GroupCommit(Generic[Req, Res]):
    """Coalesces concurrent :meth:`submit` calls into batches handed to ``commit``.

    If ``commit`` raises one of ``expected`` (a condition of the whole batch, such as an
    unavailable database), every request of the batch gets it. Any other exception is the fault
    of some request in it: the batch is committed again in halves until only the requests that
    cause it get it, and every other request its normal result. ``after`` runs with the results
    once the callers were released.
    """

    def __init__(
        self,
        commit: CommitBatch[Req, Res],
        *,
        name: str,
        max_batch: int,
        max_wait: float,
        concurrency: int,
        shutdown_error: Callable[[], Exception],
        expected: tuple[type[Exception], ...] = (),
        after: Callable[[Sequence[Res | Exception]], None] | None = None,
    ) -> None:
        self._commit = commit
        self._name = name
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._slots = asyncio.Semaphore(concurrency)
        self._shutdown_error = shutdown_error
        self._expected = expected
        self._after = after
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._wakeup = asyncio.Event()
        self._commits: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches committed so far."""
        self._metrics = group_commit(name)

    def start(self) -> None:
        """Start gathering batches."""
        self._runner = asyncio.create_task(self._run(), name=self._name)

    async def close(self) -> None:
        """Stop taking batches, wait for those in flight; requests still waiting get ``shutdown_error``."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        for _, future in self._pending:
            if not future.done():
                future.set_exception(self._shutdown_error())
        self._pending.clear()

    async def submit(self, request: Req) -> Res:
        """Add ``request`` to the next batch; return its result once the batch committed."""
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if len(self._pending) < self._max_batch:
                await asyncio.sleep(self._max_wait)
            await self._slots.acquire()
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if not self._pending:
                self._wakeup.clear()
            task = asyncio.create_task(self._run_batch(batch))
            self._commits.add(task)
            task.add_done_callback(self._committed)

    def _committed(self, task: asyncio.Task[None]) -> None:
        self._commits.discard(task)
        self._slots.release()

    async def _run_batch(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        started = perf_counter()
        results = await self._results([request for request, _ in batch])
        self._metrics.seconds.observe(perf_counter() - started)
        self._metrics.size.observe(len(batch))
        self.batches += 1
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away (its socket closed)
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._after is not None:
            self._after(results)

    async def _results(self, requests: list[Req]) -> Sequence[Res | Exception]:
        """One result per request. A batch that fails for a reason of its own (not one of
        ``expected``: those, like an unavailable database, concern every request alike) is run
        again in halves, down to the request that makes it fail: only that one gets the error."""
        try:
            return await self._commit(requests)
        except Exception as exc:
            if isinstance(exc, self._expected):
                return [exc] * len(requests)
            if len(requests) == 1:
                return [exc]  # the caller answers (and logs) it
            log.warning("%s: a batch of %d failed (%s: %s); committing it in halves to isolate the cause",
                        self._name, len(requests), type(exc).__name__, exc)  # fmt: skip
            half = len(requests) // 2
            return [*await self._results(requests[:half]), *await self._results(requests[half:])]
