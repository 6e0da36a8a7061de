"""A node's metrics at run time: what starts with the node and stops with it.

:func:`node_metrics` wraps the node's life (``server/app.py``'s lifespan): the node's info
series, the event-loop lag probe, the shared-state sampler (outbox, notifications, PostgreSQL and
Redis up), the listener on ``CROUPIER_METRICS_PORT`` when set, and in multiprocess mode the flush of this
worker's cells every second. With ``CROUPIER_METRICS=0`` it starts nothing (the hot paths' cells still
count: a few plain integer additions per request, nothing reads them). The incremental ledger audit (one
node at a time, :mod:`.ledgerhealth`) is started by ``server/node.py``: its lock needs the session DSN.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol

import asyncpg

from .definitions import MULTIPROCESS, NODE_INFO
from .exposition import MetricsListener, flush
from .looplag import LoopLagProbe
from .samplers import SharedStateSampler

FLUSH_EVERY = 1.0
"""Seconds between flushes of this worker's cells to its files, in multiprocess mode."""


class MetricsSettings(Protocol):
    """The settings metrics read (see :class:`server.settings.Settings`)."""

    @property
    def node_id(self) -> str: ...

    @property
    def redis_url(self) -> str | None: ...

    @property
    def metrics(self) -> bool:
        """``CROUPIER_METRICS``: serve metrics and run the samplers."""
        ...

    @property
    def metrics_host(self) -> str: ...

    @property
    def metrics_port(self) -> int | None:
        """``CROUPIER_METRICS_PORT``: serve ``/metrics`` there instead of on the main port."""
        ...


@asynccontextmanager
async def node_metrics(settings: MetricsSettings, pool: asyncpg.Pool,
                       ping_broker: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:  # fmt: skip
    """Run the node's metrics while the block runs (nothing when ``settings.metrics`` is off): ``pool`` is the
    node's, ``ping_broker`` its broker's ping (Redis is probed with it when ``settings.redis_url`` is set)."""
    if not settings.metrics:
        yield
        return
    async with AsyncExitStack() as stack:
        info = NODE_INFO.labels(settings.node_id)
        info.set(1)
        if not MULTIPROCESS:  # (multiprocess: the supervisor marks the worker dead)
            stack.callback(NODE_INFO.remove, settings.node_id)
        lag = LoopLagProbe()
        lag.start()
        stack.push_async_callback(lag.close)
        sampler = SharedStateSampler(pool, ping_redis=ping_broker if settings.redis_url is not None else None)
        await sampler.start()
        stack.push_async_callback(sampler.close)
        if MULTIPROCESS:
            flusher = asyncio.get_running_loop().create_task(_flush_every(FLUSH_EVERY), name="metrics-flush")
            stack.push_async_callback(_cancel, flusher)
        if settings.metrics_port is not None:
            listener = MetricsListener(settings.metrics_host, settings.metrics_port)
            await listener.start()
            stack.push_async_callback(listener.close)
        yield


async def _flush_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        flush()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
