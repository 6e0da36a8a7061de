"""The subscriber side of the Redis broker: one pub/sub connection, parsed by hiredis in C.

redis-py's pub/sub reader costs a coroutine, a timeout and a dict per message; measured here
it tops out near 40,000 messages/s before the node does any work (docs/performance.md). This
connection is an :class:`asyncio.Protocol`: bytes from the socket go to hiredis's reader, and
complete ``message``s are handed to ``on_message`` synchronously, in order, up to 64 per loop
turn (reading pauses while more wait, so a burst cannot hold the event loop).

It keeps itself connected: after a drop (or a silent partition, found by PINGs that get no
answer) it reconnects every half second, subscribes again to every channel it follows, and
calls ``on_connected`` so the broker can tell its users that deliveries may have been lost.
With a Sentinel URL (:mod:`.connect`) each connection goes to the primary the Sentinels name at
that moment, and the Sentinels are asked again with every PING: when they name another primary
(a failover this connection did not see fail, as when the old primary is cut off but alive), the
connection is dropped and made again to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

import hiredis

from .connect import RedisEndpoint

log = logging.getLogger(__name__)

PING_EVERY = 2.0
"""Seconds between PINGs; a connection that answers nothing for three of them is dropped."""
RETRY_EVERY = 0.5
BATCH = 64
"""Messages handed on per event-loop turn."""


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PubSubConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.answered = asyncio.Event()
        self.paused = False
        self.heard = asyncio.get_running_loop().time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.heard = asyncio.get_running_loop().time()
        self.answered.set()
        self.reader.feed(data)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand on up to :data:`BATCH` messages; if more are waiting, stop reading the socket and come
        back in the next loop turn (one burst fanned out to thousands of sockets must not hold the loop)."""
        on_message = self.owner.on_message
        self.heard = asyncio.get_running_loop().time()  # still working through what Redis sent
        for _ in range(BATCH):
            reply = self.reader.gets()
            if reply is False:
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return
            if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                on_message(reply[1], reply[2])
            elif type(reply) is list and len(reply) == 3 and reply[0] == b"subscribe":
                self.owner.confirmed(reply[1])
            elif isinstance(reply, hiredis.ReplyError):
                log.warning("redis pub/sub: %s", reply)
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._dispatch)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class PubSubConnection:
    """Follows a set of channels on one Redis connection, reconnecting as long as it runs."""

    def __init__(self, url: str | RedisEndpoint, on_message: Callable[[bytes, bytes], None],
                 on_connected: Callable[[], None], *, ping_every: float = PING_EVERY) -> None:  # fmt: skip
        """``url``: ``REDIS_URL`` (a bad one raises :class:`ValueError` naming it), or the endpoint of the
        broker that owns this connection (then shared, and left open by :meth:`close`)."""
        self._owns_endpoint = isinstance(url, str)
        self._endpoint = RedisEndpoint(url) if isinstance(url, str) else url
        self._address: tuple[str, int] | None = None
        self._ping_every = ping_every
        self.on_message = on_message
        self._on_connected = on_connected
        self._channels: set[bytes] = set()
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._protocol: _Protocol | None = None
        self._runner: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="redis-pubsub")

    def subscribe(self, channel: bytes) -> asyncio.Future[None]:
        """Follow ``channel``; the future is done once Redis confirmed the subscription (after a
        reconnect if it is down now: callers wait for it with a timeout of their own)."""
        confirmation = self._confirmations.get(channel)
        if confirmation is None or confirmation.done():
            confirmation = self._confirmations[channel] = asyncio.get_running_loop().create_future()
        self._channels.add(channel)
        self._send(_command(b"SUBSCRIBE", channel))
        return confirmation

    def confirmed(self, channel: bytes) -> None:
        confirmation = self._confirmations.pop(channel, None)
        if confirmation is not None and not confirmation.done():
            confirmation.set_result(None)

    def unsubscribe(self, channel: bytes) -> None:
        confirmation = self._confirmations.pop(channel, None)
        if confirmation is not None:
            confirmation.cancel()
        self._channels.discard(channel)
        self._send(_command(b"UNSUBSCRIBE", channel))

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        if self._owns_endpoint:
            await self._endpoint.aclose()

    def _send(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and not protocol.transport.is_closing():
            protocol.transport.write(data)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                protocol = await self._connect()
            except (OSError, TimeoutError) as exc:
                if not failing:
                    log.warning("redis pub/sub connection to %s failed (%s); retrying every %.1f s",
                                self._endpoint.location.describe(), exc, RETRY_EVERY)  # fmt: skip
                failing = True
                await asyncio.sleep(RETRY_EVERY)
                continue
            self._protocol = protocol
            assert protocol.transport is not None
            protocol.transport.write(b"".join(_command(b"SUBSCRIBE", c) for c in sorted(self._channels))
                                     + _command(b"PING"))  # fmt: skip
            try:  # connected means Redis answered, not just that a TCP connection opened
                async with asyncio.timeout(3 * self._ping_every):
                    await protocol.answered.wait()
            except TimeoutError:
                protocol.transport.abort()
                self._protocol = None
                if not failing:
                    log.warning("redis pub/sub: connected but no answer; retrying every %.1f s", RETRY_EVERY)
                failing = True
                await asyncio.sleep(RETRY_EVERY)
                continue
            failing = False
            self.connected.set()
            self._on_connected()
            reason = await self._watch(protocol)
            self.connected.clear()
            self._protocol = None
            log.warning("redis pub/sub connection lost (%s); reconnecting", reason)
            await asyncio.sleep(RETRY_EVERY)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        where = self._endpoint.location
        async with asyncio.timeout(2):
            if where.scheme == "unix":
                _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), where.path)
            else:
                self._address = host, port = await self._endpoint.primary()
                context = ssl.create_default_context() if where.scheme == "rediss" else None
                _, protocol = await loop.create_connection(lambda: _Protocol(self), host, port, ssl=context)
        if where.password is not None:
            auth = [where.username, where.password] if where.username else [where.password]
            protocol.transport.write(_command(b"AUTH", *(part.encode() for part in auth)))  # type: ignore[union-attr]
        return protocol

    async def _primary_moved(self) -> str | None:
        """With Sentinels: where they say the primary is now, when that is not where this connection goes."""
        if not self._endpoint.location.sentinel:
            return None
        try:
            async with asyncio.timeout(self._ping_every):
                host, port = await self._endpoint.primary()
        except (ConnectionError, TimeoutError):
            return None  # no Sentinel answers: keep the connection while it answers
        return None if (host, port) == self._address else f"{host}:{port}"

    async def _watch(self, protocol: _Protocol) -> str:
        """Ping until the connection drops or stops answering; return why it ended."""
        loop = asyncio.get_running_loop()
        while True:
            done, _ = await asyncio.wait({protocol.lost}, timeout=self._ping_every)
            if done:
                exc = protocol.lost.result()
                return str(exc) if exc else "closed by the server"
            if loop.time() - protocol.heard > 3 * self._ping_every:
                assert protocol.transport is not None
                protocol.transport.abort()
                return f"no answer for {3 * self._ping_every:.1f} s"
            self._send(_command(b"PING"))
            moved = await self._primary_moved()
            if moved is not None and protocol.transport is not None:
                protocol.transport.abort()
                return f"the Sentinels name another primary, {moved}"
