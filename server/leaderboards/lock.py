"""The relay's turn: one PostgreSQL advisory lock, so one relay (or one rebuild) works on the boards at a time.

Every node runs a relay; each cycle it takes the lock if it is free (:meth:`RelayLock.try_take`), relays
what the feed holds, and releases it, so a rebuild (``croupier leaderboard rebuild``, which waits for it
with :meth:`RelayLock.take`) gets its turn between two cycles. The lock is a session lock on a connection
of its own, to ``dsn``: the node's session DSN (straight to PostgreSQL or through a session-mode pool,
never a transaction-mode pooler: see :mod:`server.db.pool`). The relay's statements run on the same
connection. If the connection drops, PostgreSQL releases the lock and another node's relay goes on.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

LOCK_CLASS = 0x4C425244
"""Advisory lock namespace "LBRD" (the second key is 1)."""


class RelayLock:
    """The leaderboards' advisory lock on a connection of its own (opened when first needed)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self.held = False

    @property
    def conn(self) -> asyncpg.Connection:
        """The lock's connection (while :attr:`held`): run the relay's statements on it."""
        assert self._conn is not None and self.held, "the relay lock is not held"
        return self._conn

    async def connection(self) -> asyncpg.Connection:
        """The lock's connection, opened if it is not (held or not): for a look at the feed before a turn."""
        if self._conn is None or self._conn.is_closed():
            self.held = False
            self._conn = await asyncpg.connect(self._dsn)
        return self._conn

    async def try_take(self) -> bool:
        """Take the lock if it is free; False when another relay holds it. Raises when PostgreSQL does not
        answer (the connection is dropped; the next call opens a new one)."""
        try:
            conn = await self.connection()
            if not self.held:
                self.held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, 1)", LOCK_CLASS))
            return self.held
        except BaseException:
            self.drop()
            raise

    async def take(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for the lock (a relay holds it for a cycle at most); False if it
        stayed taken."""
        deadline = time.monotonic() + wait
        while not await self.try_take():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def release(self) -> None:
        """Let another relay have its turn (a lost connection has released it already)."""
        if self._conn is None or not self.held:
            return
        try:
            await self._conn.execute("SELECT pg_advisory_unlock($1, 1)", LOCK_CLASS)
            self.held = False
        except BaseException:
            self.drop()
            raise

    def drop(self) -> None:
        """Forget the connection at once (PostgreSQL releases the lock with it)."""
        if self._conn is not None:
            self._conn.terminate()
        self._conn = None
        self.held = False

    async def close(self) -> None:
        """Release the lock and close the connection."""
        if self._conn is not None:
            try:
                await self._conn.close(timeout=2)
            except Exception:  # a connection a cancelled cycle left busy, or gone: PostgreSQL releases the lock
                self._conn.terminate()
        self._conn = None
        self.held = False
