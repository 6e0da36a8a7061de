"""The broker's own pub/sub connection: order, reconnects, silent partitions, AUTH, bad URLs."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis

from server.broker.pubsub import PubSubConnection
from tests.services import EmbeddedRedis, PartitionableProxy


async def until(condition: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_messages_arrive_in_order_and_only_on_followed_channels(redis_url: str) -> None:
    channel = f"test-{secrets.token_hex(4)}".encode()
    got: list[tuple[bytes, bytes]] = []
    connection = PubSubConnection(redis_url, lambda ch, data: got.append((ch, data)), lambda: None)
    connection.subscribe(channel)
    connection.start()
    await connection.connected.wait()
    publisher = aioredis.Redis.from_url(redis_url)
    for _ in range(50):  # SUBSCRIBE is confirmed asynchronously: publish until one arrives
        if await publisher.publish(channel, b"probe"):
            break
        await asyncio.sleep(0.02)
    await until(lambda: (channel, b"probe") in got)  # delivered, not only published (CI: it came after the clear)
    got.clear()
    async with publisher.pipeline(transaction=False) as pipe:
        for i in range(1000):
            pipe.publish(channel, str(i).encode())
            pipe.publish(channel + b"-other", b"not followed")
        await pipe.execute()
    await until(lambda: len(got) >= 1000)
    assert got == [(channel, str(i).encode()) for i in range(1000)]
    connection.unsubscribe(channel)
    await asyncio.sleep(0.1)
    await publisher.publish(channel, b"after")
    await asyncio.sleep(0.1)
    assert len(got) == 1000
    await connection.close()
    await publisher.aclose()


async def test_a_silent_partition_is_noticed_and_healed_with_a_resubscribe() -> None:
    server = EmbeddedRedis()
    server.start()
    proxy = PartitionableProxy(server.port)
    await proxy.start()
    got: list[bytes] = []
    connects: list[float] = []
    connection = PubSubConnection(
        f"redis://127.0.0.1:{proxy.port}/0",
        lambda _, data: got.append(data),
        lambda: connects.append(asyncio.get_running_loop().time()),
        ping_every=0.2,
    )
    publisher = aioredis.Redis.from_url(server.url)
    try:
        connection.subscribe(b"c")
        connection.start()
        await until(lambda: len(connects) == 1)
        proxy.partition()  # nothing passes, nothing is closed: only the missing PONGs tell
        await asyncio.sleep(1.5)
        assert not connection.connected.is_set()  # it gave up on the silent connection
        proxy.heal()
        await until(lambda: len(connects) >= 2)
        for _ in range(100):
            if await publisher.publish("c", b"after the partition"):
                break
            await asyncio.sleep(0.02)
        await until(lambda: b"after the partition" in got)
    finally:
        await connection.close()
        await publisher.aclose()
        await proxy.close()
        server.stop()


async def test_a_password_in_the_url_is_sent_with_auth() -> None:
    server = EmbeddedRedis("--requirepass", "s3cret")
    server.start()
    got: list[bytes] = []
    url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
    connection = PubSubConnection(url, lambda _, data: got.append(data), lambda: None)
    publisher = aioredis.Redis.from_url(url)
    try:
        connection.subscribe(b"c")
        connection.start()
        await connection.connected.wait()
        for _ in range(100):
            if await publisher.publish("c", b"authenticated"):
                break
            await asyncio.sleep(0.02)
        await until(lambda: got == [b"authenticated"])
    finally:
        await connection.close()
        await publisher.aclose()
        server.stop()


def test_a_url_that_is_not_redis_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="REDIS_URL must start with redis://"):
        PubSubConnection("http://127.0.0.1:6379", lambda _, __: None, lambda: None)


async def test_a_burst_is_handed_on_over_several_loop_turns(redis_url: str) -> None:
    """A thousand messages in one read must not hold the event loop for all of them."""
    channel = f"test-{secrets.token_hex(4)}".encode()
    turns = 0
    at_turn: list[int] = []
    connection = PubSubConnection(redis_url, lambda _, __: at_turn.append(turns), lambda: None)
    connection.subscribe(channel)
    connection.start()
    await connection.connected.wait()
    publisher = aioredis.Redis.from_url(redis_url)
    for _ in range(50):
        if await publisher.publish(channel, b"probe"):
            break
        await asyncio.sleep(0.02)
    await until(lambda: len(at_turn) == 1)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    at_turn.clear()
    async with publisher.pipeline(transaction=False) as pipe:
        for _ in range(1000):
            pipe.publish(channel, b"x" * 100)
        await pipe.execute()
    await until(lambda: len(at_turn) == 1000)
    counter.cancel()
    assert len(set(at_turn)) >= 1000 // 64  # at most 64 messages per loop turn
    await connection.close()
    await publisher.aclose()
