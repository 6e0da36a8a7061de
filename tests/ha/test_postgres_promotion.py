"""PostgreSQL's primary dies and its replica is promoted while players bet; the nodes follow.

Real processes, all started here: a PostgreSQL primary (``initdb``), a replica copied from it with
``pg_basebackup`` and streaming from it synchronously (``synchronous_standby_names = '*'``: a commit is
acknowledged once the replica has it), a Redis, and two ``croupier serve`` nodes whose ``DATABASE_URL``
lists both servers with ``target_session_attrs=read-write``. Players on both nodes bet on every round.
The primary gets SIGKILL; once both nodes say they are not ready, the replica is promoted (what Patroni
or an operator does); the nodes' pools and session connections (claim, game lock) find the new primary
by themselves. Every bet that was acknowledged is on the new primary and settled, every socket's user
channel is whole, and ``croupier audit`` passes there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

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
from tests.services import EmbeddedRedis, PostgresProcess, node_process, wait_ready, world_traversable_tempdir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DATABASE = "croupier"


@pytest.fixture
def replicated_postgres() -> Iterator[tuple[PostgresProcess, PostgresProcess]]:
    """A primary with the database, and a replica streaming from it (not yet synchronous)."""
    import shutil

    root = world_traversable_tempdir("croupier-test-replica-")
    primary, replica = PostgresProcess(root, "primary"), PostgresProcess(root, "replica")
    try:
        primary.init_primary()
        primary.start()
        replica.init_replica(primary)
        replica.start()
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


async def streaming_synchronously(primary: PostgresProcess) -> None:
    """Create the database, wait for the replica to stream, then make every commit wait for it."""
    conn = await asyncpg.connect(primary.url())
    try:
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        deadline = time.monotonic() + 30
        while not await conn.fetchval("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"):
            assert time.monotonic() < deadline, "the replica did not start streaming within 30 s"
            await asyncio.sleep(0.1)
        await conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await conn.execute("SELECT pg_reload_conf()")
        while await conn.fetchval("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") == 0:
            assert time.monotonic() < deadline, "the replica did not become synchronous"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def until_not_ready(port: int) -> None:
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + 15
        while (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "a node still says it is ready 15 s after its database died"
            await asyncio.sleep(0.05)


async def test_the_nodes_follow_a_promoted_replica_and_lose_nothing_acknowledged(
    replicated_postgres: tuple[PostgresProcess, PostgresProcess], redis: EmbeddedRedis, tmp_path: Path
) -> None:
    primary, replica = replicated_postgres
    await streaming_synchronously(primary)
    dsn = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{replica.port}/{DATABASE}"
           "?target_session_attrs=read-write")  # fmt: skip
    state = tmp_path / "state"
    bets: list[BetTry] = []
    stop = asyncio.Event()
    with contextlib.ExitStack() as stack:
        ports = {}
        for name in ("a", "b"):
            log = stack.enter_context(open(tmp_path / f"{name}.log", "ab"))
            _, port = stack.enter_context(node_process(node_env(dsn, redis.url, state, name), output=log))
            await wait_ready(port)
            ports[name] = port
        players = [await Player.join(ports[node], node, user) for node, user in
                   (("a", 301), ("a", 302), ("b", 303), ("b", 301))]  # fmt: skip
        try:
            gamblers = [asyncio.create_task(gamble(player, bets, stop)) for player in players]
            await until(lambda: all(sum(b.ok and b.node == n for b in bets) >= 4 for n in "ab"), 30,
                        "bets acknowledged on both nodes before the primary dies")  # fmt: skip
            primary.kill()
            killed = time.monotonic()
            for node in "ab":  # the operator promotes once the nodes have noticed: they answer 503, not ready
                await until_not_ready(ports[node])
            replica.promote()
            promoted = time.monotonic()
            for node in "ab":
                await until(lambda n=node: any(b.ok and b.node == n and b.sent > promoted for b in bets), 30,
                            f"a bet on node {node} acknowledged by the new primary")  # fmt: skip
            back = max(min(b.answered for b in bets if b.ok and b.node == n and b.sent > promoted) for n in "ab")
            await until(lambda: sum(b.ok and b.sent > back for b in bets) >= 8, 30, "eight more bets")
            stop.set()
            await asyncio.gather(*gamblers)
            last = max(b.round for b in bets)
            await until(lambda: all(any(m["round"] >= last for _, m in p.rounds("settled")) for p in players), 20,
                        "the last round bet on settles")  # fmt: skip
            for player in players:
                await assert_user_channel_whole(player, ports[player.node])
        finally:
            for player in players:
                with contextlib.suppress(Exception):
                    await player.close()
    # during the switch a bet may be refused as unavailable (nothing written); never anything else
    answers = [b.reply.get("code", b.reply["t"]) for b in bets if not b.ok]
    assert set(answers) <= REFUSALS_EXPECTED | {"unavailable"}, answers
    assert promoted - killed < 30
    acknowledged = {b.reply["bet"]["id"]: b for b in bets if b.ok}
    conn = await asyncpg.connect(replica.url(DATABASE))
    try:
        assert not await conn.fetchval("SELECT pg_is_in_recovery()")
        rows = await conn.fetch("SELECT id, status FROM bets WHERE id = any($1::bigint[])", list(acknowledged))
    finally:
        await conn.close()
    assert {row["id"] for row in rows} == set(acknowledged), "an acknowledged bet is missing on the new primary"
    assert not [row for row in rows if row["status"] == "accepted"], "a bet was left unsettled"
    assert_audit_clean(dsn, state)
