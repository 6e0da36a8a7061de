"""One conformance suite for every broker backend (memory, Redis)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from server.broker import Broker, broker_from_url


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    url = None if request.param == "memory" else request.getfixturevalue("redis_url")
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
