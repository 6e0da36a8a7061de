"""One conformance suite for every broker backend (memory, Redis, Redis Cluster)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from server.broker import Broker, HistoryPolicy, broker_from_url
from tests.services import RedisClusterServers, redis_cluster_binary


@pytest.fixture(scope="module")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster for this module (redis-server from the machine)."""
    binary = redis_cluster_binary()
    if binary is None:
        pytest.skip("redis-server not found: apt-get install redis-server (.ci/run does)")
    cluster = RedisClusterServers(binary, Path(tmp_path_factory.mktemp("redis-cluster")))
    cluster.start()
    try:
        yield cluster.url()
    finally:
        cluster.stop()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    url = {"memory": None, "redis": "redis_url", "cluster": "redis_cluster_url"}[request.param]
    if url is not None:
        url = request.getfixturevalue(url)
    backend = broker_from_url(url, prefix=f"test-{secrets.token_hex(4)}:")
    yield backend
    await backend.close()


async def collect(received: list[tuple[str, bytes]], count: int) -> None:
    async with asyncio.timeout(5):
        while len(received) < count:
            await asyncio.sleep(0.005)


async def test_publish_reaches_every_subscriber_in_order(broker: Broker) -> None:
    first: list[tuple[str, bytes]] = []
    second: list[tuple[str, bytes]] = []
    sub1 = await broker.subscribe("game:crash", lambda ch, data: first.append((ch, data)))
    sub2 = await broker.subscribe("game:crash", lambda ch, data: second.append((ch, data)))
    other: list[tuple[str, bytes]] = []
    sub3 = await broker.subscribe("game:dice", lambda ch, data: other.append((ch, data)))
    for i in range(20):
        await broker.publish("game:crash", str(i).encode())
    await collect(first, 20)
    await collect(second, 20)
    assert [d for _, d in first] == [str(i).encode() for i in range(20)]
    assert first == second and all(ch == "game:crash" for ch, _ in first)
    assert other == []
    for sub in (sub1, sub2, sub3):
        await sub.close()


async def test_closed_subscription_gets_nothing_and_others_keep_theirs(broker: Broker) -> None:
    kept: list[tuple[str, bytes]] = []
    dropped: list[tuple[str, bytes]] = []
    keep = await broker.subscribe("user:1", lambda ch, data: kept.append((ch, data)))
    drop = await broker.subscribe("user:1", lambda ch, data: dropped.append((ch, data)))
    await drop.close()
    await drop.close()  # idempotent
    await broker.publish("user:1", b"x")
    await collect(kept, 1)
    assert dropped == []
    await keep.close()


async def test_a_failing_handler_does_not_stop_delivery(broker: Broker) -> None:
    received: list[tuple[str, bytes]] = []

    def explode(channel: str, data: bytes) -> None:
        raise ValueError("handler bug")

    bad = await broker.subscribe("c", explode)
    good = await broker.subscribe("c", lambda ch, data: received.append((ch, data)))
    await broker.publish("c", b"1")
    await collect(received, 1)
    await bad.close()
    await good.close()


async def test_ping_answers(broker: Broker) -> None:
    await broker.ping()


async def test_redis_broker_ping_fails_when_redis_is_away() -> None:
    from tests.services import free_port

    broker = broker_from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(Exception, match=r"(?i)connect"):
        await broker.ping()
    await broker.close()


async def test_redis_carries_events_between_nodes_exactly_once(redis_url: str) -> None:
    prefix = f"test-{secrets.token_hex(4)}:"
    node_a, node_b = broker_from_url(redis_url, prefix=prefix), broker_from_url(redis_url, prefix=prefix)
    on_a: list[tuple[str, bytes]] = []
    on_b: list[tuple[str, bytes]] = []
    sub_a = await node_a.subscribe("user:7", lambda ch, data: on_a.append((ch, data)))
    sub_b = await node_b.subscribe("user:7", lambda ch, data: on_b.append((ch, data)))
    for i in range(50):
        await node_a.publish("user:7", str(i).encode())
    await collect(on_b, 50)
    await asyncio.sleep(0.1)
    assert [d for _, d in on_a] == [d for _, d in on_b] == [str(i).encode() for i in range(50)]  # once each, in order
    for closing in (sub_a, sub_b):
        await closing.close()
    for broker in (node_a, node_b):
        await broker.close()


async def test_local_subscribers_keep_getting_events_while_redis_is_down() -> None:
    from tests.services import EmbeddedRedis

    redis = EmbeddedRedis()
    redis.start()
    broker = broker_from_url(redis.url, prefix="down:")
    received: list[tuple[str, bytes]] = []
    try:
        sub = await broker.subscribe("game:dice", lambda ch, data: received.append((ch, data)))
        redis.stop()
        await broker.publish("game:dice", b"still here")  # does not raise, does not wait for Redis
        assert received == [("game:dice", b"still here")]
        await sub.close()
    finally:
        redis.stop()
        await broker.close()


async def test_history_keeps_the_last_payloads_in_order_and_forgets_them_after_the_ttl(broker: Broker) -> None:
    kept = HistoryPolicy(size=3, ttl=60)
    for i in range(5):
        await broker.publish("game:dice", f"e{i}".encode(), history=kept)
    await broker.publish("game:dice", b"not kept")  # no policy: delivered, not kept
    await broker.publish("game:crash", b"other channel", history=kept)
    for _ in range(100):  # the Redis backend appends in the background pipeline
        if await broker.history("game:crash", 1):
            break
        await asyncio.sleep(0.01)
    assert await broker.history("game:dice", 3) == [b"e2", b"e3", b"e4"]
    assert (await broker.history("game:dice", 10))[-3:] == [b"e2", b"e3", b"e4"]
    assert await broker.history("game:dice", 1) == [b"e4"]
    assert await broker.history("game:roulette", 5) == []

    brief = HistoryPolicy(size=10, ttl=0.2)
    await broker.publish("game:brief", b"soon gone", history=brief)
    await asyncio.sleep(0.5)
    assert await broker.history("game:brief", 5) == []


async def test_history_written_by_one_node_is_read_by_another(redis_url: str) -> None:
    prefix = f"test-{secrets.token_hex(4)}:"
    writer, reader = broker_from_url(redis_url, prefix=prefix), broker_from_url(redis_url, prefix=prefix)
    try:
        for i in range(4):
            await writer.publish("game:crash", f"e{i}".encode(), history=HistoryPolicy(size=100, ttl=60))
        for _ in range(100):
            if len(await reader.history("game:crash", 10)) == 4:
                break
            await asyncio.sleep(0.01)
        assert await reader.history("game:crash", 10) == [b"e0", b"e1", b"e2", b"e3"]
    finally:
        await writer.close()
        await reader.close()


async def test_history_of_an_unreachable_redis_raises_connection_error() -> None:
    from tests.services import free_port

    down = broker_from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(ConnectionError):
            await down.history("game:crash", 5)
    finally:
        await down.close()
