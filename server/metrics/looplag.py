"""Event-loop lag: how late the loop runs a timer, the time every socket waits when the loop is busy.

A task sleeps :data:`EVERY` seconds and observes by how much it overslept. A loop held by a long
synchronous step (a burst of broadcasts, a big JSON encode, a garbage collection of a large heap)
shows here before it shows as latency anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from .definitions import LOOP_LAG

EVERY = 0.25
"""Seconds between samples."""


class LoopLagProbe:
    """Samples the running loop's lag into ``croupier_event_loop_lag_seconds`` until :meth:`close`."""

    def __init__(self, *, every: float = EVERY, observe: Callable[[float], None] = LOOP_LAG.observe) -> None:
        self._every = every
        self._observe = observe
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics-loop-lag")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self._every)
            self._observe(max(0.0, time.perf_counter() - started - self._every))
