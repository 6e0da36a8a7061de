"""Redis pub/sub broker: events cross nodes through one Redis (or Valkey) server.

A publish is delivered to this node's own subscribers at once (they never wait on Redis, and
keep getting events while Redis is down) and sent to Redis for the other nodes; each node
drops the copies of its own messages that come back. Publishes made in the same event-loop
turn go to Redis in one pipeline. One pub/sub connection per node carries every channel this
node has local subscribers for (read by :mod:`server.broker.pubsub`); the first local
subscriber of a channel subscribes upstream, the last one leaving unsubscribes. Channel names
are prefixed so several deployments can share a server. Delivery to other nodes is at most
once: events published while Redis is down are lost to them (resume from history covers the
gap). A channel's history is a Redis stream (``<prefix><channel>:history``) trimmed to the
policy's size, expiring after its TTL; the publisher appends to it in the same pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis

from ..metrics import PUBLISH_FAILURES, PUBLISHED, RECEIVED, RECONNECTS
from ._fanout import LocalFanout, LocalSubscription
from .base import Handler, HistoryPolicy
from .connect import RedisEndpoint
from .pubsub import PubSubConnection

log = logging.getLogger(__name__)
_PUBLISHED, _FAILURES = PUBLISHED["redis"], PUBLISH_FAILURES["redis"]
MAX_OUTGOING = 100_000
SUBSCRIBE_WAIT = 2.0


class Subscriber(Protocol):
    """The upstream side a Redis broker reads from: :class:`~.pubsub.PubSubConnection`, or on a cluster
    :class:`~.cluster.ShardedSubscriber`."""

    connected: asyncio.Event

    def start(self) -> None:
        """Connect (in the background) and stay connected until :meth:`close`."""

    def subscribe(self, channel: bytes) -> asyncio.Future[None]:
        """Follow ``channel``; the future is done once the server confirmed it."""
        ...

    def unsubscribe(self, channel: bytes) -> None:
        """Stop following ``channel``."""

    async def close(self) -> None:
        """Disconnect for good."""


class RedisBroker:
    """Broker backed by Redis PUBLISH/SUBSCRIBE, on one server or the primary Sentinels name (``url``:
    see :mod:`.connect`; after a failover both the publisher and the subscriber go to the new primary)."""

    _unavailable: tuple[type[Exception], ...] = (aioredis.ConnectionError, aioredis.TimeoutError, OSError)
    """What a command raises when Redis cannot take it now (not a bug of ours)."""

    def __init__(self, url: str, *, prefix: str = "croupier:") -> None:
        self._endpoint = RedisEndpoint(url)
        self._client: aioredis.Redis = self._endpoint.client(socket_timeout=5)
        self._prefix = prefix
        self._skip = len(prefix.encode())
        self._subscriber: Subscriber = self._make_subscriber()
        self._was_connected = False
        self._tried_connecting = False
        self._fanout = LocalFanout(on_first=self._upstream_subscribe, on_last=self._upstream_unsubscribe)
        self._origin = secrets.token_bytes(8)  # prefixes what this node sends, to recognise it coming back
        self._outgoing: list[tuple[str, bytes, HistoryPolicy | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._on_resume: list[Callable[[], None]] = []

    async def publish(self, channel: str, payload: bytes, history: HistoryPolicy | None = None) -> None:
        await self._fanout.deliver(channel, payload)
        if len(self._outgoing) >= MAX_OUTGOING:
            del self._outgoing[: MAX_OUTGOING // 10]
            _FAILURES.n += MAX_OUTGOING // 10
            log.warning("redis is not keeping up: dropped the oldest %d outgoing events", MAX_OUTGOING // 10)
        self._outgoing.append((self._upstream(channel), self._origin + payload, history))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="redis-broker-publisher")

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the rest of this loop turn publish too: one pipeline for all
        while self._outgoing:
            batch, self._outgoing = self._outgoing, []
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for channel, data, history in batch:
                        self._send(pipe, channel, data)
                        if history is not None:  # the payload without the origin: what a reader replays
                            key = self._history_key(channel)
                            pipe.xadd(key, {"p": data[8:]}, maxlen=history.size, approximate=True)
                            pipe.pexpire(key, int(history.ttl * 1000))
                    await pipe.execute()
                _PUBLISHED.n += len(batch)
            except self._unavailable as exc:
                _FAILURES.n += len(batch)
                log.warning("redis publish of %d events failed: %s", len(batch), exc)

    async def publish_batch(self, messages: list[tuple[str, bytes]]) -> None:
        for channel, payload in messages:
            await self._fanout.deliver(channel, payload)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, payload in messages:
                    self._send(pipe, self._upstream(channel), self._origin + payload)
                await pipe.execute()
            _PUBLISHED.n += len(messages)
        except self._unavailable as exc:
            _FAILURES.n += len(messages)
            raise ConnectionError(f"redis did not take {len(messages)} events: {exc}") from exc

    async def history(self, channel: str, count: int) -> list[bytes]:
        if count <= 0:
            return []
        try:
            entries = await self._client.xrevrange(self._history_key(self._upstream(channel)), count=count)
        except self._unavailable as exc:
            raise ConnectionError(f"redis history of {channel} unavailable: {exc}") from exc
        kept: list[bytes] = []
        for _, fields in reversed(entries or []):
            payload = (fields or {}).get(b"p")
            if isinstance(payload, bytes):
                kept.append(payload)
        return kept

    def _make_subscriber(self) -> Subscriber:
        """The upstream reader (overridden for a cluster)."""
        return PubSubConnection(self._endpoint, self._received, self._connected)

    def _upstream(self, channel: str) -> str:
        """The Redis channel of ``channel``: under the prefix."""
        return self._prefix + channel

    def _local(self, upstream: bytes) -> str:
        """The channel of a Redis channel :meth:`_upstream` made."""
        return upstream[self._skip :].decode()

    @staticmethod
    def _send(pipe: Any, upstream: str, data: bytes) -> None:
        """Queue the publish of ``data`` on the Redis channel ``upstream`` in ``pipe``."""
        pipe.publish(upstream, data)

    @staticmethod
    def _history_key(prefixed_channel: str) -> str:
        return prefixed_channel + ":history"

    async def subscribe(self, channel: str, handler: Handler) -> LocalSubscription:
        return await self._fanout.add(channel, handler)

    def on_resume(self, callback: Callable[[], None]) -> None:
        self._on_resume.append(callback)

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flusher, 2)
        await self._subscriber.close()
        await self._endpoint.aclose()

    async def _upstream_subscribe(self, channel: str) -> None:
        confirmation = self._subscriber.subscribe(self._upstream(channel).encode())
        self._subscriber.start()
        if not self._tried_connecting:  # the node is starting: give the first connection a chance
            self._tried_connecting = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscriber.connected.wait(), SUBSCRIBE_WAIT)
        if not self._subscriber.connected.is_set():
            return  # Redis is down: the subscription is made on reconnect (and on_resume tells who lost what)
        try:  # from here on, nothing published on the channel is missed
            await asyncio.wait_for(asyncio.shield(confirmation), SUBSCRIBE_WAIT)
        except TimeoutError:
            log.warning("redis did not confirm the subscription to %s within %.0f s", channel, SUBSCRIBE_WAIT)

    async def _upstream_unsubscribe(self, channel: str) -> None:
        self._subscriber.unsubscribe(self._upstream(channel).encode())

    def _connected(self) -> None:
        if self._was_connected:  # connected again: what other nodes published meanwhile is lost here
            RECONNECTS.n += 1
            for callback in self._on_resume:
                callback()
        self._was_connected = True

    def _received(self, channel: bytes, data: bytes) -> None:
        if data[:8] == self._origin:
            return  # our own message, already delivered here when it was published
        RECEIVED.n += 1
        self._fanout.deliver_now(self._local(channel), data[8:])
