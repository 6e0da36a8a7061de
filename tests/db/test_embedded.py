"""The embedded PostgreSQL: starts a real server, stops it, and stops only a server it owns.

The process that started the server owns it; another process on the same data dir uses it and
leaves it running. A server whose owner died (killed without cleanup) is adopted by the next
process that asks to take it over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from server.db.embedded import EmbeddedPostgres
from tests.services import alive, world_traversable_tempdir

OWNER = """
import sys, time
from pathlib import Path
from server.db.embedded import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]), fsync=False)
server.start()
print(server.pid, flush=True)
time.sleep(600)
"""
"""A process that starts the server and then waits to be killed (its server stays running)."""


def remove(root: Path) -> None:
    """Kill whatever server a failed test left running on ``root / "pg"``, then delete ``root``."""
    try:
        pid = int((root / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        pid = None
    if pid is not None and alive(pid):
        with contextlib.suppress(OSError):
            if b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


async def answers(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT true"))
    finally:
        await conn.close()


async def test_start_query_stop_and_restart_on_the_same_data() -> None:
    root = world_traversable_tempdir("croupier-embedded-")
    server = again = EmbeddedPostgres(root / "pg", fsync=False)
    try:
        dsn = server.start()
        assert server.owns
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
        again.stop()
    finally:
        for started in (server, again):
            started.stop()
        remove(root)


async def test_a_server_whose_owner_runs_is_used_and_left_running() -> None:
    root = world_traversable_tempdir("croupier-embedded-")
    owner = guest = EmbeddedPostgres(root / "pg", fsync=False)
    try:
        owner.start()
        for take_over in (True, False):  # a node (take_over), an admin command (not): neither may stop it
            guest = EmbeddedPostgres(root / "pg", fsync=False)
            dsn = guest.start(take_over=take_over)
            assert guest.pid == owner.pid and not guest.owns
            assert await answers(dsn)
            guest.stop()
            assert owner.is_running(), f"take_over={take_over}: stopped a server another process owns"
            assert await answers(owner.dsn)
        pid = owner.pid
        assert pid is not None
        owner.stop()
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        guest.stop()
        owner.stop()
        remove(root)


async def test_a_server_whose_owner_was_killed_is_adopted_only_by_who_takes_it_over() -> None:
    root = world_traversable_tempdir("croupier-embedded-")
    guest = adopter = EmbeddedPostgres(root / "pg", fsync=False)
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(root / "pg")], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).parents[2])  # fmt: skip
    try:
        assert owner.stdout is not None
        postmaster = int(owner.stdout.readline())
        owner.kill()  # without cleanup: its server keeps running, ownerless
        owner.wait()

        guest = EmbeddedPostgres(root / "pg", fsync=False)
        guest.start(take_over=False)  # an admin command uses it and leaves it
        assert guest.pid == postmaster and not guest.owns
        guest.stop()
        assert alive(postmaster)

        adopter = EmbeddedPostgres(root / "pg", fsync=False)
        assert await answers(adopter.start())  # a node adopts it: it stops it when it stops
        assert adopter.pid == postmaster and adopter.owns
        adopter.stop()
        assert not alive(postmaster)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        remove(root)
