"""Migrations apply once, in order, even when several nodes start together."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from server.db import migrations
from tests.services import with_database


@pytest.fixture
async def fresh_db(pg_server_url: str) -> AsyncIterator[str]:
    name = f"croupier_mig_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pg_server_url, name)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_concurrent_nodes_apply_each_migration_once(fresh_db: str) -> None:
    conns = [await asyncpg.connect(fresh_db) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrations.migrate(c) for c in conns))
        applied = [m.version for result in results for m in result]
        assert sorted(applied) == [m.version for m in migrations.available()]
        assert await migrations.migrate(conns[0]) == []
        rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in migrations.available()]
        assert await conns[0].fetchval("SELECT to_regclass('users') IS NOT NULL")
    finally:
        for conn in conns:
            await conn.close()


async def test_an_edited_migration_is_refused(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        await migrations.migrate(conn)
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(migrations.MigrationError, match="changed after it was applied"):
            await migrations.migrate(conn)
    finally:
        await conn.close()


async def test_a_database_newer_than_the_code_is_refused(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        await migrations.migrate(conn)
        await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
        with pytest.raises(migrations.MigrationError, match="newer"):
            await migrations.migrate(conn)
    finally:
        await conn.close()
