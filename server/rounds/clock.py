"""Time as the round engine sees it: a :class:`Clock` tells the time and sleeps.

Nothing in :mod:`server.rounds` reads the wall clock or calls ``asyncio.sleep`` itself: the engine
is handed a clock, and hands its ``now_ms`` to games as ``RoundContext.now_ms``. :class:`WallClock`
is the real one; the tests' ``ManualClock`` (tests/rounds/clock.py) stands still until a test moves
it, so a test plays a round step by step (colyseus injects its room clock the same way).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..clock import now_ms as wall_clock_ms


class Clock(Protocol):
    """The time (ms since the Unix epoch, as the wire counts it) and a way to wait for it to pass."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock (at once when not positive)."""
        ...


class WallClock:
    """The real clock: :func:`server.clock.now_ms` and ``asyncio.sleep``."""

    def now_ms(self) -> int:
        return wall_clock_ms()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
