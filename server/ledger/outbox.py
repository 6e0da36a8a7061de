"""The outbox: user events committed with their money reach every node, at least once.

``user_events`` is written by this module only. The ledger's operations write each user event
into it in the transaction that moves the money (:func:`store_events`, or :func:`insert_events_sql`
inside the bet batch's single statement), and hand the events to :meth:`OutboxRelay.announce`
after the commit. The relay publishes them on their user's channel at once and then marks them
relayed. An event is unrelayed while its key is in ``user_events_pending`` (written with it; marking
deletes it: an in-place flag could not be updated without a new row version, migration 0022). If the
node dies between commit and publish, or the broker does not take the events, the pending rows stay
and the sweeper (on every node, rows claimed with ``SKIP LOCKED`` so two nodes
never relay one row at once) publishes them after a grace period. A user event can therefore
arrive twice; its ``offset`` (the wallet version) tells the copies apart, and the edge's
``UserFeeds`` drops the second. The table is also the user channel's history: :meth:`OutboxRelay.missed`
serves ``auth`` with ``since``; relayed rows older than the retention are pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from ..broker import Broker
from ..db.transactions import Connection
from ..metrics import RELAY_SECONDS, SWEPT
from .events import UserEvent, user_channel

log = logging.getLogger(__name__)


def insert_events_sql(user_ids: str, offsets: str, payloads: str) -> str:
    """Common table expressions writing events into the outbox from three array parameters, given by
    placeholder (``"$6"``): user ids, offsets and payloads. Each event is written to ``user_events`` and,
    unrelayed until the relay deletes it, to ``user_events_pending``. For a statement that writes the events
    with the money: ``WITH {insert_events_sql(...)}, ... <its own statement>``."""
    columns = f"{user_ids}::bigint[], {offsets}::bigint[]"
    return (
        f'outbox_events AS (INSERT INTO user_events (user_id, "offset", payload) '  # noqa: S608 - placeholders only
        f"SELECT * FROM unnest({columns}, {payloads}::bytea[])), "
        f'outbox_pending AS (INSERT INTO user_events_pending (user_id, "offset") SELECT * FROM unnest({columns}))'
    )


_STORE = f"WITH {insert_events_sql('$1', '$2', '$3')} SELECT"


async def store_events(conn: Connection, events: list[UserEvent]) -> None:
    """Write ``events`` into the outbox, in the caller's transaction (they are announced after its commit)."""
    if events:
        await conn.execute(_STORE, [e.user_id for e in events], [e.offset for e in events], [e.payload for e in events])


# Relayed: the pending rows go (an event swept and relayed by another node meanwhile matches nothing).
_MARK = """
DELETE FROM user_events_pending p
USING unnest($1::bigint[], $2::bigint[]) AS e(user_id, "offset")
WHERE p.user_id = e.user_id AND p."offset" = e."offset"
"""

_CLAIM = """
SELECT e.user_id, e."offset", e.payload FROM user_events_pending p
JOIN user_events e ON e.user_id = p.user_id AND e."offset" = p."offset"
WHERE p.created_at < now() - make_interval(secs => $1)
ORDER BY p.created_at, p.user_id, p."offset" LIMIT $2
FOR UPDATE OF p SKIP LOCKED
"""

_MISSED = """
SELECT payload FROM user_events WHERE user_id = $1 AND "offset" > $2 AND "offset" <= $3 ORDER BY "offset"
"""

_AFTER = """
SELECT e.user_id, e."offset", e.payload
FROM user_events e JOIN unnest($1::bigint[], $2::bigint[]) AS w(user_id, floor)
  ON e.user_id = w.user_id AND e."offset" > w.floor
ORDER BY e.user_id, e."offset"
"""

_PRUNE = """
DELETE FROM user_events e WHERE e.created_at < now() - make_interval(secs => $1)
AND NOT EXISTS (SELECT FROM user_events_pending p WHERE p.user_id = e.user_id AND p."offset" = e."offset")
"""


CLOSE_GRACE = 2.0
"""Seconds :meth:`OutboxRelay.close` gives the announced events to be published, and then marked."""


async def _finish(task: asyncio.Task[None] | None) -> None:
    """Let ``task`` run to its end for up to :data:`CLOSE_GRACE` seconds (it is not cancelled here)."""
    if task is not None and not task.done():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), CLOSE_GRACE)


class OutboxRelay:
    """Publishes committed user events to the broker and sweeps up those left behind."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: Broker,
        *,
        grace: float = 2.0,
        sweep_every: float = 1.0,
        retention: float = 300.0,
        batch: int = 1000,
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._grace = grace
        self._sweep_every = sweep_every
        self._retention = retention
        self._batch = batch
        self._pending: list[UserEvent] = []
        self._pending_since = 0.0  # when the oldest pending event was announced (the relay lag's start)
        self._publisher: asyncio.Task[None] | None = None
        self._relayed: list[UserEvent] = []  # published, their pending rows not yet deleted
        self._marker: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.swept = 0
        """Events this node published from the sweep (their first relay had failed)."""

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="outbox-sweeper")

    async def close(self) -> None:
        """Publish what was announced and mark it (briefly), then stop; anything left is swept by another node."""
        await _finish(self._publisher)
        await _finish(self._marker)  # read after the publisher finished: publishing starts the marker
        for task in (self._publisher, self._marker, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def announce(self, events: list[UserEvent]) -> None:
        """The ledger's hook: ``events`` were committed; publish them soon (never blocks).

        They go out in the next loop turn, with everything else announced in this one. The bets' batcher
        announces right after it resolved the bettors' acks, so with the in-process broker a bettor's
        ``balance`` push reaches its socket in the turn its ``bet_ok`` does, and the two leave in one write
        (``server.edge.wsprotocol``'s cork). Deleting the pending rows is a separate task (:meth:`_mark_relayed`),
        so a publish never waits for the mark of the one before."""
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.extend(events)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_pending(), name="outbox-publisher")

    async def _publish_pending(self) -> None:
        while self._pending:
            events, self._pending, since = self._pending, [], self._pending_since
            try:
                await self._broker.publish_batch([(user_channel(e.user_id), e.payload) for e in events])
            except ConnectionError as exc:
                log.warning("%d user events not relayed now (the sweeper retries): %s", len(events), exc)
                continue
            RELAY_SECONDS.observe(time.monotonic() - since)
            self._relayed.extend(events)
            if self._marker is None or self._marker.done():
                self._marker = asyncio.create_task(self._mark_relayed(), name="outbox-marker")

    async def _mark_relayed(self) -> None:
        """Delete the pending rows of the events published so far, one statement for all of them at a time."""
        while self._relayed:
            events, self._relayed = self._relayed, []
            try:
                await self._pool.execute(_MARK, [e.user_id for e in events], [e.offset for e in events])
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Published but not marked: the sweeper publishes them again, the copies are dropped by offset.
                log.warning("could not mark %d user events relayed: %s", len(events), exc)

    async def sweep(self, *, grace: float | None = None) -> int:
        """Publish events left unrelayed for ``grace`` seconds; return how many went out."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, self._grace if grace is None else grace, self._batch)
            if not rows:
                return 0
            # Raises ConnectionError when the broker is down: the transaction rolls back, the rows stay.
            await self._broker.publish_batch([(user_channel(r["user_id"]), r["payload"]) for r in rows])
            await conn.execute(_MARK, [r["user_id"] for r in rows], [r["offset"] for r in rows])
        self.swept += len(rows)
        SWEPT.n += len(rows)
        log.info("relayed %d user events left behind", len(rows))
        return len(rows)

    async def prune(self) -> None:
        """Forget relayed events older than the retention."""
        await self._pool.execute(_PRUNE, self._retention)

    async def missed(self, user_id: int, after: int, upto: int) -> list[bytes] | None:
        """The user's events with offsets ``after`` < offset <= ``upto``, oldest first; None when the
        history no longer holds all of them (the client starts again from the welcome's balance)."""
        if after > upto:
            return None
        if after == upto:
            return []
        rows = await self._pool.fetch(_MISSED, user_id, after, upto)
        if len(rows) != upto - after:
            return None
        return [row["payload"] for row in rows]

    async def events_after(self, floors: dict[int, int]) -> list[tuple[int, int, bytes]]:
        """(user id, offset, payload) of every kept event above each user's floor offset, in order."""
        rows = await self._pool.fetch(_AFTER, list(floors), list(floors.values()))
        return [(row["user_id"], row["offset"], row["payload"]) for row in rows]

    async def _sweep_loop(self) -> None:
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(self._sweep_every)
            try:
                while await self.sweep() == self._batch:
                    pass
                if time.monotonic() - last_prune > min(60.0, self._retention / 2):
                    last_prune = time.monotonic()
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except (ConnectionError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox sweep failed (retrying): %s", exc)
