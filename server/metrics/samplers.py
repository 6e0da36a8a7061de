"""Gauges of shared state, sampled every few seconds: the outbox backlog, the notification queue,
and whether PostgreSQL and Redis answer.

Each is one indexed read (``user_events_pending``, the outbox's unrelayed events, and
``notifications_due``, a partial index over the notifications still to send), capped so a huge
backlog cannot make the sample slow. Every node samples (the values are the same on every node:
dashboards take the max over nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from .definitions import DEPENDENCY_UP, NOTIFICATIONS_QUEUED, OUTBOX_BACKLOG, OUTBOX_OLDEST

log = logging.getLogger(__name__)

EVERY = 5.0
"""Seconds between samples."""
PROBE_TIMEOUT = 2.0
"""Seconds a dependency has to answer before it counts as down."""
CAP = 1_000_000
"""Most rows a sample counts (more shows as this many)."""

OUTBOX_QUERY = f"""
SELECT (SELECT count(*) FROM (SELECT 1 FROM user_events_pending LIMIT {CAP}) AS q) AS backlog,
       coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM user_events_pending)), 0)::float8
         AS oldest
"""  # noqa: S608 - constant SQL
_NOTIFICATIONS = f"""
SELECT count(*) FROM (SELECT 1 FROM notifications WHERE status IN ('queued', 'sending') LIMIT {CAP}) AS q
"""  # noqa: S608 - constant SQL


class SharedStateSampler:
    """Samples the gauges every ``every`` seconds (once at :meth:`start`, then in a task) until :meth:`close`."""

    def __init__(self, pool: asyncpg.Pool, *, ping_redis: Callable[[], Awaitable[object]] | None,
                 every: float = EVERY) -> None:  # fmt: skip
        self._pool = pool
        self._ping_redis = ping_redis
        self._every = every
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics-sampler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sample(self) -> None:
        """Read every gauge once; a dependency that does not answer shows as down (never raises)."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT), self._pool.acquire() as conn:
                row = await conn.fetchrow(OUTBOX_QUERY)
                queued = await conn.fetchval(_NOTIFICATIONS)
            assert row is not None
            OUTBOX_BACKLOG.set(row["backlog"])
            OUTBOX_OLDEST.set(row["oldest"])
            NOTIFICATIONS_QUEUED.set(queued)
            DEPENDENCY_UP.labels("postgres").set(1)
        except Exception as exc:  # a probe reports, it never raises
            log.debug("metrics: PostgreSQL sample failed: %s", exc)
            DEPENDENCY_UP.labels("postgres").set(0)
        if self._ping_redis is not None:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await self._ping_redis()
                DEPENDENCY_UP.labels("redis").set(1)
            except Exception as exc:
                log.debug("metrics: Redis ping failed: %s", exc)
                DEPENDENCY_UP.labels("redis").set(0)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self.sample()
