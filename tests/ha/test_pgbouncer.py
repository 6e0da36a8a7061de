"""PostgreSQL through PgBouncer in transaction mode, started here in front of the suite's PostgreSQL.

In transaction mode each transaction (or statement outside one) may run on another server connection:
named prepared statements and session-level locks do not survive from one to the next. The node's pool
goes through PgBouncer with asyncpg's statement cache off (PgBouncer is detected: ``CROUPIER_DB_PGBOUNCER``
is left unset), and everything held for a session's life goes straight to PostgreSQL on
``CROUPIER_DB_SESSION_URL``: the node's claim, the game lock, the migrator's lock. Players bet on every
round, rounds settle, every user event arrives once, and ``croupier audit`` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from server.db.instance import LOCK_KEY
from server.db.pool import DatabaseRoutes, SessionUrlMissing, behind_pooler, create_pool, database_routes
from server.rounds.lease import LOCK_CLASS
from tests.ha.players import (
    REFUSALS_EXPECTED,
    BetTry,
    Player,
    assert_audit_clean,
    assert_user_channel_whole,
    gamble,
    node_env,
    until,
)
from tests.services import PgBouncer, node_process, wait_ready, world_traversable_tempdir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

_SESSION_LOCKS = """
SELECT l.pid, coalesce(a.application_name, '') AS name, l.objsubid
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
  AND ((l.objsubid = 1 AND ((l.classid::int8 << 32) | l.objid::int8) = $1) OR (l.objsubid = 2 AND l.classid = $2))
"""
"""The node's claim (one bigint key) and its game locks (class ``CROU``), with who holds them."""
_POOLED_SESSIONS = """
SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE '% - 127.0.0.1:%'
"""
"""PostgreSQL sessions PgBouncer opened (``application_name_add_host``)."""


@pytest.fixture
def pgbouncer(pg_server_url: str) -> Iterator[PgBouncer]:
    if shutil.which("pgbouncer") is None:
        pytest.skip("pgbouncer not found: apt-get install pgbouncer (.ci/run does)")
    root = world_traversable_tempdir("croupier-test-pgbouncer-")
    bouncer = PgBouncer(pg_server_url, root, pool_mode="transaction", pool_size=4)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(root, ignore_errors=True)


def through(bouncer: PgBouncer, database_url: str) -> str:
    """``database_url``'s database, through ``bouncer``."""
    return bouncer.url(database_url.partition("?")[0].rsplit("/", 1)[1])


async def test_a_pooler_is_detected_and_the_pool_keeps_no_prepared_statements(
    pgbouncer: PgBouncer, empty_database: str
) -> None:
    pooled = through(pgbouncer, empty_database)
    assert await behind_pooler(pooled) and not await behind_pooler(empty_database)
    with pytest.raises(SessionUrlMissing, match="CROUPIER_DB_SESSION_URL"):
        await database_routes(pooled, session_url=None, pgbouncer=None)
    assert await database_routes(pooled, session_url=empty_database, pgbouncer=None) == DatabaseRoutes(
        pooled, empty_database, pgbouncer=True
    )
    assert await database_routes(empty_database, session_url=None, pgbouncer=None) == DatabaseRoutes(
        empty_database, empty_database, pgbouncer=False
    )
    # 12 clients on 4 server connections: each transaction lands on whichever is free
    pool = await create_pool(pooled, pgbouncer=True, min_size=12, max_size=12)
    try:

        async def work(i: int) -> int:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", i % 7)
                value: int = await conn.fetchval("SELECT $1::bigint * 2", i)
                return value

        assert sum(await asyncio.gather(*(work(i) for i in range(400)))) == 2 * sum(range(400))
    finally:
        await pool.close()


async def test_a_node_serves_through_pgbouncer_in_transaction_mode(
    pgbouncer: PgBouncer, empty_database: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    pooled = through(pgbouncer, empty_database)
    env = node_env(pooled, None, state, "pgb", CROUPIER_DB_SESSION_URL=empty_database,
                   CROUPIER_DB_POOL_MIN="4", CROUPIER_DB_POOL_MAX="12")  # fmt: skip
    conn = await asyncpg.connect(empty_database)
    bets: list[BetTry] = []
    stop = asyncio.Event()
    try:
        with open(tmp_path / "node.log", "ab") as log, node_process(env, output=log) as (_, port):
            await wait_ready(port)
            players = [await Player.join(port, "pgb", user) for user in range(201, 209)]
            try:
                gamblers = [asyncio.create_task(gamble(player, bets, stop)) for player in players]
                await until(lambda: len({b.round for b in bets if b.ok}) >= 5, 60, "bets taken in five rounds")
                stop.set()
                await asyncio.gather(*gamblers)
                last = max(b.round for b in bets)
                await until(lambda: all(any(m["round"] >= last for _, m in p.rounds("settled")) for p in players), 15,
                            "the last round bet on settles")  # fmt: skip
                for player in players:
                    assert await assert_user_channel_whole(player, port) >= 5
                # the locks held for a session's life are on the node's own sessions, not PgBouncer's
                holders = await conn.fetch(_SESSION_LOCKS, LOCK_KEY, LOCK_CLASS)
                assert {row["objsubid"] for row in holders} == {1, 2}, holders
                assert not [row for row in holders if " - 127.0.0.1:" in row["name"]], holders
                assert 0 < await conn.fetchval(_POOLED_SESSIONS) <= 4  # the pool's, through PgBouncer
            finally:
                for player in players:
                    with contextlib.suppress(Exception):
                        await player.close()
        answers = [b.reply.get("code", b.reply["t"]) for b in bets if not b.ok]
        assert set(answers) <= REFUSALS_EXPECTED, answers
        taken = [b.reply["bet"]["id"] for b in bets if b.ok]
        rows = await conn.fetch("SELECT status, count(*) FROM bets WHERE id = any($1::bigint[]) GROUP BY status", taken)
        assert sum(row["count"] for row in rows) == len(taken)
        assert not [row for row in rows if row["status"] == "accepted"], rows  # every bet settled
    finally:
        await conn.close()
    assert_audit_clean(empty_database, state)
