"""Limits per user across sockets and nodes: the newest sockets win, one request budget for all."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from protocol import CloseCode
from server.broker.memory import MemoryBroker
from server.broker.quota import MemoryQuota, RedisQuota
from server.edge.audience import Audience
from server.edge.feeds import BALANCE_FRESH, UserFeeds
from server.edge.userlimits import LEASE_SECONDS, UserLimits
from tests.conftest import StartNode
from tests.edge.client import authed, closed_with, recv, request
from tests.ledger.conftest import next_user_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(clock: Clock, *, max_sockets: int = 2, rate: float = 10.0, burst: int = 10) -> UserLimits:
    return UserLimits(MemoryQuota(clock), MemoryBroker(), "n1", max_sockets=max_sockets, rate=rate, burst=burst,
                      clock=clock)  # fmt: skip


async def test_the_oldest_socket_past_the_cap_is_replaced() -> None:
    closed: list[tuple[str, CloseCode]] = []
    user_limits = limits(Clock(), max_sockets=2)
    for sid in ("a", "b", "c"):
        await user_limits.admit(7, sid, lambda code, reason, sid=sid: closed.append((sid, code)))
    assert closed == [("a", CloseCode.REPLACED)]
    await user_limits.release(7, "b")
    await user_limits.admit(7, "d", lambda code, reason: closed.append(("d", code)))
    assert closed == [("a", CloseCode.REPLACED)]  # b left: c and d fit
    await user_limits.admit(8, "x", lambda code, reason: closed.append(("x", code)))
    assert len(closed) == 1  # another user's sockets are counted apart


async def test_one_request_budget_for_all_of_a_users_sockets_refilling_at_the_rate() -> None:
    clock = Clock()
    user_limits = limits(clock, rate=10.0, burst=10)
    allowed = [await user_limits.allow(7) for _ in range(15)]
    assert allowed.count(True) == 10 and allowed[-1] is False
    assert await user_limits.allow(8)  # another user has a budget of their own
    clock.now += 0.5  # five tokens back
    assert [await user_limits.allow(7) for _ in range(6)].count(True) == 5


async def test_the_node_serves_a_balance_it_confirmed_lately_and_kept_up_to_date() -> None:
    broker = MemoryBroker()
    clock = Clock()
    feeds = UserFeeds(broker, Audience(), clock=clock)

    class Quiet:
        codec = None

        def put(self, frame: object) -> bool:
            return True

        def backlog(self) -> float:
            return 0.0

    await feeds.join(5, Quiet(), offset=3)  # type: ignore[arg-type]
    assert feeds.balance(5) is None  # never read from the database on this node
    feeds.confirm_balance(5, 100, 3)
    assert feeds.balance(5) == 100
    clock.now += BALANCE_FRESH - 1
    await broker.publish("user:5", orjson.dumps({"t": "balance", "offset": 4, "balance": 90}))
    assert feeds.balance(5) == 90
    clock.now += BALANCE_FRESH - 1
    assert feeds.balance(5) == 90  # the event, written by the database, told it a moment ago
    clock.now += 1.1
    assert feeds.balance(5) is None  # not confirmed by the database for a while: ask it again
    feeds.confirm_balance(5, 95, 5)  # a write the node was not told about yet
    assert feeds.balance(5) == 95
    await broker.publish("user:5", orjson.dumps({"t": "balance", "offset": 7, "balance": 70}))  # 6 is missing
    assert feeds.balance(5) is None
    assert feeds.balance(6) is None  # not followed here


@pytest.mark.integration
async def test_redis_quota_shares_the_bucket_and_the_socket_list(redis_url: str) -> None:
    first, second = RedisQuota(redis_url, prefix="quota-test:"), RedisQuota(redis_url, prefix="quota-test:")
    user = next_user_id()
    try:
        assert await first.take_tokens(user, 6, 1.0, 10) == 6
        assert await second.take_tokens(user, 6, 1.0, 10) == 4  # the same bucket, from another node
        assert await first.take_tokens(user, 6, 1.0, 10) == 0
        assert await first.add_socket(user, "n1|a", 2) == []
        assert await second.add_socket(user, "n2|b", 2) == []
        assert await second.add_socket(user, "n2|c", 2) == ["n1|a"]
        await first.remove_socket(user, "n2|b")
        assert await first.add_socket(user, "n1|d", 2) == []
    finally:
        await first.close()
        await second.close()


async def test_a_sixth_socket_of_a_user_closes_the_first_with_4409(start_node: StartNode) -> None:
    async with start_node(max_sockets_per_user=5) as node:
        user = next_user_id()
        sockets = [(await authed(node, user))[0] for _ in range(5)]
        newest, _ = await authed(node, user)
        assert await closed_with(sockets[0]) == CloseCode.REPLACED
        for ws in (*sockets[1:], newest):
            assert (await request(ws, {"t": "ping", "id": 1}))["t"] == "pong"
            await ws.close()


async def test_sockets_are_counted_across_nodes_through_redis(start_node: StartNode, redis_url: str) -> None:
    async with start_node(redis_url=redis_url, node_id="limits-a", max_sockets_per_user=3) as a, \
            start_node(redis_url=redis_url, node_id="limits-b", max_sockets_per_user=3) as b:  # fmt: skip
        user = next_user_id()
        on_a = [(await authed(a, user))[0] for _ in range(2)]
        on_b = [(await authed(b, user))[0] for _ in range(2)]
        assert await closed_with(on_a[0]) == CloseCode.REPLACED  # the oldest, on the other node
        for ws in (on_a[1], *on_b):
            assert (await request(ws, {"t": "ping", "id": 1}))["t"] == "pong"
            await ws.close()


async def test_a_users_sockets_share_one_request_budget(start_node: StartNode) -> None:
    async with start_node(user_rate_limit=5.0, user_rate_burst=20) as node:
        user, other = next_user_id(), next_user_id()
        sockets = [(await authed(node, user))[0] for _ in range(4)]
        bystander, _ = await authed(node, other)
        for ws in sockets:
            for n in range(10):
                await ws.send(orjson.dumps({"t": "ping", "id": n}).decode())
        replies = [await recv(ws) for ws in sockets for _ in range(10)]
        limited = [r for r in replies if r["t"] == "error"]
        assert 40 - 20 - 6 <= len(limited) <= 40 - 20, len(limited)  # the burst, and a little refill meanwhile
        assert all(r["code"] == "rate_limited" and "your sockets together" in r["message"] for r in limited)
        assert (await request(bystander, {"t": "ping", "id": 1}))["t"] == "pong"
        for ws in (*sockets, bystander):
            await ws.close()


async def test_a_slow_player_costs_one_shared_bucket_call_per_lease_not_one_per_request() -> None:
    class Counting(MemoryQuota):
        calls = 0

        async def take_tokens(self, user_id: int, wanted: int, rate: float, burst: int) -> int:
            Counting.calls += 1
            return await super().take_tokens(user_id, wanted, rate, burst)

    clock = Clock()
    user_limits = UserLimits(Counting(clock), MemoryBroker(), "n1", max_sockets=5, rate=400.0, burst=400,
                             clock=clock)  # fmt: skip
    assert user_limits.lease_size == 40
    for _ in range(20):  # a request every 5 s: a bet and a cash-out a round
        assert await user_limits.allow(7)
        clock.now += 5.0
    # A lease of 40 tokens lasts LEASE_SECONDS (30), then the next request takes another: at 0, 30, 60, 90 s.
    assert LEASE_SECONDS == 30 and Counting.calls == 4


@pytest.mark.integration
async def test_a_storm_of_sign_ins_waits_its_turn_at_redis_instead_of_failing(redis_url: str) -> None:
    # 1,000 sockets at once on one node: more concurrent quota calls than redis-py's pool has connections (100)
    quota = RedisQuota(redis_url, prefix="quota-test:")
    users = [next_user_id() for _ in range(1_000)]
    try:
        evicted = await asyncio.gather(*(quota.add_socket(user, f"n1|{user}", 5) for user in users))
        granted = await asyncio.gather(*(quota.take_tokens(user, 3, 1.0, 10) for user in users))
        await asyncio.gather(*(quota.remove_socket(user, f"n1|{user}") for user in users))
    finally:
        await quota.close()
    assert evicted == [[]] * len(users)
    assert granted == [3] * len(users)
