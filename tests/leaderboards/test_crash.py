"""A real ``croupier serve`` killed with SIGKILL while players play: after a restart the boards hold every
settled win once (none lost, none twice), and ``croupier leaderboard rebuild`` makes the same boards.

With Redis the boards outlive the node, and the kill lands mid-relay on purpose, in each of its two windows:

- ``claimed``: Redis holds writes (``CLIENT PAUSE … WRITE``) until the relay has claimed a batch of settled
  bets and sent its script, and the node is killed with the script in flight (Redis drops a dead client's
  waiting command, or runs it: either way the batch must count once);
- ``applied``: a trigger makes the feed's ``DELETE`` sleep, and the node is killed once its batch is in
  Redis (the guard is set) and not yet deleted from the feed.

On the in-process broker the kill lands at a random point of play and the restarted node rebuilds the
boards from PostgreSQL. The same windows are played step by step in ``test_relay.py``."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from server.leaderboards import Board
from server.leaderboards.redisstore import RedisStore
from server.node import Node
from tests.leaderboards.conftest import same_boards
from tests.leaderboards.players import Player, expected_boards, expected_reply, listed
from tests.services import EmbeddedRedis, clean_env, node_process, wait_ready

pytestmark = pytest.mark.skipif("leaderboards" not in Node.__dataclass_fields__,
                                reason="server/node.py does not open the leaderboards yet")  # fmt: skip

TOKEN = "1:abcdefghijklmnop"
BOARDS = [Board("dice", "net", "day"), Board("all", "net", "all"), Board("dice", "win", "week")]
NAMES = ("Ann", "Bob", "Cy", "Di", "Ed")


async def count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def settled_bets(dsn: str) -> int:
    return await count(dsn, "SELECT count(*) FROM bets WHERE status IN ('won', 'lost')")


async def held_after_claiming(redis_url: str, dsn: str) -> None:
    """Hold Redis's writes until the relay has claimed a batch (its script waits in Redis)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.client_pause(20_000, all=False)  # CLIENT PAUSE 20000 WRITE
    finally:
        await client.aclose()
    deadline = time.monotonic() + 15
    while not await count(dsn, "SELECT count(*) FROM leaderboard_feed WHERE batch IS NOT NULL"):
        assert time.monotonic() < deadline, "the relay claimed no batch"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # the script is sent, and waits


async def held_after_applying(redis_url: str, dsn: str) -> int:
    """Make the feed's deletes sleep until the relay has applied a batch (its guard is in Redis); its number."""
    conn = await asyncpg.connect(dsn)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await conn.execute(_STALL)
        deadline = time.monotonic() + 15
        while True:
            batch = await conn.fetchval("SELECT min(batch) FROM leaderboard_feed")
            if batch is not None and await client.exists(f"croupier:lb:batch:{batch}"):
                return int(batch)
            assert time.monotonic() < deadline, "the relay applied no batch"
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()
        await conn.close()


_STALL = """
CREATE FUNCTION stall_feed_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
CREATE TRIGGER stall_feed_deletes BEFORE DELETE ON leaderboard_feed
    FOR EACH STATEMENT EXECUTE FUNCTION stall_feed_deletes();
"""


async def unstall(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TRIGGER stall_feed_deletes ON leaderboard_feed; DROP FUNCTION stall_feed_deletes()")
    finally:
        await conn.close()


async def unpause(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.client_unpause()
    finally:
        await client.aclose()


def croupier(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


async def boards_shown(port: int, user_id: int) -> list[list[tuple[int, int, int | None, int | None]]]:
    player = Player(f"ws://127.0.0.1:{port}/ws", TOKEN, user_id, "Reader")
    await player.connect()
    try:
        return [listed(await player.request({"t": "leaderboard", "game": board.scope, "metric": board.metric,
                                             "period": board.period, "limit": 100})) for board in BOARDS]  # fmt: skip
    finally:
        await player.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("window", ["claimed", "applied", "memory"])
async def test_a_board_survives_a_kill_9_mid_relay_and_equals_the_rebuilt_one(
    empty_database: str, tmp_path: Path, window: str, request: pytest.FixtureRequest
) -> None:
    redis: EmbeddedRedis | None = request.getfixturevalue("redis") if window != "memory" else None
    env = clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=empty_database, CROUPIER_DATA_DIR=str(tmp_path / "state"),
                    CROUPIER_GAMES="dice", CROUPIER_BETTING_MS="300", CROUPIER_ROUND_PAUSE_MS="0",
                    CROUPIER_WELCOME_CREDIT="100000", CROUPIER_SEED_CHAIN_LENGTH="200",
                    **({"REDIS_URL": redis.url} if redis else {}))  # fmt: skip
    users = [4_200_000 + n for n in range(len(NAMES))]
    with node_process(env) as (node, port):
        await wait_ready(port)
        players = [
            Player(f"ws://127.0.0.1:{port}/ws", TOKEN, user, name) for user, name in zip(users, NAMES, strict=True)
        ]
        for player in players:
            await player.connect()
        play = asyncio.gather(*(player.play(rounds=1000) for player in players))
        deadline = time.monotonic() + 60
        while await settled_bets(empty_database) < 20:
            assert time.monotonic() < deadline, "the players' bets did not settle"
            await asyncio.sleep(0.1)
        if redis is None:
            await asyncio.sleep(random.uniform(0.0, 1.5))  # somewhere in a round: betting, running, settling, relaying
        elif window == "claimed":
            await held_after_claiming(redis.url, empty_database)
        else:
            batch = await held_after_applying(redis.url, empty_database)
        node.kill()
        node.wait()
        if window == "claimed":
            assert redis is not None
            await unpause(redis.url)
        elif window == "applied":
            await unstall(empty_database)  # once the dead node's sleeping DELETE has given up
            assert await count(empty_database, f"SELECT count(*) FROM leaderboard_feed WHERE batch = {batch}")
        await play  # the players stop when their sockets drop
    before = await settled_bets(empty_database)
    with node_process(env) as (node, port):
        await wait_ready(port)
        players = [
            Player(f"ws://127.0.0.1:{port}/ws", TOKEN, user, name) for user, name in zip(users, NAMES, strict=True)
        ]
        for player in players:
            await player.connect()
        await asyncio.gather(*(player.play(rounds=3) for player in players))
        assert await settled_bets(empty_database) > before
        deadline = time.monotonic() + 20
        while True:  # the relay has caught up when the feed is empty and the boards shown are PostgreSQL's
            expected = await expected_boards(empty_database)
            shown = await boards_shown(port, users[0])
            feed = await count(empty_database, "SELECT count(*) FROM leaderboard_feed")
            if feed == 0 and shown == [expected_reply(expected, board, 100) for board in BOARDS]:
                break
            assert time.monotonic() < deadline, f"boards never matched the bets: {shown} ({feed} rows in the feed)"
            await asyncio.sleep(0.3)
        for player in players:
            await player.close()
    if redis is None:
        assert "nothing to rebuild" in croupier(env, "leaderboard", "rebuild").stdout
        return
    store = RedisStore(redis.url)
    try:
        relayed = await store.dump()
        assert same_boards(relayed, expected)
        checked = croupier(env, "leaderboard", "rebuild", "--check")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "every board matches the settled bets" in checked.stdout
        rebuilt = croupier(env, "leaderboard", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert f"from {await settled_bets(empty_database)} settled bets" in rebuilt.stdout
        assert same_boards(await store.dump(), relayed)
    finally:
        await store.close()
