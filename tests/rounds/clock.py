"""A clock that moves only when a test says so, for the round engine (see :mod:`server.rounds.clock`)."""

from __future__ import annotations

import asyncio


class ManualClock:
    """A clock that moves only when told to (:meth:`set`, :meth:`advance`), for tests.

    A sleeper wakes when the clock reaches the time it sleeps until; moving the clock wakes every
    sleeper due, in the order they fell asleep. :meth:`until_asleep` waits until someone sleeps, so a
    test can move the clock exactly when the code under test waits for it.
    """

    def __init__(self, now_ms: int) -> None:
        self._now = now_ms
        self._sleepers: list[tuple[int, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    def now_ms(self) -> int:
        return self._now

    async def sleep(self, seconds: float) -> None:
        wake_at = self._now + round(seconds * 1000)
        if wake_at <= self._now:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sleeper = (wake_at, woken)
        self._sleepers.append(sleeper)
        self._changed.set()
        try:
            await woken
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    @property
    def sleepers(self) -> int:
        """How many coroutines sleep on this clock now."""
        return len(self._sleepers)

    def set(self, now_ms: int) -> None:
        """Make it ``now_ms`` (also earlier than now) and wake every sleeper due."""
        self._now = now_ms
        for sleeper in [s for s in self._sleepers if s[0] <= now_ms]:
            self._sleepers.remove(sleeper)
            if not sleeper[1].done():
                sleeper[1].set_result(None)

    def advance(self, ms: int) -> None:
        """Move the clock ``ms`` forward, waking every sleeper due."""
        self.set(self._now + ms)

    async def until_asleep(self, count: int = 1) -> None:
        """Return once at least ``count`` coroutines sleep on this clock."""
        while len(self._sleepers) < count:
            self._changed.clear()
            await self._changed.wait()
