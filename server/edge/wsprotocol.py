"""uvicorn's WebSocket protocol, trimmed for thousands of long-lived idle sockets and cheaper handshakes.

uvicorn's ``websockets-sansio`` protocol (what ``ws="auto"`` picks) gives every connection an
``asyncio.Queue`` for received messages and an ``asyncio.Event`` for write flow control: four
deques, about 3.8 KiB, a seventh of what an idle authenticated socket costs the node
(tracemalloc, docs/performance.md). :class:`LeanWebSocketProtocol` swaps them for two
objects that allocate nothing while empty. It also offers the app a synchronous write (the ASGI extension
``croupier.send_now``, see :meth:`LeanWebSocketProtocol.send_now`): a frame for a socket with
room is taken at once, with no task to wake, and its prebuilt wire bytes go to the transport at
the end of the loop's turn, joined with the socket's other frames of the turn (:class:`_Cork`);
on a socket that negotiated permessage-deflate it is compressed for that socket by its
connection and written at once. With ``CROUPIER_WS_COMPRESSION=deflate`` it negotiates permessage-deflate as uvicorn
would, with a smaller zlib state per socket (:data:`DEFLATE_WINDOW_BITS`).

An idle socket keeps less (docs/performance.md, "Memory per idle socket"): the handshake (request, response,
most of the scope) is let go once the socket is accepted, keepalive pings are scheduled per event loop
(:class:`_Pings`) instead of a timer per socket, the attributes that are the server's live once (:class:`_Server`),
which keeps each connection's under Python's shared-keys limit, and the frames of a socket without compression
are parsed and written by :class:`~server.edge.wsframes.OpenConnection` instead of ``websockets``' connection.
A plain upgrade request (the usual one) is taken as uvicorn's HTTP protocol parsed it
(:meth:`LeanWebSocketProtocol.handshake_parsed`, called by ``server/edge/admission.py``) rather than written out
again for ``websockets`` to parse; any other goes uvicorn's way. Everything else (sending the pings, the close
handshake, flow control, the ASGI messages) is uvicorn's own, unchanged.

It depends on uvicorn's attribute names (``queue``: ``put_nowait``, ``get``, ``empty``; ``writable``:
``set``, ``clear``, ``wait``; the attributes its ``__init__`` sets, which this class sets itself; what
``handle_connect`` builds, which :meth:`LeanWebSocketProtocol.handshake_parsed` builds too);
``tests/edge/test_wsprotocol.py`` checks that uvicorn still uses no more than that and that both ways give the
same scope and response, and every socket test runs on it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import socket
import sys
import weakref
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import unquote

from uvicorn._types import ASGISendEvent, WebSocketScope
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.protocol import CONNECTING, OPEN
from websockets.server import ServerProtocol
from websockets.utils import accept_key

from .frame import Frame
from .wsframes import OpenConnection

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

SCOPE_KEPT = ("type", "client", "extensions", "state")
"""What an accepted socket's ASGI scope keeps (see :meth:`LeanWebSocketProtocol.drop_handshake`): the headers,
path, query string, server address and subprotocols offered are the handshake's and are let go."""

SEND_NOW = "croupier.send_now"
"""The ASGI extension (in ``scope["extensions"]``) holding :meth:`LeanWebSocketProtocol.send_now`."""


class _Waiters:
    """Futures of the tasks parked on an object: none, one (held alone: an idle socket's receive has exactly one
    waiter) or a list of them."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: asyncio.Future[None] | list[asyncio.Future[None]] | None = None

    def _waiter(self) -> asyncio.Future[None]:
        """A future to wait on until woken; the caller awaits it itself (a helper coroutine would be one more
        suspended frame, about 220 bytes, for as long as an idle socket waits) and then calls :meth:`_forget`."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters = waiter
        elif isinstance(waiters, list):
            waiters.append(waiter)
        else:
            self._waiters = [waiters, waiter]
        return waiter

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters
        if waiters is waiter:
            self._waiters = None
        elif isinstance(waiters, list):
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters = None

    def _parked(self) -> list[asyncio.Future[None]] | tuple[asyncio.Future[None], ...]:
        waiters = self._waiters
        if waiters is None:
            return ()
        return waiters if isinstance(waiters, list) else (waiters,)

    def _wake_one(self) -> None:
        """Wake the first waiter not woken yet (each forgets itself when it runs)."""
        for waiter in self._parked():
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        for waiter in tuple(self._parked()):
            if not waiter.done():
                waiter.set_result(None)


class Inbox(_Waiters, Generic[T]):
    """A FIFO with ``asyncio.Queue``'s ``put_nowait`` / ``get`` / ``empty``, unbounded, that holds a list of
    items only while it has some and a list of waiters only while somebody waits."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        super().__init__()
        self._items: list[T] | None = None

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)
        self._wake_one()

    async def get(self) -> T:
        while not self._items:
            waiter = self._waiter()
            try:
                await waiter
            except BaseException:
                if self._items:  # this getter was woken but leaves: the item is the next one's
                    self._wake_one()
                raise
            finally:
                self._forget(waiter)
        items = self._items
        item = items.pop(0)
        if not items:
            self._items = None
        return item


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
        self._wake_all()

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> bool:
        if not self._is_set:
            waiter = self._waiter()
            try:
                await waiter
            finally:
                self._forget(waiter)
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


class _Pings:
    """The keepalive pings due on one event loop's sockets, by the whole second, behind one timer.

    uvicorn gives every socket its own ``call_later`` timer for its next ping, about 600 bytes that an idle
    socket keeps all its life (``loadtest/memory_owners.py``). Here a socket is one entry in the set of its
    second; one timer, at the earliest second with a socket in it, pings them all. A ping goes out up to a
    second after it is due (pings are 20 s apart)."""

    __slots__ = ("_due", "_timer")

    def __init__(self) -> None:
        self._due: dict[int, set[LeanWebSocketProtocol]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, protocol: LeanWebSocketProtocol, when: float) -> int:
        """Ping ``protocol`` at loop time ``when`` (rounded up to the second, which is returned: the key to
        :meth:`discard` it by). Called from the running loop."""
        second = math.ceil(when)
        sockets = self._due.get(second)
        if sockets is None:
            sockets = self._due[second] = set()
        sockets.add(protocol)
        timer = self._timer
        if timer is None or second < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(second, self._fire)
        return second

    def discard(self, protocol: LeanWebSocketProtocol, second: int) -> None:
        """Forget ``protocol``'s ping due at ``second`` (the timer may then fire for nobody, once)."""
        sockets = self._due.get(second)
        if sockets is not None:
            sockets.discard(protocol)
            if not sockets:
                del self._due[second]

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time()
        for second in sorted(second for second in self._due if second <= now):
            for protocol in self._due.pop(second):
                protocol.ping_due()
        if self._due and self._timer is None:
            self._timer = loop.call_at(min(self._due), self._fire)


_CORKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Cork] = weakref.WeakKeyDictionary()
_PINGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pings] = weakref.WeakKeyDictionary()
"""One cork and one ping schedule per event loop (the test suite runs many loops in one process); neither holds a
reference to its loop, so the entries go with the loop."""

L = TypeVar("L")


def _of_loop(table: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, L], loop: asyncio.AbstractEventLoop,
             make: type[L]) -> L:  # fmt: skip
    value = table.get(loop)
    if value is None:
        value = table[loop] = make()
    return value


def _plain_upgrade_key(method: str, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The ``Sec-WebSocket-Key`` of an upgrade request that ``websockets`` would accept as it is (see
    :meth:`LeanWebSocketProtocol.handshake_parsed`), or None."""
    if method != "GET":
        return None
    seen: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _HANDSHAKE_HEADERS:
            if name in seen:
                return None  # twice: websockets decides what that means
            seen[name] = value
    if seen.get(b"upgrade", b"").strip().lower() != b"websocket" or seen.get(b"sec-websocket-version") != b"13":
        return None
    if b"upgrade" not in [token.strip().lower() for token in seen.get(b"connection", b"").split(b",")]:
        return None
    key = seen.get(b"sec-websocket-key", b"")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    return key.decode("ascii")


_HANDSHAKE_HEADERS = frozenset((b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version"))


class _Server:
    """What uvicorn's protocol keeps on every connection but is the same for all of a server's connections."""

    __slots__ = ("addresses", "app", "app_state", "asgi_version", "config", "connections", "cork", "default_headers",
                 "logger", "loop", "ping_interval", "ping_timeout", "pings", "root_path", "tasks")  # fmt: skip

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
        if not config.loaded:
            config.load()
        self.loop = loop
        self.cork = _of_loop(_CORKS, loop, _Cork)
        self.pings = _of_loop(_PINGS, loop, _Pings)
        self.config = config
        self.app = config.loaded_app
        self.logger = logging.getLogger("uvicorn.error")
        self.root_path = config.root_path
        self.asgi_version = config.asgi_version
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.addresses: dict[tuple[str, int | None], tuple[str, int | None]] = {}

    def shared_address(self, address: tuple[str, int | None] | None) -> tuple[str, int | None] | None:
        """``address`` (a connection's local address) as one tuple for all the server's connections to it:
        uvicorn makes a new tuple and host string for every connection, about 150 bytes each."""
        if address is None:
            return None
        return self.addresses.setdefault(address, address) if len(self.addresses) < 64 else address


_SERVERS: weakref.WeakKeyDictionary[ServerState, _Server] = weakref.WeakKeyDictionary()


def _shared(name: str) -> Any:
    """A read-only attribute of uvicorn's protocol answered from the server's :class:`_Server`."""
    return property(lambda self: getattr(self._server, name), doc=f"uvicorn's ``{name}``, the server's (shared).")


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with a lighter receive queue and write flag, fewer attributes and a
    shared keepalive schedule.

    uvicorn's ``__init__`` sets about 35 attributes on every connection; past 29, Python gives an instance its
    own dictionary table (1.6 KiB) instead of sharing its class's keys (under 0.3 KiB). The dozen that are the
    same for every connection of a server (config, app, logger, the server's sets of connections and tasks,
    the keepalive intervals...) live once in a :class:`_Server` and are read through properties; the
    connection's own are set here, in uvicorn's order, and the handshake's are set to ``None`` rather than
    deleted when let go (a deleted attribute also turns the table into a dictionary of its own).
    ``tests/edge/test_wsprotocol.py`` checks that uvicorn's ``__init__`` still sets exactly these."""

    SHARED = ("config", "app", "logger", "root_path", "asgi_version", "app_state", "connections", "tasks",
              "default_headers", "ping_interval", "ping_timeout")  # fmt: skip
    """uvicorn's per-connection attributes that are the server's: answered from :class:`_Server`."""

    config = _shared("config")
    app = _shared("app")
    logger = _shared("logger")
    root_path = _shared("root_path")
    asgi_version = _shared("asgi_version")
    app_state = _shared("app_state")
    connections = _shared("connections")
    tasks = _shared("tasks")
    default_headers = _shared("default_headers")
    ping_interval = _shared("ping_interval")
    ping_timeout = _shared("ping_timeout")
    close_timeout = 10.0

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, parsed: bool = False) -> None:  # fmt: skip
        """``parsed``: the request comes already parsed, through :meth:`handshake_parsed` (no ``websockets``
        connection is made for it)."""
        loop = _loop or asyncio.get_event_loop()
        server = _SERVERS.get(server_state)
        if server is None or server.config is not config or server.loop is not loop:
            server = _SERVERS[server_state] = _Server(config, server_state, app_state, loop)
        self._server = server
        # uvicorn's per-connection state, as its __init__ sets it.
        self.loop = loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme: Literal["wss", "ws"] = None  # type: ignore[assignment]
        self.queue = Inbox()  # type: ignore[assignment]  # uvicorn: an asyncio.Queue
        self.handshake_initiated = False
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.initial_response: tuple[int, list[tuple[str, str]], bytes] | None = None
        if parsed:
            self.conn = OpenConnection(config.ws_max_size, CONNECTING)  # type: ignore[assignment]
        else:
            extensions: list[ServerExtensionFactory] = []
            if config.ws_per_message_deflate:  # with a smaller zlib state per socket than uvicorn's
                deflate = ServerPerMessageDeflateFactory(server_max_window_bits=DEFLATE_WINDOW_BITS,
                                                         client_max_window_bits=DEFLATE_WINDOW_BITS,
                                                         compress_settings={"memLevel": DEFLATE_MEM_LEVEL})  # fmt: skip
                extensions.append(deflate)
            self.conn = ServerProtocol(extensions=extensions, max_size=config.ws_max_size, logger=server.logger)
        self.read_paused = False
        self.writable = Flag()  # type: ignore[assignment]  # uvicorn: an asyncio.Event
        self.writable.set()
        self.ping_timer: asyncio.TimerHandle | None = None  # stays None: pings are scheduled in _Pings
        self.pong_timer: asyncio.TimerHandle | None = None
        self.pending_ping_payload: bytes | None = None
        self.ping_sent_at: float = 0.0
        self.last_ping_rtt: float = 0.0
        self.frames: list[bytes] = []
        self.curr_msg_data_type: Literal["text", "bytes"] = "bytes"
        # Set by uvicorn when the request comes (handle_connect), here first so that every connection's
        # attributes are in the same order (the class's shared keys).
        self.request: Request | None = None  # type: ignore[assignment]
        self.response: Response | None = None  # type: ignore[assignment]
        self.scope: WebSocketScope = None  # type: ignore[assignment]
        # Ours.
        self._early = False  # bytes came after the request and before the accept (see drop_handshake)
        self._held: bytes | list[bytes] | None = None  # frames given this turn, written at its end (_Cork)
        self._ping_due: int | None = None  # the second of this socket's next keepalive ping in _PINGS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server = self._server.shared_address(self.server)
        if self.client is not None:  # one host string per peer address (behind a proxy: one for all)
            self.client = (sys.intern(self.client[0]), self.client[1])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)

    def data_received(self, data: bytes) -> None:
        if self.handshake_initiated and not self.handshake_complete:
            self._early = True  # a client speaking before it was answered: websockets keeps its connection
        super().data_received(data)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if getattr(self, "scope", None) is not None:
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[SEND_NOW] = self.send_now

    @staticmethod
    def parsed_handshake_key(config: Config, method: str, url: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The ``Sec-WebSocket-Key`` of an upgrade request :meth:`handshake_parsed` can take as parsed: a plain one
        (GET, one ``Upgrade: websocket``, a ``Connection`` with ``upgrade``, one 16-byte ``Sec-WebSocket-Key``, one
        ``Sec-WebSocket-Version: 13``) on a server without compression. None for any other, which then goes
        uvicorn's way (``websockets`` answers it, refusals included), as does a target that is not ASCII."""
        if config.ws_per_message_deflate or not url.isascii():
            return None
        return _plain_upgrade_key(method, headers)

    def handshake_parsed(self, url: bytes, headers: list[tuple[bytes, bytes]], key: str) -> None:
        """Take the upgrade request as uvicorn's HTTP protocol parsed it (``headers``: lower-case names; ``key``
        from :meth:`parsed_handshake_key`), without the second parse uvicorn's way costs (it writes the request
        out again for ``websockets`` to parse: about a tenth of a connect storm, docs/performance.md).

        What follows is what uvicorn's ``handle_connect`` does with ``websockets``' parse: the same scope, the
        same 101 response (``websockets``' ``accept``), the app's task; the frames are ``OpenConnection``'s from
        the start (made in ``__init__`` when told ``parsed``)."""
        assert isinstance(self.conn, OpenConnection), "a protocol made with parsed=True"
        response_headers = Headers()
        response_headers["Date"] = ""  # replaced on accept: uvicorn deletes it and adds the server's own date
        response_headers["Upgrade"] = "websocket"
        response_headers["Connection"] = "Upgrade"
        response_headers["Sec-WebSocket-Accept"] = accept_key(key)
        self.response = Response(101, "Switching Protocols", response_headers)
        self.handshake_initiated = True
        raw_path, _, query_string = url.partition(b"?")
        subprotocols = [token.strip() for name, value in headers if name == b"sec-websocket-protocol"
                        for token in value.decode("latin-1").split(",")]  # fmt: skip
        root_path: str = self.root_path
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": root_path,
            "path": root_path + unquote(raw_path.decode("ascii")),
            "raw_path": root_path.encode("ascii") + raw_path,
            "query_string": query_string,
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        extensions: dict[str, Any] = self.scope["extensions"]
        extensions[SEND_NOW] = self.send_now
        self.queue.put_nowait({"type": "websocket.connect"})
        task = self.loop.create_task(self.run_asgi())
        task.add_done_callback(self.on_task_complete)
        self.tasks.add(task)

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
                self._server.cork.add(self)
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

    def schedule_ping(self) -> None:
        """Schedule the next keepalive ping in the loop's shared :class:`_Pings` (uvicorn: a timer per socket)."""
        assert self.ping_interval is not None
        if self._ping_due is not None:
            self._server.pings.discard(self, self._ping_due)
        due = self.loop.time() + max(0.0, self.ping_interval - self.last_ping_rtt)
        self._ping_due = self._server.pings.add(self, due)

    def ping_due(self) -> None:
        """:class:`_Pings`: this socket's keepalive ping is due."""
        self._ping_due = None
        self.send_keepalive_ping()

    def stop_keepalive(self) -> None:
        if self._ping_due is not None:
            self._server.pings.discard(self, self._ping_due)
            self._ping_due = None
        super().stop_keepalive()

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self.drop_handshake()

    def drop_handshake(self) -> None:
        """Let go of what only the handshake needed, once the socket is accepted. uvicorn reads the request,
        the response and the scope only until the handshake completes, and the app reads the handshake's
        details before it accepts (the ``/ws`` endpoint: ``subprotocols``; ``client`` and ``extensions``
        after, which stay): the scope keeps :data:`SCOPE_KEPT`. A socket lives for hours; its handshake was
        about 4 KiB of it (``loadtest/memory_owners.py``)."""
        if self.request is not None:
            # websockets' parser generator keeps the request in a local for the connection's life: empty it.
            self.request.headers.clear()
        self.request = self.response = None
        scope: dict[str, Any] | None = self.scope  # type: ignore[assignment]
        if scope is not None:
            kept = {key: scope[key] for key in SCOPE_KEPT if key in scope}
            scope.clear()  # a cleared dictionary lets go of its table too: a smaller one is made for what stays
            scope.update(kept)
        if (not isinstance(self.conn, OpenConnection) and not self.conn.extensions and not self._early
                and self.conn.state is OPEN):  # fmt: skip
            # From here on the frames are parsed and written by OpenConnection (server/edge/wsframes.py) rather
            # than websockets' ServerProtocol: about 1.7 KiB less per socket and a cheaper parse per frame.
            # Only when websockets has parsed nothing since the request: its parser may be inside a frame.
            self.conn = OpenConnection(self.config.ws_max_size)  # type: ignore[assignment]
