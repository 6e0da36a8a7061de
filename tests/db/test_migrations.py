"""Migrations apply once, in order, even when several nodes start together."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from server.db import migrations


async def test_concurrent_nodes_apply_each_migration_once(empty_database: str) -> None:
    conns = [await asyncpg.connect(empty_database) for _ in range(4)]
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


async def test_an_edited_migration_is_refused(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await migrations.migrate(conn)
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(migrations.MigrationError, match="changed after it was applied"):
            await migrations.migrate(conn)
    finally:
        await conn.close()


async def test_a_database_newer_than_the_code_is_refused(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await migrations.migrate(conn)
        await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
        with pytest.raises(migrations.MigrationError, match="newer"):
            await migrations.migrate(conn)
    finally:
        await conn.close()
