"""The relay: settled bets from the feed (``leaderboard_feed``, :mod:`.feed`) onto the boards, each exactly once.

Every node runs a :class:`LeaderboardRelay`; one at a time works (:class:`~.lock.RelayLock`). A cycle,
under the lock, repeats three steps until the feed is empty (or a second has passed):

1. **claim** (:func:`~.batches.claim_batch`): a batch a relay claimed before and never finished (it died) comes
   first, under its own number; else up to ``batch`` unclaimed rows get a new batch number from
   ``leaderboard_batches``, committed, before anything is applied;
2. **apply** (:func:`~.batches.apply_batch`): the batch's changes (:class:`~.boards.Planner`) go to the store with
   the batch number as the guard: the store applies a batch whole and once (Redis: one Lua script that
   sets ``lb:batch:<n>`` with ``NX`` and changes the boards only if it was not set);
3. **finish** (:func:`~.batches.finish_batch`): the batch's rows are deleted.

A relay that dies after 1 leaves a batch the next one applies; after 2, a batch whose second apply is a
no-op; a lost or doubled win is impossible either way. While the store does not answer, the batch stays
claimed and is tried again. After a cycle that changed boards, the relay publishes a notice on the broker
(:mod:`.notices`) so every node pushes the boards its sockets watch.

Boards never built whole in their store (a node alone starting with an empty in-process store; a new Redis,
or one that lost its data) are rebuilt from PostgreSQL (:func:`~.rebuild.rebuild_boards`) before any batch
goes into it: when the relay starts, and whenever a cycle finds them missing (checked every
:data:`BUILT_CHECK` seconds). So deploying leaderboards onto a database with history, or losing Redis's
data, needs no ``croupier leaderboard rebuild``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg

from ..broker import Broker
from ..db import UNAVAILABLE_ERRORS
from .batches import BATCH_SIZE, CycleResult, relay_batches
from .boards import Planner
from .lock import RelayLock
from .notices import NOTICES, notice
from .rebuild import rebuild_boards
from .store import LeaderboardStore, LeaderboardUnavailable

log = logging.getLogger(__name__)

EVERY = 0.25
"""Seconds between two looks at the feed."""
BUILT_CHECK = 5.0
"""Seconds between two looks at whether the store still holds built boards."""
_PENDING = "SELECT EXISTS (SELECT 1 FROM leaderboard_feed)"
_FAILURES: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, asyncpg.PostgresError)
"""What pauses the relay: PostgreSQL, or the store (``LeaderboardUnavailable`` is a ``ConnectionError``)."""


class LeaderboardRelay:
    """This node's relay (see the module's docstring): :meth:`start`, then :meth:`close`.

    ``dsn``: the node's session DSN (the lock's connection, :mod:`.lock`); ``broker`` carries the notices."""

    def __init__(self, dsn: str, store: LeaderboardStore, broker: Broker, *, planner: Planner,
                 clock: Callable[[], float] = time.time, batch: int = BATCH_SIZE, every: float = EVERY,
                 built_check: float = BUILT_CHECK) -> None:  # fmt: skip
        self._lock = RelayLock(dsn)
        self._store = store
        self._broker = broker
        self._planner = planner
        self._clock = clock
        self._batch = batch
        self._every = every
        self._built_check = built_check
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._built_checked = 0.0
        self.relayed = 0
        """Rows this node's relay applied (or found applied)."""

    async def start(self) -> None:
        """Build the boards if the store never had them (see the module's docstring), then relay in the
        background. A store that does not answer now is looked at again by the relay's cycles."""
        try:
            if not await self._lock.take(wait=30):
                raise RuntimeError("the leaderboards' relay lock stayed taken for 30 s")
            try:
                await self._ensure_built()
            finally:
                await self._lock.release()
        except LeaderboardUnavailable as exc:
            log.warning("leaderboards not checked at start (the relay retries): %s", exc)
        self._task = asyncio.create_task(self._run(), name="leaderboard-relay")

    async def close(self) -> None:
        """Stop now: a cycle cut short leaves its batch claimed, and the next relay (any node's) finishes it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._lock.close()

    async def run_once(self) -> CycleResult:
        """One cycle: if the feed holds rows and the lock is free, relay them; publish a notice of the boards
        changed. Raises what PostgreSQL or the store raised (the lock is let go)."""
        check = time.monotonic() - self._built_checked >= self._built_check
        if not (check or await self._pending()) or not await self._lock.try_take():
            return CycleResult()
        try:
            if check:
                await self._ensure_built()
            result = await relay_batches(self._lock.conn, self._store, self._planner, clock=self._clock,
                                         size=self._batch)  # fmt: skip
        finally:
            with contextlib.suppress(*_FAILURES):
                await self._lock.release()
        self.relayed += result.rows
        if result.boards:
            try:
                await self._broker.publish(NOTICES, notice(sorted(result.boards)))
            except ConnectionError as exc:  # the boards changed anyway; watchers re-read within their refresh
                log.warning("leaderboard notice not published: %s", exc)
        return result

    async def _ensure_built(self) -> None:
        """Rebuild the boards if the store lacks them (holding the lock)."""
        if not await self._store.built():
            report = await rebuild_boards(self._lock.conn, self._store, self._planner, self._clock())
            log.info("leaderboards built from %d settled bets (%d boards)", report.bets, report.boards)
        self._built_checked = time.monotonic()

    async def _pending(self) -> bool:
        try:
            return bool(await (await self._lock.connection()).fetchval(_PENDING))
        except BaseException:
            self._lock.drop()
            raise

    async def _run(self) -> None:
        pause = self._every
        while True:
            await asyncio.sleep(pause)
            try:
                await self.run_once()
                pause = self._every
                if self._failing:
                    self._failing = False
                    log.info("leaderboard relay working again")
            except asyncio.CancelledError:
                raise
            except _FAILURES as exc:
                pause = min(pause * 2, 5.0)
                if not self._failing:
                    self._failing = True
                    log.warning("leaderboard relay paused (retrying): %s", exc)
            except Exception:  # a fault of ours: logged, and the feed keeps what was not finished
                pause = 5.0
                log.exception("leaderboard relay cycle failed")
