"""The node's asyncpg pool, without the reset round trip on every release, and the routes to PostgreSQL.

asyncpg resets a connection each time it goes back to the pool (``pg_advisory_unlock_all();
CLOSE ALL; UNLISTEN *; RESET ALL``): one more round trip per pool use, ~10% of the node's
CPU in a connect storm's profile. Nothing here leaves session state on pooled connections:
advisory locks taken through the pool are transaction-level (bets, round closes, a user's
deposits), and no code uses cursors outside transactions, LISTEN, SET or temporary tables.
An open transaction is still rolled back on release, as before.

The pool may reach PostgreSQL through PgBouncer in transaction mode (:func:`database_routes`):
each transaction may then run on another server connection, so the pool's connections keep no
named prepared statements (asyncpg's statement cache off; it then parses each statement unnamed,
in the same round of messages as its execution), and whatever must outlive a transaction goes
over the *session* DSN instead (``CROUPIER_DB_SESSION_URL``: PostgreSQL straight, or a
session-mode pool), each on a connection of its own: the node's claim on the database
(:mod:`.instance`), the game locks (:mod:`server.rounds.lease`), the migrator's lock
(:mod:`.migrations`, given the session DSN), the long-polling lease (:mod:`server.telegram.polling`),
the leaderboards' relay lock and the ledger auditor's lock (``server/metrics/ledgerhealth.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from .instance import NodeFailure

DETECT_TIMEOUT = 10.0
"""Seconds to connect once through ``DATABASE_URL`` to find out whether a pooler stands in front."""


class _NoResetConnection(asyncpg.Connection):
    def get_reset_query(self) -> str:
        return ""


async def create_pool(dsn: str, *, pgbouncer: bool = False, **options: Any) -> asyncpg.Pool:
    """``asyncpg.create_pool`` with connections that skip the session reset on release; with ``pgbouncer``
    (``dsn`` goes through a transaction-mode pooler) they use no named prepared statements."""
    if pgbouncer:
        options.setdefault("statement_cache_size", 0)
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, connection_class=_NoResetConnection, **options)
    return pool


class SessionUrlMissing(NodeFailure):
    """``DATABASE_URL`` goes through a connection pooler and no session DSN was given."""

    exit_status = 2


@dataclass(frozen=True, slots=True)
class DatabaseRoutes:
    """How a node reaches PostgreSQL."""

    dsn: str
    """The pool's: ``DATABASE_URL`` (maybe through PgBouncer in transaction mode)."""
    session_dsn: str
    """The session features': ``CROUPIER_DB_SESSION_URL``, else ``dsn``."""
    pgbouncer: bool
    """``dsn`` goes through a pooler: the pool keeps no named prepared statements."""


async def database_routes(dsn: str, *, session_url: str | None, pgbouncer: bool | None) -> DatabaseRoutes:
    """The routes of a node whose pool uses ``dsn`` (``CROUPIER_DB_PGBOUNCER`` as ``pgbouncer``; None:
    detected by :func:`behind_pooler`). Raises :class:`SessionUrlMissing` when ``dsn`` goes through a
    pooler and there is no ``session_url``: a session advisory lock taken through a transaction-mode
    pooler is held by whichever server connection ran it, not by the node, and is never released."""
    if pgbouncer is None:
        pgbouncer = await behind_pooler(dsn)
    if pgbouncer and session_url is None:
        raise SessionUrlMissing(
            "DATABASE_URL goes through a connection pooler (PgBouncer?): set CROUPIER_DB_SESSION_URL to PostgreSQL "
            "straight for the session advisory locks, or CROUPIER_DB_PGBOUNCER=0 if the pooler is in session mode"
        )
    return DatabaseRoutes(dsn, session_url or dsn, pgbouncer)


async def behind_pooler(dsn: str) -> bool:
    """Whether ``dsn`` leads to PostgreSQL through a pooler (PgBouncer, Odyssey, pgcat …).

    A pooler answers the startup with a process id of its own making (its cancel key), which is not
    the backend's ``pg_backend_pid()``; PostgreSQL itself tells the truth. One connection, without
    prepared statements, closed before returning.
    """
    conn = await asyncpg.connect(dsn, statement_cache_size=0, timeout=DETECT_TIMEOUT)
    try:
        backend: int = await conn.fetchval("SELECT pg_backend_pid()")
        return backend != conn.get_server_pid()
    finally:
        await conn.close()
