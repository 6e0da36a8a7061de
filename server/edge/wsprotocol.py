"""uvicorn's WebSocket protocol, trimmed for thousands of long-lived idle sockets.

uvicorn's ``websockets-sansio`` protocol (what ``ws="auto"`` picks) gives every connection an
``asyncio.Queue`` for received messages and an ``asyncio.Event`` for write flow control: four
deques, about 3.8 KiB, a seventh of what an idle authenticated socket costs the node
(tracemalloc, docs/performance.md). :class:`LeanWebSocketProtocol` swaps them for two
objects that allocate nothing while empty, and lets go of the handshake response once it
was sent. It also offers the app a synchronous write (the ASGI extension
``croupier.send_now``, see :meth:`LeanWebSocketProtocol.send_now`): a frame for a socket with
room is taken at once, with no task to wake, and its prebuilt wire bytes go to the transport at
the end of the loop's turn, joined with the socket's other frames of the turn (:class:`_Cork`);
on a socket that negotiated permessage-deflate it is compressed for that socket by its
connection and written at once. With ``CROUPIER_WS_COMPRESSION=deflate`` it negotiates permessage-deflate as uvicorn
would, with a smaller zlib state per socket (:data:`DEFLATE_WINDOW_BITS`). Everything else
(parsing, keepalive pings, close handshake, flow control) is uvicorn's own, unchanged.

It depends on two attribute names of uvicorn's class (``queue``: ``put_nowait``, ``get``,
``empty``; ``writable``: ``set``, ``clear``, ``wait``); ``tests/edge/test_wsprotocol.py``
checks that uvicorn still uses no more than that, and every socket test runs on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from typing import Any, Generic, TypeVar

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from .frame import Frame

T = TypeVar("T")

KERNEL_SEND_BUFFER = 64 * 1024
"""SO_SNDBUF of every WebSocket (the kernel doubles it). Left alone, Linux grows a socket's send
buffer up to 4 MiB (``tcp_wmem``): a client that stops reading could hold that much of the
server's memory and would only meet its bounded send queue (and 4503) after megabytes. Game
frames are small: 128 KiB is seconds of pushes."""

DEFLATE_WINDOW_BITS = 9
DEFLATE_MEM_LEVEL = 1
"""zlib's window (2**9 bytes, the least it takes) and memory level for permessage-deflate, when it is on.
uvicorn's own (12 bits, memLevel 5) keep about 38 KiB of compressor per socket; game frames are a hundred
bytes or so, each much like the one before, and compress as well with these for about 9 KiB (measured in
docs/performance.md, "WebSocket compression"). The client is asked for the same window."""

SEND_NOW = "croupier.send_now"
"""The ASGI extension (in ``scope["extensions"]``) holding :meth:`LeanWebSocketProtocol.send_now`."""


class _Waiters:
    """Futures of the tasks parked on an object; the list exists only while somebody waits."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] | None = None

    async def _park(self) -> None:
        """Wait until woken (or cancelled)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
            if not self._waiters:
                self._waiters = None


class Inbox(_Waiters, Generic[T]):
    """A FIFO with ``asyncio.Queue``'s ``put_nowait`` / ``get`` / ``empty``, unbounded, that holds
    a list of items and, only while somebody waits, a list of waiters."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        super().__init__()
        self._items: list[T] = []

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._wake_one()

    async def get(self) -> T:
        while not self._items:
            try:
                await self._park()
            except BaseException:
                if self._items:  # this getter was woken but leaves: the item is the next one's
                    self._wake_one()
                raise
        return self._items.pop(0)

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break


class Flag(_Waiters):
    """``asyncio.Event``'s ``is_set`` / ``set`` / ``clear`` / ``wait``, with the waiters' list
    allocated only while somebody waits."""

    __slots__ = ("_is_set",)

    def __init__(self) -> None:
        super().__init__()
        self._is_set = False

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> bool:
        if not self._is_set:
            await self._park()
        return True


class _Cork:
    """The sockets of one event loop with frames waiting for the end of the loop's turn.

    :meth:`LeanWebSocketProtocol.send_now` does not write a frame at once: it keeps the frame's bytes and
    has this cork write everything a socket was given in the turn with one ``transport.write`` when the
    turn's callbacks are done (``call_soon``, scheduled by the first frame of the turn). A burst that
    gives a socket several frames in one turn (a batch of events read from Redis, a reply and the pushes
    that follow it) then costs it one write system call instead of one per frame, which is most of what a
    broadcast costs (docs/performance.md, "Fan-out against the bare transport")."""

    __slots__ = ("_scheduled", "_waiting")

    def __init__(self) -> None:
        self._waiting: list[LeanWebSocketProtocol] = []
        self._scheduled = False

    def add(self, protocol: LeanWebSocketProtocol) -> None:
        """Hold ``protocol``'s frames until the end of the running loop's turn (called from that loop)."""
        self._waiting.append(protocol)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        for protocol in waiting:
            protocol.write_held()


_CORKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Cork] = weakref.WeakKeyDictionary()
"""One cork per event loop (the test suite runs many loops in one process); it holds no reference to its loop,
so the entry goes with the loop."""


def _cork_of(loop: asyncio.AbstractEventLoop) -> _Cork:
    cork = _CORKS.get(loop)
    if cork is None:
        cork = _CORKS[loop] = _Cork()
    return cork


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with a lighter receive queue and write flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:  # uvicorn's connection, with a smaller zlib state per socket
            deflate = ServerPerMessageDeflateFactory(server_max_window_bits=DEFLATE_WINDOW_BITS,
                                                     client_max_window_bits=DEFLATE_WINDOW_BITS,
                                                     compress_settings={"memLevel": DEFLATE_MEM_LEVEL})  # fmt: skip
            self.conn = ServerProtocol(extensions=[deflate], max_size=self.config.ws_max_size, logger=self.conn.logger)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()
        self._held: bytes | list[bytes] | None = None  # frames given this turn, written at its end (_Cork)
        self._cork = _cork_of(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if getattr(self, "scope", None) is not None:
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[SEND_NOW] = self.send_now

    def send_now(self, frame: Frame) -> bool:
        """Take one data frame for writing now if the socket can take it without waiting; False if it cannot
        (handshake not done, closing or closed, or the transport's buffer is full): then the caller sends it
        the usual way, through ``send``, which waits for room.

        The frame's prebuilt wire bytes go to the transport at the end of the event loop's turn, with every
        other frame the socket was given in the turn, in one write (:class:`_Cork`): the same bytes for every
        socket of a broadcast. That is what ``websockets`` itself would write (an unmasked, unfragmented
        frame, no extension negotiated), minus serializing it again for each socket. A socket that
        negotiated permessage-deflate has the frame compressed by its own connection (its compressor keeps
        context from frame to frame) and written at once, as uvicorn's ``send`` would, without waiting for a
        writer task."""
        if (not self.handshake_complete or self.close_sent or self.disconnected or self.initial_response is not None
                or not self.writable.is_set() or self.conn.state is not OPEN):  # fmt: skip
            return False
        if not self.conn.extensions:
            held = self._held
            if held is None:
                self._held = frame.wire
                self._cork.add(self)
            elif isinstance(held, bytes):
                self._held = [held, frame.wire]
            else:
                held.append(frame.wire)
            return True
        if frame.binary:
            self.conn.send_binary(frame.data)
        else:
            self.conn.send_text(frame.data)
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def write_held(self) -> None:
        """Write the frames :meth:`send_now` took this turn, in one write; dropped if the connection began
        closing meanwhile (its close frame went first: nothing may follow it)."""
        held, self._held = self._held, None
        if held is None or self.close_sent or self.disconnected or self.conn.state is not OPEN:
            return
        self.transport.write(held if isinstance(held, bytes) else b"".join(held))

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # uvicorn reads the response only until the handshake completes.
            del self.response
