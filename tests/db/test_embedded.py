"""The embedded PostgreSQL: starts a real server, stops it, adopts one left running."""

from __future__ import annotations

import os
import shutil
import signal

import asyncpg

from server.db.embedded import EmbeddedPostgres
from tests.services import world_traversable_tempdir


async def test_start_query_stop_and_restart_on_the_same_data() -> None:
    root = world_traversable_tempdir("croupier-embedded-")
    server = again = adopter = EmbeddedPostgres(root / "pg", fsync=False)
    try:
        dsn = server.start()
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
        await conn.close()
        pid = server.pid
        assert pid is not None
        server.stop()
        assert not os.path.exists(f"/proc/{pid}")

        again = EmbeddedPostgres(root / "pg", fsync=False)
        conn = await asyncpg.connect(again.start())
        assert await conn.fetchval("SELECT x FROM kept") == 7
        await conn.close()

        # An owner killed without cleanup leaves the server running: the next owner adopts it.
        adopter = EmbeddedPostgres(root / "pg", fsync=False)
        adopter.start()
        assert adopter.pid == again.pid
        adopter.stop()
        assert again.pid is not None and not adopter._alive(again.pid)
        again.stop()  # reaps its child; a no-op for the server itself, already gone
    finally:
        for owner in (server, again, adopter):
            if owner.pid is not None:
                os.kill(owner.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
