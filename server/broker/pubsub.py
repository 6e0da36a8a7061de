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

On a Redis Cluster (:mod:`.cluster`) one such connection per master carries that master's shard
channels (``sharded``: ``SSUBSCRIBE``, ``smessage``) to a fixed ``address``; what the cluster says
about a channel that is not (or no longer) that master's (a ``MOVED`` error, a ``sunsubscribe`` it
was not asked for, as when the slot moves or the master becomes a replica) goes to ``on_moved``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

import hiredis

from .connect import RedisEndpoint

log = logging.getLogger(__name__)

PING_EVERY = 2.0
"""Seconds between PINGs; a connection that answers nothing for three of them is dropped."""
RETRY_EVERY = 0.5
BATCH = 64
"""Messages handed on per event-loop turn."""


Address = Callable[[], Awaitable[tuple[str, int]]]
"""Where to connect now (host, port), asked before each connection."""


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
        owner = self.owner
        on_message = owner.on_message
        message, confirmation = owner.kinds
        self.heard = asyncio.get_running_loop().time()  # still working through what Redis sent
        for _ in range(BATCH):
            reply = self.reader.gets()
            if reply is False:
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return
            if type(reply) is list and len(reply) == 3 and reply[0] == message:
                on_message(reply[1], reply[2])
            elif type(reply) is list and len(reply) == 3 and reply[0] == confirmation:
                owner.confirmed(reply[1])
            elif type(reply) is list and len(reply) == 3 and reply[0] == b"sunsubscribe":
                owner.unsubscribed(reply[1])
            elif isinstance(reply, hiredis.ReplyError):
                owner.refused(str(reply))
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
                 on_connected: Callable[[], None], *, ping_every: float = PING_EVERY, sharded: bool = False,
                 address: Address | None = None,
                 on_moved: Callable[[bytes | None], None] | None = None) -> None:  # fmt: skip
        """``url``: ``REDIS_URL`` (a bad one raises :class:`ValueError` naming it), or the endpoint of the
        broker that owns this connection (then shared, and left open by :meth:`close`). ``sharded``: shard
        channels (Redis 7's ``SSUBSCRIBE``) on the server at ``address`` (asked before each connection,
        instead of the endpoint's :meth:`~.connect.RedisEndpoint.primary`); ``on_moved`` is told of a
        channel the server no longer serves (None: a ``MOVED`` or ``CLUSTERDOWN`` error naming none)."""
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
        self._subscribe = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self._unsubscribe = b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE"
        self.kinds = (b"smessage", b"ssubscribe") if sharded else (b"message", b"subscribe")
        """The kinds of reply that carry a message, and that confirm a subscription."""
        self._address_of = address
        self._on_moved = on_moved
        self.connected = asyncio.Event()
        self.connects = 0
        """How many times this connection was made (and answered)."""

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the current (or last) connection went; None before the first (or for ``unix``)."""
        return self._address

    @property
    def channels(self) -> frozenset[bytes]:
        """The channels followed now."""
        return frozenset(self._channels)

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
        self._send(_command(self._subscribe, channel))
        return confirmation

    def confirmed(self, channel: bytes) -> None:
        confirmation = self._confirmations.pop(channel, None)
        if confirmation is not None and not confirmation.done():
            confirmation.set_result(None)

    def unsubscribed(self, channel: bytes) -> None:
        """The server dropped ``channel`` (sharded: a ``sunsubscribe``, asked for or not)."""
        if channel in self._channels and self._on_moved is not None:
            self._on_moved(channel)  # not asked for: the slot is served elsewhere now

    def refused(self, error: str) -> None:
        """The server answered a command with ``error``."""
        if self._on_moved is not None and error.startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")):
            self._on_moved(None)
        else:
            log.warning("redis pub/sub: %s", error)

    def unsubscribe(self, channel: bytes) -> None:
        confirmation = self._confirmations.pop(channel, None)
        if confirmation is not None:
            confirmation.cancel()
        self._channels.discard(channel)
        self._send(_command(self._unsubscribe, channel))

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
                    where = self._endpoint.location.describe() if self._address_of is None else self._address
                    log.warning("redis pub/sub connection to %s failed (%s); retrying every %.1f s",
                                where, exc, RETRY_EVERY)  # fmt: skip
                failing = True
                await asyncio.sleep(RETRY_EVERY)
                continue
            self._protocol = protocol
            assert protocol.transport is not None
            protocol.transport.write(b"".join(_command(self._subscribe, c) for c in sorted(self._channels))
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
            self.connects += 1
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
                where_now = self._endpoint.primary() if self._address_of is None else self._address_of()
                self._address = host, port = await where_now
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
