"""Redis behind Sentinel: the primary is killed while players bet, and the cluster follows the failover.

Real processes, all started here: a Redis primary and its replica, three ``redis-sentinel``, two
``croupier serve`` nodes on one database with ``REDIS_URL`` naming the Sentinels. Players on both nodes
bet on every round. The primary gets SIGKILL; the Sentinels promote the replica. What the players see
must come back within :data:`FOLLOW_WITHIN` seconds of the promotion: bets acknowledged on both nodes,
round events pushed to the node that does not drive dice (they cross Redis), a bet on one node pushed to
the same player's socket on the other; the quota and flood-gate clients follow too. Nothing a socket got
on the user channel is missing or doubled (checked against a resume with ``since``), and
``croupier audit`` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from server.broker.connect import RedisEndpoint
from server.broker.pubsub import PING_EVERY, PubSubConnection
from server.broker.quota import RedisQuota
from server.telegram.floodcontrol import FloodLimits, RedisFloodGate
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
from tests.services import EmbeddedRedis, RedisSentinels, node_process, sentinel_binaries, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SERVICE = "croupier"
FOLLOW_WITHIN = 2.0
"""Seconds after the Sentinels name the new primary by which the players must see the cluster work."""


@dataclass
class SentinelRedis:
    """A primary, its replica and three Sentinels watching them."""

    primary: EmbeddedRedis
    replica: EmbeddedRedis
    sentinels: RedisSentinels

    @property
    def url(self) -> str:
        return self.sentinels.url()

    async def primary_named(self) -> set[int]:
        """The primary's port as each Sentinel that answers names it now."""
        named: set[int] = set()
        for port in self.sentinels.ports:
            async with aioredis.Redis(port=port, socket_timeout=0.5) as sentinel:
                with contextlib.suppress(OSError, aioredis.RedisError):
                    address = await sentinel.sentinel_get_master_addr_by_name(SERVICE)
                    if address:
                        named.add(int(address[1]))
        return named


@pytest.fixture
def sentinel_redis(tmp_path: Path) -> Iterator[SentinelRedis]:
    binaries = sentinel_binaries()
    if binaries is None:
        pytest.skip("redis-sentinel not found: apt-get install redis-sentinel redis-server (.ci/run does)")
    sentinel, server = binaries
    primary = EmbeddedRedis(binary=server, logfile=tmp_path / "primary.log")
    primary.start()
    replica = EmbeddedRedis("--replicaof", "127.0.0.1", str(primary.port), binary=server,
                            logfile=tmp_path / "replica.log")  # fmt: skip
    replica.start()
    sentinels = RedisSentinels(sentinel, primary.port, tmp_path / "sentinels", service=SERVICE)
    sentinels.start()
    try:
        yield SentinelRedis(primary, replica, sentinels)
    finally:
        sentinels.stop()
        replica.stop()
        primary.stop()


async def sentinels_ready(setup: SentinelRedis) -> None:
    """Every Sentinel knows the replica and the two other Sentinels (they find each other through the
    primary within a few seconds): only then can they agree on a failover."""

    async def ready() -> bool:
        for port in setup.sentinels.ports:
            async with aioredis.Redis(port=port) as sentinel:
                state = await sentinel.sentinel_master(SERVICE)
                if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                    return False
        async with aioredis.Redis(port=setup.replica.port) as replica:
            return bool((await replica.info("replication"))["master_link_status"] == "up")

    deadline = time.monotonic() + 30
    while not await ready():
        assert time.monotonic() < deadline, "the Sentinels did not find each other and the replica within 30 s"
        await asyncio.sleep(0.2)


def first_ok(bets: list[BetTry], node: str, *, after: float, user_id: int | None = None) -> BetTry | None:
    """The first bet sent on ``node`` (by ``user_id``) after ``after`` that was acknowledged."""
    return next((b for b in bets if b.ok and b.node == node and b.sent > after and user_id in (None, b.user_id)), None)


@contextlib.asynccontextmanager
async def seated(*players: Player) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for player in players:
            await player.close()


async def test_the_subscriber_moves_when_the_sentinels_name_another_primary(sentinel_redis: SentinelRedis) -> None:
    """A failover it does not see fail (here asked for: the old primary lives on as a replica, as one cut off
    would): the pub/sub connection moves to the primary the Sentinels name, and subscribes there again."""
    setup = sentinel_redis
    await sentinels_ready(setup)
    connects: list[float] = []
    got: list[bytes] = []
    subscriber = PubSubConnection(setup.url, lambda _, data: got.append(data),
                                  lambda: connects.append(time.monotonic()))  # fmt: skip
    subscriber.subscribe(b"moves")
    subscriber.start()

    async def pubsub_clients(port: int) -> int:
        """The server's pub/sub connections but the Sentinels' own (``sentinel-<id>-pubsub``)."""
        async with aioredis.Redis(port=port) as server:
            clients = await server.client_list(_type="pubsub")
        return sum(not client.get("name", "").startswith("sentinel-") for client in clients)

    try:
        await until(lambda: connects, 10, "the subscriber connects")
        assert await pubsub_clients(setup.primary.port) == 1
        async with aioredis.Redis(port=setup.sentinels.ports[0]) as sentinel:
            await sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
        deadline = time.monotonic() + 30
        while setup.replica.port not in await setup.primary_named():
            assert time.monotonic() < deadline, "the Sentinels did not fail over within 30 s"
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 2 * PING_EVERY + 1  # it asks the Sentinels with every PING
        while await pubsub_clients(setup.replica.port) == 0:
            assert time.monotonic() < deadline, "the subscriber did not move to the new primary"
            await asyncio.sleep(0.05)
        assert len(connects) == 2
        async with aioredis.Redis(port=setup.replica.port) as new_primary:
            while not got:  # the subscription confirmed, a message published on the new primary arrives
                assert time.monotonic() < deadline, "nothing published on the new primary arrived"
                await new_primary.publish("moves", b"here")
                await asyncio.sleep(0.05)
    finally:
        await subscriber.close()


async def test_the_cluster_follows_a_sentinel_failover_with_nothing_lost(
    sentinel_redis: SentinelRedis, empty_database: str, tmp_path: Path
) -> None:
    setup = sentinel_redis
    await sentinels_ready(setup)
    state = tmp_path / "state"
    quota = RedisQuota(setup.url, prefix="ha-test:")
    gate = RedisFloodGate(setup.url, FloodLimits(rate=1000, private_limit=1000), bot_id=1, prefix="ha-test:")
    endpoint = RedisEndpoint(setup.url)
    assert await endpoint.primary() == ("127.0.0.1", setup.primary.port)
    with contextlib.ExitStack() as stack:
        ports = {}
        for name in ("a", "b"):  # a starts first: it drives dice, b hears the rounds through Redis
            log = stack.enter_context(open(tmp_path / f"{name}.log", "ab"))
            _, port = stack.enter_context(node_process(node_env(empty_database, setup.url, state, name), output=log))
            await wait_ready(port)
            ports[name] = port
        players = [await Player.join(ports[node], node, user) for node, user in
                   (("a", 101), ("a", 102), ("b", 103), ("b", 104), ("b", 101))]  # fmt: skip
        watcher = await Player.join(ports["a"], "a", 101)  # user 101's socket on a that never bets
        bets: list[BetTry] = []
        stop = asyncio.Event()
        async with seated(*players, watcher):
            gamblers = [asyncio.create_task(gamble(player, bets, stop)) for player in players]
            await until(lambda: all(sum(b.ok and b.node == n for b in bets) >= 4 for n in "ab"), 30,
                        "bets acknowledged on both nodes before the failover")  # fmt: skip
            assert await quota.take_tokens(1, 1, 100.0, 100) == 1
            assert await gate.take(1) is None

            setup.primary.kill()
            killed = time.monotonic()
            switched = 0.0
            while not switched:
                assert time.monotonic() - killed < 30, "the Sentinels did not promote the replica within 30 s"
                if setup.replica.port in await setup.primary_named():
                    switched = time.monotonic()
                await asyncio.sleep(0.02)
            follow_by = switched + FOLLOW_WITHIN

            async def quota_back() -> float:
                while True:
                    with contextlib.suppress(Exception):
                        await quota.take_tokens(2, 1, 100.0, 100)
                        await gate.take(2)
                        return time.monotonic()
                    await asyncio.sleep(0.02)

            clients_back = asyncio.create_task(quota_back())
            for node in "ab":
                await until(lambda n=node: first_ok(bets, n, after=switched), 15,
                            f"a bet sent on node {node} after the failover acknowledged")  # fmt: skip
            # b does not drive dice: its sockets hear rounds only through Redis, from the new primary
            on_b = [p for p in players if p.node == "b"]
            await until(lambda: all(p.rounds("betting", after=switched) for p in on_b), 15,
                        "round events reach node b's sockets again")  # fmt: skip
            # a bet user 101 makes on b reaches their socket on a through Redis
            await until(lambda: first_ok(bets, "b", after=switched, user_id=101), 15, "user 101's bet on b taken")
            bet_on_b = first_ok(bets, "b", after=switched, user_id=101)
            assert bet_on_b is not None
            pushed = await until(lambda: any(m["t"] == "balance" and m["ref"] == bet_on_b.reply["bet"]["id"]
                                             for m in watcher.user_events()), 15,
                                 "a bet on b pushed to the player's socket on a")  # fmt: skip
            back = await asyncio.wait_for(clients_back, 15)

            acknowledged = {n: min(b.answered for b in bets if b.ok and b.node == n and b.sent > switched)
                            for n in "ab"}  # fmt: skip
            first_round_on_b = min(p.rounds("betting", after=switched)[0][0] for p in on_b)
            seen = {"bet on a": acknowledged["a"], "bet on b": acknowledged["b"], "rounds on b": first_round_on_b,
                    "b -> a push": pushed, "quota and flood gate": back}  # fmt: skip
            late = {what: round(at - switched, 2) for what, at in seen.items() if at > follow_by}
            assert not late, f"seconds after the promotion ({switched - killed:.1f} s after the kill): {late}"
            assert await endpoint.primary() == ("127.0.0.1", setup.replica.port)

            # the game goes on: every bet is answered, refusals only for rounds that closed meanwhile
            await until(lambda: sum(b.ok and b.sent > follow_by for b in bets) >= 10, 30, "ten more bets")
            stop.set()
            await asyncio.gather(*gamblers)
            answers = [b.reply.get("code", b.reply["t"]) for b in bets if not b.ok]
            assert set(answers) <= REFUSALS_EXPECTED, answers
            last = max(b.round for b in bets)
            await until(lambda: any(m["round"] >= last for p in players for _, m in p.rounds("settled")), 15,
                        "the last round bet on settles")  # fmt: skip
            for player in [*players, watcher]:
                await assert_user_channel_whole(player, ports[player.node])
    await quota.close()
    await gate.close()
    await endpoint.aclose()
    assert_audit_clean(empty_database, state)
