"""Redis pub/sub broker: events cross nodes through one Redis (or Valkey) server.

One pub/sub connection per node carries every channel this node has local subscribers
for; the first local subscriber of a channel subscribes upstream, the last one leaving
unsubscribes. Channel names are prefixed so several deployments can share a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

from ._fanout import LocalFanout, LocalSubscription
from .base import Handler

log = logging.getLogger(__name__)


class RedisBroker:
    """Broker backed by Redis PUBLISH/SUBSCRIBE."""

    def __init__(self, url: str, *, prefix: str = "croupier:") -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._prefix = prefix
        self._fanout = LocalFanout(on_first=self._upstream_subscribe, on_last=self._upstream_unsubscribe)
        self._reader: asyncio.Task[None] | None = None

    async def publish(self, channel: str, payload: bytes) -> None:
        await self._client.publish(self._prefix + channel, payload)

    async def subscribe(self, channel: str, handler: Handler) -> LocalSubscription:
        return await self._fanout.add(channel, handler)

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._client.aclose()

    async def _upstream_subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(self._prefix + channel)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="redis-broker-reader")

    async def _upstream_unsubscribe(self, channel: str) -> None:
        await self._pubsub.unsubscribe(self._prefix + channel)

    async def _read(self) -> None:
        skip = len(self._prefix)
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                log.warning("redis broker connection lost; retrying")
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            await self._fanout.deliver(name[skip:], message["data"])
