"""Forward-only schema migrations: numbered SQL files applied once each, in order.

Each file ``NNNN_name.sql`` in ``server/db/migrations/`` runs in its own transaction and
is recorded in ``schema_migrations`` with a checksum. A session advisory lock makes
concurrent nodes starting at once apply each migration exactly once. An applied file
whose text changed is refused: write a new migration instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x43_52_4F_55  # "CROU": one advisory lock id for the migrator


class MigrationError(RuntimeError):
    """The migrations on disk disagree with what the database recorded."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: its version number, name, text and checksum."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with this version of Croupier, in order."""
    found = []
    for entry in resources.files("server.db").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number: {versions}")
    return found


async def migrate(conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> list[Migration]:
    """Apply every migration not yet applied; return the ones this call applied."""
    applied_now: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    INTEGER PRIMARY KEY,
                   name       TEXT NOT NULL,
                   checksum   TEXT NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        recorded = {row["version"]: row["checksum"] for row in rows}
        for migration in available():
            checksum = recorded.get(migration.version)
            if checksum is not None:
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} changed after it was applied"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration)
        newest = max(recorded, default=0)
        if newest > max((m.version for m in available()), default=0):
            raise MigrationError(f"the database is at migration {newest}, newer than this Croupier knows")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
