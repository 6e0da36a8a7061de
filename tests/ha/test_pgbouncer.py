"""PostgreSQL through PgBouncer in transaction mode, started here in front of the suite's PostgreSQL.

In transaction mode each transaction (or statement outside one) may run on another server connection:
named prepared statements and session-level locks do not survive from one to the next. The node's pool
goes through PgBouncer with asyncpg's statement cache off (PgBouncer is detected: ``CROUPIER_DB_PGBOUNCER``
is left unset), and everything held for a session's life goes straight to PostgreSQL on
``CROUPIER_DB_SESSION_URL``: the node's claim, the game lock, the migrator's lock, the ledger auditor's lock.
Players bet on every round, rounds settle, every user event arrives once, and ``croupier audit`` passes. Of
two nodes behind the same PgBouncer exactly one runs the incremental ledger audit, and the other takes over
when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from server.db.instance import LOCK_KEY
from server.db.pool import DatabaseRoutes, SessionUrlMissing, behind_pooler, create_pool, database_routes
from server.metrics.ledgerhealth import LOCK_CLASS as AUDIT_LOCK_CLASS
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
from tests.metrics.scrape import Scrape, scrape
from tests.services import EmbeddedRedis, PgBouncer, node_process, wait_ready, world_traversable_tempdir

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
_AUDIT_LOCK = """
SELECT coalesce(a.application_name, '') AS name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
  AND l.objsubid = 2 AND l.classid = $1 AND l.objid = 1
"""
"""Who holds the ledger auditor's lock (``pg_try_advisory_lock(AUDT, 1)``), by session name."""


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


async def test_one_node_of_two_audits_the_ledger_and_the_other_takes_over_when_it_stops(
    pgbouncer: PgBouncer, empty_database: str, redis: EmbeddedRedis, tmp_path: Path
) -> None:
    pooled = through(pgbouncer, empty_database)

    def env(node: str) -> dict[str, str]:
        return node_env(pooled, redis.url, tmp_path / node, node, CROUPIER_DB_SESSION_URL=empty_database,
                        CROUPIER_DB_POOL_MIN="2", CROUPIER_DB_POOL_MAX="8", CROUPIER_LEDGER_AUDIT_INTERVAL="0.3",
                        CROUPIER_HANDOVER_SECONDS="1")  # fmt: skip

    conn = await asyncpg.connect(empty_database)
    stop_signing_in = asyncio.Event()
    users = iter(range(5001, 10_000))

    async def sign_ins(ports: list[int]) -> None:
        """A new user on each node every 0.1 s: each is a welcome credit, a ledger transaction to audit."""
        while not stop_signing_in.is_set():
            for port in list(ports):
                with contextlib.suppress(Exception):
                    await (await Player.join(port, "audit", next(users))).close()
            await asyncio.sleep(0.1)

    async def audits(port: int) -> bool:
        """Whether the node on ``port`` runs the audit and found the ledger whole (the gauge is only made by
        the auditing node), having checked transactions."""
        found = await scrape(port)
        return found.value("croupier_ledger_audit_checked_transactions_total") > 0 and _ok(found) == 1.0

    try:
        with contextlib.ExitStack() as nodes:
            processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
            for name in ("audit-a", "audit-b"):  # one after the other, as the other cluster tests start them
                log = nodes.enter_context(open(tmp_path / f"{name}.log", "ab"))
                processes[name] = nodes.enter_context(node_process(env(name), output=log, stop_grace=15))
                await wait_ready(processes[name][1], attempts=1200)  # a busy machine starts two nodes slowly
            ports = {name: port for name, (_, port) in processes.items()}
            live = list(ports.values())
            signing = asyncio.create_task(sign_ins(live))
            try:
                deadline = time.monotonic() + 30
                auditors: list[str] = []
                while not auditors and time.monotonic() < deadline:
                    auditors = [name for name, port in ports.items() if await audits(port)]
                    await asyncio.sleep(0.2)
                assert len(auditors) == 1, auditors
                first = auditors[0]
                (other,) = set(ports) - {first}
                # Several intervals later still one auditor: the standby never ran a pass (no gauge at all), and
                # the lock is held by the auditor's own session on PostgreSQL, not by a PgBouncer connection.
                await asyncio.sleep(2)
                assert await audits(ports[first])
                assert "croupier_ledger_audit_ok" not in (await scrape(ports[other])).samples
                assert [row["name"] for row in await conn.fetch(_AUDIT_LOCK, AUDIT_LOCK_CLASS)] == [
                    f"croupier audit {first}"
                ]

                # The auditor stops (SIGTERM: it drains and exits); the other takes the lock and audits.
                process = processes[first][0]
                process.terminate()
                live.remove(ports[first])
                await asyncio.get_running_loop().run_in_executor(None, process.wait, 30)
                await until_async(lambda: audits(ports[other]), 30, f"{other} audits after {first} stopped")
                assert [row["name"] for row in await conn.fetch(_AUDIT_LOCK, AUDIT_LOCK_CLASS)] == [
                    f"croupier audit {other}"
                ]
            finally:
                stop_signing_in.set()
                await signing
    finally:
        await conn.close()
    assert_audit_clean(empty_database, tmp_path / "audit-check")


def _ok(found: Scrape) -> float | None:
    """``croupier_ledger_audit_ok`` in ``found``, or None when the node has not made it (it never audited)."""
    samples = found.samples.get("croupier_ledger_audit_ok")
    return None if not samples else samples[0][1]


async def until_async(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.2 s until it is true; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.2)
