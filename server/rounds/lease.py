"""Who drives a game: its advisory lock, and the lease token that fences the driver's writes.

One node drives each game: the node holding the game's PostgreSQL advisory lock
(:class:`GameLocks`; the others stand by and retry). A node taking a game takes its lease
(:func:`take_lease`): a fencing token greater than every earlier one, in ``game_leases``
(migration 0004). Every write to a round (open, close betting, settle) checks the token in its
own transaction (:func:`fence_game`, :func:`fence_round`), so a driver that lost its lock without
noticing cannot change a round: its write raises :class:`StaleLease` and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from ..db.transactions import Connection

log = logging.getLogger(__name__)

LOCK_CLASS = 0x43524F55
"""Advisory lock namespace "CROU" of the game locks; the game name's hash is the second key."""


class StaleLease(Exception):
    """This node's lease on a game was taken over: its write was refused and nothing changed."""


async def take_lease(pool: asyncpg.Pool, game: str, holder: str) -> int:
    """Become ``game``'s driver: a new fencing token, greater than every earlier one.

    Call it only while holding the game's advisory lock. Waits for writes fenced by the
    previous token that are in flight; any later one fails with :class:`StaleLease`.
    """
    token: int = await pool.fetchval(
        "INSERT INTO game_leases (game, token, holder) VALUES ($1, 1, $2) ON CONFLICT (game) DO UPDATE "
        "SET token = game_leases.token + 1, holder = EXCLUDED.holder, acquired_at = now() RETURNING token",
        game,
        holder,
    )
    return token


async def fence_game(conn: Connection, game: str, token: int) -> None:
    """Refuse the caller's transaction unless ``token`` is the game's current lease token.

    ``FOR SHARE`` on the lease row: a takeover (which updates the row) waits for this transaction,
    and every transaction after the takeover sees the new token.
    """
    current = await conn.fetchval("SELECT token FROM game_leases WHERE game = $1 FOR SHARE", game)
    if current != token:
        raise StaleLease(f"{game}: lease token {token} is stale (current {current})")


async def fence_round(conn: Connection, round_id: int, token: int) -> None:
    """:func:`fence_game` for the game of ``round_id``."""
    game = await conn.fetchval("SELECT game FROM rounds WHERE id = $1", round_id)
    await fence_game(conn, game, token)


class GameLocks:
    """The advisory locks of the games this node drives, all on one dedicated connection.

    If the connection drops, PostgreSQL releases every lock on it and another node may take the
    games over: this node then holds none, and each of its drivers starts over as a standby.

    ``dsn`` is the node's session DSN (``CROUPIER_DB_SESSION_URL``, else ``DATABASE_URL``; see
    :mod:`server.db.pool`): PostgreSQL straight or a session-mode pool, never a transaction-mode
    pooler, which would run the lock on a server connection the node does not keep.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._held: set[str] = set()
        self._guard = asyncio.Lock()

    async def hold(self, game: str) -> bool:
        """True while this node holds ``game``'s lock (taking it when free); False when another node
        holds it or PostgreSQL cannot be reached."""
        async with self._guard:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._held.clear()
                    self._conn = await asyncpg.connect(self._dsn)
                if game in self._held:
                    await self._conn.fetchval("SELECT 1")  # still connected: the lock is still ours
                    return True
                if await self._conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS, game):
                    self._held.add(game)
                    return True
                return False
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("round lock for %s unavailable: %s", game, exc)
                self._forget()
                return False

    async def drop(self) -> None:
        """Give up every lock of this node at once (they are taken again, one by one, if still free)."""
        async with self._guard:
            self._forget()

    async def close(self) -> None:
        """Release the locks and the connection."""
        async with self._guard:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
            self._conn = None
            self._held.clear()

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
        self._conn = None
        self._held.clear()
