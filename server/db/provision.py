"""The database a node or a ``croupier`` command runs on: ``DATABASE_URL``, or the embedded PostgreSQL.

:func:`running_database` gives the DSN, starting the embedded server when no URL is set (and
stopping it on exit when this process owns it); :func:`migrate_schema` brings the schema up to
date. ``Node.open`` and the CLI's commands both go through these two (the node claims the
database between them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from .embedded import EmbeddedPostgres, default_pg_data_dir
from .migrations import Migration, migrate


@dataclass(frozen=True, slots=True)
class Database:
    """Where this process's data lives."""

    dsn: str
    embedded: EmbeddedPostgres | None
    """The embedded server when ``DATABASE_URL`` is not set (started, found running or adopted)."""

    @property
    def description(self) -> str:
        """For people: ``DATABASE_URL``, or the embedded server's data dir."""
        if self.embedded is None:
            return "DATABASE_URL"
        return f"embedded, data in {self.embedded.data_dir}"


@asynccontextmanager
async def running_database(database_url: str | None, data_dir: Path, *,
                           take_over: bool = True) -> AsyncIterator[Database]:  # fmt: skip
    """``database_url`` as given, or the embedded PostgreSQL of the state folder ``data_dir``.

    The embedded server is started unless it runs already. On exit it is stopped only if this
    process owns it: it started it, or adopted it from a dead owner (``take_over``); a server
    another live process started (a running node) is left running. Raises
    :class:`~server.db.embedded.EmbeddedPostgresError` when it cannot start.
    """
    if database_url is not None:
        yield Database(database_url, None)
        return
    embedded = EmbeddedPostgres(default_pg_data_dir(data_dir))
    dsn = await asyncio.to_thread(embedded.start, take_over=take_over)
    try:
        yield Database(dsn, embedded)
    finally:
        await asyncio.to_thread(embedded.stop)


async def migrate_schema(target: str | asyncpg.Pool) -> list[Migration]:
    """Apply the pending migrations (advisory-locked: concurrent callers apply each once) over one
    connection: a new one to the DSN ``target``, or one of the pool ``target``. Returns those applied.

    The lock is a session lock: behind a transaction-mode pooler give the session DSN
    (``CROUPIER_DB_SESSION_URL``), not the pool (see :mod:`.pool`)."""
    if isinstance(target, str):
        conn = await asyncpg.connect(target)
        try:
            return await migrate(conn)
        finally:
            await conn.close()
    async with target.acquire() as pooled:
        return await migrate(pooled)
