"""The feed and its relay against the real PostgreSQL, over both stores: every settled bet reaches the
boards exactly once, whichever step a relay dies after, and a rebuild from ``bets`` gives the same boards."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from server.broker.memory import MemoryBroker
from server.leaderboards import (
    Board,
    BoardChanges,
    LeaderboardRelay,
    LeaderboardStore,
    LeaderboardUnavailable,
    Planner,
    Standing,
    combine_settled_hooks,
)
from server.leaderboards.batches import apply_batch, claim_batch, finish_batch, relay_batches
from server.leaderboards.commands import run_rebuild
from server.leaderboards.lock import RelayLock
from server.leaderboards.memory import MemoryStore
from server.leaderboards.notices import NOTICES, read_notice
from server.leaderboards.rebuild import check_boards, rebuild_boards
from server.leaderboards.redisstore import RedisStore
from server.ledger import ClosedBet
from tests.leaderboards.conftest import Casino, same_boards
from tests.services import EmbeddedRedis

PLANNER = Planner(UTC)
NET_ALL = Board("all", "net", "all")


async def connect(casino: Casino) -> asyncpg.Connection:
    return await asyncpg.connect(casino.dsn)


async def test_a_settlement_writes_one_row_per_bet_won_or_lost_with_its_settled_at(casino: Casino) -> None:
    bets = await casino.play([("ann", 10, 25), ("bob", 10, 0), ("cy", 10, -1)])
    rows = await casino.feed()
    assert [(r["bet_id"], r["stake"], r["payout"], r["batch"]) for r in rows] == [(bets[0], 10, 25, None),
                                                                                   (bets[1], 10, 0, None)]  # fmt: skip
    settled = {r["id"]: r["settled_at"] for r in await casino.pool.fetch("SELECT id, settled_at FROM bets")}
    assert all(row["settled_at"] == settled[row["bet_id"]] for row in rows)  # the rebuild's period is the relay's
    assert await casino.ledger.settle([(bets[0], 25)]) == []  # settled once: no second row
    assert len(await casino.feed()) == 2


async def test_hooks_combine_in_one_transaction() -> None:
    calls: list[str] = []

    async def first(conn: Any, closed: Any) -> None:
        calls.append("first")

    async def second(conn: Any, closed: Any) -> None:
        calls.append("second")

    assert combine_settled_hooks() is None and combine_settled_hooks(None, first) is first
    both = combine_settled_hooks(first, None, second)
    assert both is not None
    await both(None, [ClosedBet(1, 2, "dice", 10, "won", 20, 0, 0)])  # type: ignore[arg-type]
    assert calls == ["first", "second"]


async def test_relayed_bets_make_the_boards_a_rebuild_makes(casino: Casino, store: LeaderboardStore) -> None:
    await casino.play([("ann", 10, 25), ("bob", 10, 0), ("cy", 5, 50)])
    await casino.play([("ann", 10, 0), ("bob", 20, 60), ("cy", 10, -1)], game="crash")
    conn = await connect(casino)
    try:
        result = await relay_batches(conn, store, PLANNER, size=2)
        assert (result.rows, result.batches, result.skipped) == (5, 3, 0)
        assert "all:net:day" in result.boards and "crash:win:week" in result.boards
        assert await casino.feed() == []
        expected = await casino.expected(time.time())
        assert same_boards(await store.dump(), expected)
        ann, bob, cy = casino.user("ann"), casino.user("bob"), casino.user("cy")
        top = await store.top(NET_ALL.at(datetime.now(UTC), UTC), 10)
        assert [(s.user_id, s.score) for s in top] == [(cy, 45), (bob, 30), (ann, 5)]
        assert await check_boards(conn, store, PLANNER) == []
        report = await rebuild_boards(conn, store, PLANNER, time.time())
        assert report.bets == 5
        assert same_boards(await store.dump(), expected)
    finally:
        await conn.close()


async def test_a_relay_that_died_after_claiming_leaves_its_batch_to_the_next(
    casino: Casino, store: LeaderboardStore
) -> None:
    await casino.play([("ann", 10, 25), ("bob", 10, 0)])
    conn = await connect(casino)
    try:
        batch = await claim_batch(conn)  # ... and the relay died here
        assert batch is not None and len(batch.bets) == 2
        await casino.play([("ann", 10, 40)])
        again = await claim_batch(conn)  # the next relay finishes the dead one's batch first, under its number
        assert again == batch
        result = await relay_batches(conn, store, PLANNER)
        assert (result.rows, result.batches, result.skipped) == (3, 2, 0)
        assert same_boards(await store.dump(), await casino.expected(time.time()))
    finally:
        await conn.close()


async def test_a_relay_that_died_after_applying_counts_nothing_twice(casino: Casino, store: LeaderboardStore) -> None:
    await casino.play([("ann", 10, 25), ("bob", 10, 0)])
    conn = await connect(casino)
    try:
        batch = await claim_batch(conn)
        assert batch is not None
        assert await apply_batch(store, batch, PLANNER, time.time()) is not None  # ... and the relay died here
        await casino.play([("bob", 10, 70)])
        result = await relay_batches(conn, store, PLANNER)  # the next relay
        assert (result.rows, result.batches, result.skipped) == (3, 2, 1)
        assert same_boards(await store.dump(), await casino.expected(time.time()))
        assert await apply_batch(store, batch, PLANNER, time.time()) is None  # once more, still nothing
        await finish_batch(conn, batch)
        assert same_boards(await store.dump(), await casino.expected(time.time()))
    finally:
        await conn.close()


async def test_a_rebuild_folds_in_every_batch_of_the_feed_whatever_its_state(
    casino: Casino, store: LeaderboardStore
) -> None:
    conn = await connect(casino)
    try:
        await casino.play([("ann", 10, 25)])
        applied = await claim_batch(conn)  # claimed and applied, not finished
        assert applied is not None and await apply_batch(store, applied, PLANNER, time.time()) is not None
        await casino.play([("bob", 10, 30)])
        assert await claim_batch(conn) == applied  # a claim takes the unfinished batch first: claim by hand
        await casino.pool.execute("UPDATE leaderboard_feed SET batch = nextval('leaderboard_batches') "
                                  "WHERE batch IS NULL")  # claimed, never applied  # fmt: skip
        await casino.play([("cy", 10, 0)])  # not claimed at all
        report = await rebuild_boards(conn, store, PLANNER, time.time())
        assert (report.bets, report.batches) == (3, 3)
        expected = await casino.expected(time.time())
        assert same_boards(await store.dump(), expected)
        result = await relay_batches(conn, store, PLANNER)  # every batch found applied: nothing twice
        assert (result.rows, result.skipped) == (3, result.batches)
        assert same_boards(await store.dump(), expected)
    finally:
        await conn.close()


class FlakyStore:
    """A store whose next apply fails as an unreachable Redis would."""

    def __init__(self, store: LeaderboardStore) -> None:
        self.inner = store
        self.fail = 1

    async def apply(self, batch: int, changes: BoardChanges) -> bool:
        if self.fail:
            self.fail -= 1
            raise LeaderboardUnavailable("leaderboards unavailable: down for the test")
        return await self.inner.apply(batch, changes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_the_relay_keeps_a_batch_the_store_refused_and_publishes_what_changed(casino: Casino) -> None:
    await casino.play([("ann", 10, 25), ("bob", 10, 0)])
    broker = MemoryBroker()
    notices: list[list[str] | None] = []
    await broker.subscribe(NOTICES, lambda _, payload: notices.append(read_notice(payload)))
    store = FlakyStore(MemoryStore())
    await store.inner.replace(BoardChanges(), [])  # built before these bets: they come through the feed
    relay = LeaderboardRelay(casino.dsn, store, broker, planner=PLANNER)
    try:
        with pytest.raises(LeaderboardUnavailable):
            await relay.run_once()
        rows = await casino.feed()
        assert len(rows) == 2 and rows[0]["batch"] is not None  # claimed, kept
        result = await relay.run_once()
        assert (result.rows, result.skipped) == (2, 0)
        assert await casino.feed() == []
        assert notices and notices[-1] is not None and "dice:net:day" in notices[-1]
        assert same_boards(await store.dump(), await casino.expected(time.time()))
        assert (await relay.run_once()).rows == 0  # nothing left: no cycle, no notice
        assert len(notices) == 1
    finally:
        await relay.close()


async def test_one_relay_works_at_a_time_and_a_rebuild_waits_for_its_turn(casino: Casino) -> None:
    await casino.play([("ann", 10, 25)])
    store = MemoryStore()
    relay = LeaderboardRelay(casino.dsn, store, MemoryBroker(), planner=PLANNER)
    other, rebuild = RelayLock(casino.dsn), RelayLock(casino.dsn)
    try:
        assert await other.try_take()
        assert (await relay.run_once()).rows == 0  # the lock is taken: this relay waits its turn
        assert not await rebuild.take(wait=0.2)
        await other.release()
        assert await rebuild.take(wait=0.2)
        assert (await relay.run_once()).rows == 0
        await rebuild.release()
        assert (await relay.run_once()).rows == 1
    finally:
        await other.close()
        await rebuild.close()
        await relay.close()


async def test_a_store_that_does_not_outlive_the_node_is_rebuilt_when_the_relay_starts(casino: Casino) -> None:
    await casino.play([("ann", 10, 25), ("bob", 10, 0)])
    first = MemoryStore()
    conn = await connect(casino)
    try:
        batch = await claim_batch(conn)
        assert batch is not None and await apply_batch(first, batch, PLANNER, time.time()) is not None
    finally:
        await conn.close()
    await casino.play([("cy", 10, 30)])
    # The node died with its boards in memory: the next one starts from nothing.
    store = MemoryStore()
    relay = LeaderboardRelay(casino.dsn, store, MemoryBroker(), planner=PLANNER, every=0.05)
    await relay.start()
    try:
        expected = await casino.expected(time.time())
        assert same_boards(await store.dump(), expected)
        for _ in range(100):  # the relay finds every batch applied and empties the feed
            if not await casino.feed():
                break
            await asyncio.sleep(0.05)
        assert await casino.feed() == []
        assert same_boards(await store.dump(), expected)
        top = await store.top(Board("dice", "net", "all").at(datetime.now(UTC), UTC), 10)
        assert top[0] == Standing(casino.user("cy"), 1, 20)
    finally:
        await relay.close()


async def test_croupier_leaderboard_rebuild_checks_and_repairs_the_boards(
    casino: Casino, redis: EmbeddedRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    await casino.play([("ann", 10, 25), ("bob", 10, 0)])
    await casino.play([("ann", 10, 0), ("bob", 20, 60)], game="crash")
    assert await run_rebuild(casino.dsn, redis.url, "UTC", check=True) == 0  # relays the feed, then compares
    assert "every board matches the settled bets" in capsys.readouterr().out
    client = aioredis.Redis.from_url(redis.url)
    try:
        await client.zincrby("croupier:lb:dice:net:all:all", 1000, str(casino.user("bob")))  # drift
        await client.zadd("croupier:lb:poker:net:all:all", {"1": 5})  # a board no bet makes
        assert await run_rebuild(casino.dsn, redis.url, "UTC", check=True) == 1
        out = capsys.readouterr().out
        assert f"lb:dice:net:all:all: user {casino.user('bob')} is 990, expected -10" in out
        assert "lb:poker:net:all:all: should not exist" in out
        assert await run_rebuild(casino.dsn, redis.url, "UTC", check=False) == 0
        assert "rebuilt 18 boards from 4 settled bets" in capsys.readouterr().out
        assert not await client.exists("croupier:lb:poker:net:all:all")
        assert await run_rebuild(casino.dsn, redis.url, "UTC", check=True) == 0
    finally:
        await client.aclose()
    assert await run_rebuild(casino.dsn, None, "UTC", check=False) == 0
    assert "nothing to rebuild" in capsys.readouterr().out


async def test_a_redis_that_lost_its_boards_is_rebuilt_by_the_relay(casino: Casino, redis: EmbeddedRedis) -> None:
    await casino.play([("ann", 10, 25), ("bob", 10, 0)])
    store = RedisStore(redis.url)
    relay = LeaderboardRelay(casino.dsn, store, MemoryBroker(), planner=PLANNER, built_check=0.0)  # every cycle
    try:
        await relay.start()  # a new Redis: the boards are built from the bets first
        assert await store.built()
        expected = await casino.expected(time.time())
        assert same_boards(await store.dump(), expected)
        client = aioredis.Redis.from_url(redis.url)
        try:
            await client.flushall()  # Redis restarted without its data
        finally:
            await client.aclose()
        assert not await store.built()
        await casino.play([("cy", 10, 40)])
        await relay.run_once()  # the boards are built again before cy's bet goes in
        assert await store.built()
        assert same_boards(await store.dump(), await casino.expected(time.time()))
        assert await casino.feed() == []
    finally:
        await relay.close()
        await store.close()
