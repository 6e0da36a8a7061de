"""The trimmed uvicorn WebSocket protocol, the shape of uvicorn it builds on, and what an idle socket holds."""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
import websockets
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.protocol import CONNECTING
from websockets.server import ServerProtocol

from server.edge.admission import ADMISSION, Admission, Ticket, admitting_protocol
from server.edge.frame import Frame
from server.edge.wsframes import OpenConnection
from server.edge.wsprotocol import SEND_NOW, Flag, Inbox, LeanWebSocketProtocol, _Pings
from tests.conftest import RunningNode
from tests.edge.client import authed, request


async def test_inbox_is_fifo_and_get_waits_for_the_next_item() -> None:
    inbox: Inbox[int] = Inbox()
    assert inbox.empty()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await inbox.get() == 1 and await inbox.get() == 2 and inbox.empty()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not getter.done()
    inbox.put_nowait(3)
    assert await asyncio.wait_for(getter, 1) == 3


async def test_inbox_hands_an_item_to_the_next_getter_when_the_woken_one_is_cancelled() -> None:
    inbox: Inbox[str] = Inbox()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("only")  # wakes `first`...
    first.cancel()  # ...which leaves before taking it
    assert await asyncio.wait_for(second, 1) == "only"
    assert inbox.empty()


async def test_flag_wait_returns_at_once_when_set_and_wakes_every_waiter() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert await flag.wait() is True
    flag.clear()
    assert not flag.is_set()
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    flag.set()  # a cancelled waiter is not woken


class Pinged:
    """Stands in for a socket in the ping schedule: notes when its ping was due."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def ping_due(self) -> None:
        self.log.append(self.name)


async def test_the_ping_schedule_pings_what_is_due_in_order_and_nothing_discarded() -> None:
    loop = asyncio.get_running_loop()
    pings = _Pings()
    log: list[str] = []
    now = loop.time()
    later = pings.add(Pinged(log, "later"), now + 3600)  # type: ignore[arg-type]
    assert later == math.ceil(now + 3600)
    gone = Pinged(log, "gone")
    pings.add(Pinged(log, "due"), now - 2)  # type: ignore[arg-type]
    second = pings.add(gone, now - 1)  # type: ignore[arg-type]
    pings.discard(gone, second)  # type: ignore[arg-type]
    pings.add(Pinged(log, "also due"), now - 1)  # type: ignore[arg-type]
    for _ in range(3):  # the timer at a past second fires on the loop's next turns
        await asyncio.sleep(0)
    assert log == ["due", "also due"]  # by their second; the discarded one not at all
    assert pings._due.keys() == {later}  # the far one waits, behind the one timer
    assert pings._timer is not None and pings._timer.when() == later


async def test_the_ping_schedule_moves_its_timer_earlier_for_an_earlier_socket() -> None:
    loop = asyncio.get_running_loop()
    pings = _Pings()
    log: list[str] = []
    pings.add(Pinged(log, "far"), loop.time() + 3600)  # type: ignore[arg-type]
    pings.add(Pinged(log, "now"), loop.time() - 1)  # type: ignore[arg-type]
    for _ in range(3):
        await asyncio.sleep(0)
    assert log == ["now"]
    pings._timer.cancel()  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------------------
# The contract with uvicorn. LeanWebSocketProtocol and AdmittingHttpToolsProtocol subclass uvicorn's classes
# and use some of their internals; pyproject.toml pins uvicorn to the versions checked here. A uvicorn that
# changes them fails these tests naming what changed, before a socket breaks. Everything runs on a fake
# transport: real uvicorn and websockets objects, no sockets.

UVICORN = f"uvicorn {uvicorn.__version__} (websockets {websockets.__version__})"
HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             b"Sec-WebSocket-Protocol: croupier.v1.json\r\n\r\n")  # fmt: skip


class FakeTransport(asyncio.Transport):
    """What uvicorn's protocols call on a transport, recording what they write."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.closing = False
        self.reading = True
        self.protocol: asyncio.BaseProtocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes += 1

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol


class Recorder:
    """Stands in for an object and notes the attributes read on it."""

    def __init__(self, target: object, used: set[str]) -> None:
        self._target = target
        self._used = used

    def __getattr__(self, name: str) -> Any:
        self._used.add(name)
        return getattr(self._target, name)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client-to-server frame (RFC 6455 5.3), payload under 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of the unmasked server frames in ``data`` (after the handshake response)."""
    data = data.split(b"\r\n\r\n", 1)[1]
    frames = []
    while data:
        opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        end = start + length
        frames.append((opcode, bytes(data[start:end])))
        data = data[end:]
    return frames


async def until(condition: Callable[[], object], what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{UVICORN}: {what} never happened")


def require(cls: type, *names: str) -> None:
    missing = [name for name in names if not hasattr(cls, name)]
    assert not missing, (f"{UVICORN}: {cls.__qualname__} no longer has {', '.join(missing)}, which "
                         "server/edge/ (wsprotocol.py, admission.py) builds on: adapt them before widening the "
                         "uvicorn pin in pyproject.toml")  # fmt: skip


def require_parameters(function: Callable[..., Any], *names: str) -> None:
    parameters = list(inspect.signature(function).parameters)
    assert parameters[: len(names)] == list(names), (
        f"{UVICORN}: {function.__qualname__}{inspect.signature(function)} changed; server/edge/ calls or "
        f"overrides it as ({', '.join(names)})"
    )


def ws_config(app: Any, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(app, ws=LeanWebSocketProtocol, log_config=None, proxy_headers=False,
                          ws_per_message_deflate=False, ws_ping_interval=None, **options)  # fmt: skip


async def echo(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
    """Accept, echo a text message upper-cased and a binary one reversed, then wait for the close."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "subprotocol": "croupier.v1.json"})
    text = await receive()
    await send({"type": "websocket.send", "text": text["text"].upper()})
    binary = await receive()
    await send({"type": "websocket.send", "bytes": binary["bytes"][::-1]})
    scope["state"]["last"] = await receive()


async def drive_a_connection(
    cls: type[WebSocketsSansIOProtocol], queue_used: set[str] | None = None, flag_used: set[str] | None = None
) -> WebSocketsSansIOProtocol:
    """A whole WebSocket connection through ``cls``: handshake, a text and a binary message each way (the
    first reply held back by a full transport), the client's close, the connection lost."""
    app_state: dict[str, Any] = {}
    protocol = cls(config=ws_config(echo), server_state=ServerState(), app_state=app_state,
                   _loop=asyncio.get_running_loop())  # fmt: skip
    if queue_used is not None and flag_used is not None:
        protocol.queue = Recorder(protocol.queue, queue_used)  # type: ignore[assignment]
        protocol.writable = Recorder(protocol.writable, flag_used)  # type: ignore[assignment]
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE)
    await until(lambda: b"\r\n\r\n" in transport.written, "the handshake response")
    assert transport.written.startswith(b"HTTP/1.1 101"), bytes(transport.written)
    assert b"Sec-WebSocket-Protocol: croupier.v1.json" in transport.written
    protocol.pause_writing()  # the transport's buffer is full: the app's next send waits
    protocol.data_received(client_frame(0x1, b"hello"))
    await asyncio.sleep(0.02)
    assert server_frames(bytes(transport.written)) == [], f"{UVICORN}: a send did not wait for pause_writing"
    protocol.resume_writing()
    await until(lambda: server_frames(bytes(transport.written)) == [(0x1, b"HELLO")], "the text reply")
    protocol.data_received(client_frame(0x2, b"\x01\x02\x03"))
    await until(lambda: len(server_frames(bytes(transport.written))) == 2, "the binary reply")
    assert server_frames(bytes(transport.written))[1] == (0x2, b"\x03\x02\x01")
    protocol.data_received(client_frame(0x8, (1000).to_bytes(2, "big")))
    await until(lambda: "last" in protocol.scope["state"], "the app's websocket.disconnect")
    assert protocol.scope["state"]["last"]["type"] == "websocket.disconnect"
    assert protocol.scope["state"]["last"]["code"] == 1000
    protocol.connection_lost(None)
    await until(lambda: not protocol.tasks, "the end of the app's task")
    return protocol


def test_uvicorn_websocket_protocol_has_what_the_lean_protocol_builds_on() -> None:
    require(WebSocketsSansIOProtocol, "connection_made", "connection_lost", "data_received", "handle_connect",
            "send", "receive", "pause_writing", "resume_writing", "shutdown", "run_asgi")  # fmt: skip
    require_parameters(WebSocketsSansIOProtocol.__init__, "self", "config", "server_state", "app_state", "_loop")
    require_parameters(WebSocketsSansIOProtocol.connection_made, "self", "transport")
    require_parameters(WebSocketsSansIOProtocol.handle_connect, "self", "event")
    require_parameters(WebSocketsSansIOProtocol.send, "self", "message")
    assert inspect.iscoroutinefunction(WebSocketsSansIOProtocol.send), f"{UVICORN}: send() is no longer async"
    protocol = WebSocketsSansIOProtocol(config=ws_config(echo), server_state=ServerState(), app_state={},
                                        _loop=asyncio.new_event_loop())  # fmt: skip
    protocol.loop.close()
    # What LeanWebSocketProtocol replaces (queue, writable) and what send_now reads.
    for name, kind in [("queue", asyncio.Queue), ("writable", asyncio.Event), ("handshake_complete", bool),
                       ("close_sent", bool), ("disconnected", bool), ("conn", ServerProtocol)]:  # fmt: skip
        value = getattr(protocol, name, None)
        assert isinstance(value, kind), f"{UVICORN}: WebSocketsSansIOProtocol().{name} is {value!r}, not a {kind}"
    assert hasattr(protocol, "initial_response") and hasattr(protocol, "transport"), UVICORN
    # LeanWebSocketProtocol sets uvicorn's per-connection attributes itself and reads the server's from _Server.
    lean = LeanWebSocketProtocol(config=ws_config(echo), server_state=ServerState(), app_state={},
                                 _loop=protocol.loop)  # fmt: skip
    ours = {"_server", "_early", "_held", "_ping_due", "request", "response", "scope"}
    expected = (set(vars(lean)) - ours) | set(LeanWebSocketProtocol.SHARED) | {"close_timeout"}
    assert set(vars(protocol)) == expected, (
        f"{UVICORN}: WebSocketsSansIOProtocol.__init__ now sets {sorted(set(vars(protocol)) - expected)} and no "
        f"longer {sorted(expected - set(vars(protocol)))}: LeanWebSocketProtocol.__init__ must follow"
    )
    assert protocol.conn.state is CONNECTING and protocol.conn.extensions == [], UVICORN


async def test_uvicorn_uses_only_what_the_inbox_and_the_flag_offer_through_a_whole_connection() -> None:
    """uvicorn's own class drives a connection with its queue and its write flag watched: every method it
    calls on them must exist on :class:`Inbox` and :class:`Flag`, which replace them."""
    queue_used: set[str] = set()
    flag_used: set[str] = set()
    await drive_a_connection(WebSocketsSansIOProtocol, queue_used, flag_used)
    inbox_offers = {name for name in dir(Inbox) if not name.startswith("_")}
    flag_offers = {name for name in dir(Flag) if not name.startswith("_")}
    assert queue_used and queue_used <= inbox_offers, f"{UVICORN} uses {queue_used - inbox_offers} of its queue"
    assert flag_used and flag_used <= flag_offers, f"{UVICORN} uses {flag_used - flag_offers} of its write flag"


async def test_the_lean_protocol_serves_a_whole_connection_and_writes_prebuilt_frames() -> None:
    protocol = await drive_a_connection(LeanWebSocketProtocol)
    assert isinstance(protocol.queue, Inbox) and isinstance(protocol.writable, Flag)
    assert isinstance(protocol.conn, OpenConnection)  # the frames after the handshake: server/edge/wsframes.py
    assert protocol.response is None and protocol.request is None  # let go of once accepted: uvicorn reads them
    assert set(protocol.scope) == {"type", "client", "extensions", "state"}  # the handshake's part let go of
    assert sys.getsizeof(protocol.scope) < 300, sys.getsizeof(protocol.scope)
    # Its attributes share the class's keys (a dictionary of its own is 1.6 KiB; docs/performance.md).
    assert sys.getsizeof(protocol.__dict__) < 400, sys.getsizeof(protocol.__dict__)
    assert protocol.send_now(Frame(b"late", binary=False)) is False  # closed: the caller takes the usual way


async def test_send_now_writes_the_turns_frames_in_one_write_while_open_and_room_and_shutdown_still_closes_1012(
) -> None:  # fmt: skip
    async def hold(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        scope["state"]["last"] = await receive()

    protocol = LeanWebSocketProtocol(config=ws_config(hold), server_state=ServerState(), app_state={},
                                     _loop=asyncio.get_running_loop())  # fmt: skip
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE)
    await until(lambda: b"\r\n\r\n" in transport.written, "the handshake response")
    assert protocol.scope["extensions"][SEND_NOW] == protocol.send_now
    writes = transport.writes
    assert protocol.send_now(Frame(b'{"t":"pong"}', binary=False)) is True
    assert protocol.send_now(Frame(b'{"t":"tick"}', binary=False)) is True
    assert transport.writes == writes  # held until the loop's turn ends
    await asyncio.sleep(0)
    assert transport.writes == writes + 1  # both frames, one write
    assert server_frames(bytes(transport.written)) == [(0x1, b'{"t":"pong"}'), (0x1, b'{"t":"tick"}')]
    protocol.pause_writing()
    assert protocol.send_now(Frame(b"x", binary=False)) is False  # no room: the caller queues it
    protocol.resume_writing()
    assert protocol.send_now(Frame(b"dropped", binary=False)) is True
    protocol.shutdown()  # the server stops: close 1012 (uvicorn reads no `response` here either)
    await until(lambda: "last" in protocol.scope["state"], "the app's websocket.disconnect")
    frames = server_frames(bytes(transport.written))
    assert frames[-1][1][:2] == (1012).to_bytes(2, "big") and transport.closing
    assert (0x1, b"dropped") not in frames  # taken before the close began: nothing may follow a close frame
    protocol.connection_lost(None)
    await until(lambda: not protocol.tasks, "the end of the app's task")


def test_uvicorn_httptools_protocol_has_what_admission_builds_on() -> None:
    require(HttpToolsProtocol, "connection_made", "connection_lost", "data_received", "on_message_begin",
            "on_message_complete", "handle_websocket_upgrade", "_should_upgrade")  # fmt: skip
    require_parameters(HttpToolsProtocol.__init__, "self", "config", "server_state", "app_state", "_loop")
    require_parameters(HttpToolsProtocol.connection_made, "self", "transport")
    require_parameters(HttpToolsProtocol.connection_lost, "self", "exc")
    for name in ("on_message_begin", "on_message_complete", "handle_websocket_upgrade", "_should_upgrade"):
        require_parameters(getattr(HttpToolsProtocol, name), "self")


async def answer_ok(send: Callable[[Any], Any]) -> None:
    """An app's plain HTTP answer: 200, ``ok``."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_admission_counts_a_connection_until_its_request_or_its_upgrade_through_uvicorn() -> None:
    """AdmittingHttpToolsProtocol on uvicorn's real parser: a plain request releases its place once in full;
    an upgrade hands the place to the WebSocket's scope (``croupier.admission``) for the endpoint."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] == "http":
            await answer_ok(send)
            return
        seen.append(scope)
        await receive()
        scope["extensions"][ADMISSION].claim()
        await send({"type": "websocket.accept"})
        await receive()

    admission = Admission(max_unauthenticated=5, handshake_timeout=5.0)
    cls = admitting_protocol(admission)
    config = ws_config(app, http=cls)

    plain = cls(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    plain_transport = FakeTransport()
    plain.connection_made(plain_transport)
    assert admission.unauthenticated == 1
    for name in ("client", "loop", "transport", "parser", "headers"):
        assert hasattr(plain, name), f"{UVICORN}: HttpToolsProtocol().{name} is gone; admission.py reads it"
    plain.data_received(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert admission.unauthenticated == 0, f"{UVICORN}: on_message_complete was not called for a request"
    await until(lambda: plain_transport.written.endswith(b"ok"), "the HTTP response")
    plain.connection_lost(None)

    upgrading = cls(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    transport = FakeTransport()
    transport.set_protocol(upgrading)
    upgrading.connection_made(transport)
    upgrading.data_received(HANDSHAKE)
    websocket = transport.get_protocol()
    assert isinstance(websocket, LeanWebSocketProtocol), f"{UVICORN}: handle_websocket_upgrade did not run"
    await until(lambda: seen, "the WebSocket app call")
    ticket = seen[0]["extensions"][ADMISSION]
    assert isinstance(ticket, Ticket) and admission.unauthenticated == 1  # until the session authenticates
    await until(lambda: transport.written.startswith(b"HTTP/1.1 101"), "the upgrade's 101")
    ticket.release()
    assert admission.unauthenticated == 0
    websocket.data_received(client_frame(0x8, (1000).to_bytes(2, "big")))
    websocket.connection_lost(None)
    upgrading.connection_lost(None)
    await until(lambda: not websocket.tasks, "the end of the app's task")


async def test_a_keep_alive_connection_upgrades_after_a_plain_request() -> None:
    """The admission protocol works out once per request whether it asks for a WebSocket (uvicorn asks several
    times): a connection whose first request was a plain one upgrades on its next, as parsed."""
    accepted: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] == "http":
            await answer_ok(send)
            return
        await receive()
        await send({"type": "websocket.accept"})
        accepted.append(scope)
        await receive()

    transport, http = connect_through_admission(app)
    http.data_received(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await until(lambda: transport.written.endswith(b"ok"), "the plain response")
    assert transport.get_protocol() is http
    http.data_received(HANDSHAKE)
    websocket = transport.get_protocol()
    assert isinstance(websocket, LeanWebSocketProtocol) and isinstance(websocket.conn, OpenConnection)
    await until(lambda: accepted, "the WebSocket accepted")
    assert b"HTTP/1.1 101 Switching Protocols" in transport.written
    websocket.connection_lost(None)
    await until(lambda: not websocket.tasks, "the end of the app's task")


class FreshAddressTransport(FakeTransport):
    """Addresses as a real transport gives them: new tuples and strings on every call."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        port = {"peername": 50000, "sockname": 8000}.get(name)
        return default if port is None else (".".join(["127", "0", "0", "1"]), port)


async def test_connections_share_the_server_address_and_a_peer_host_string() -> None:
    config = ws_config(None)
    state = ServerState()
    first, second = (LeanWebSocketProtocol(config=config, server_state=state, app_state={},
                                           _loop=asyncio.get_running_loop()) for _ in range(2))  # fmt: skip
    for protocol in (first, second):
        protocol.connection_made(FreshAddressTransport())
    assert first.server == ("127.0.0.1", 8000) and first.server is second.server
    assert first.client == ("127.0.0.1", 50000) and first.client[0] is second.client[0]  # type: ignore[index]


def connect_through_admission(app: Any) -> tuple[FakeTransport, asyncio.Protocol]:
    """A connection made to the node's HTTP protocol (uvicorn's real parser): its transport and protocol."""
    cls = admitting_protocol(Admission(max_unauthenticated=5, handshake_timeout=5.0))
    http = cls(config=ws_config(app, http=cls), server_state=ServerState(), app_state={},
               _loop=asyncio.get_running_loop())  # fmt: skip
    transport = FakeTransport()
    transport.set_protocol(http)
    http.connection_made(transport)
    return transport, http


async def upgrade_through_admission(app: Any, request: bytes) -> tuple[FakeTransport, asyncio.BaseProtocol]:
    """``request`` into the node's HTTP protocol on uvicorn's real parser; the transport and its protocol after."""
    transport, http = connect_through_admission(app)
    http.data_received(request)
    return transport, transport.get_protocol()


async def test_a_plain_handshake_is_taken_as_parsed_with_uvicorns_scope_and_websockets_response() -> None:
    """The request httptools parsed goes to the WebSocket protocol as it is (no second parse): the app sees the
    scope uvicorn's way builds, and the client gets the 101 ``websockets`` builds, byte for byte but the date."""
    request = HANDSHAKE.replace(b"GET /ws ", b"GET /ws%20x?a=1&b=%C3%A9 ").replace(
        b"Sec-WebSocket-Protocol: croupier.v1.json", b"Sec-WebSocket-Protocol: croupier.v1.json, other"
    )
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        scopes.append({key: value for key, value in scope.items() if key != "extensions"})
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "croupier.v1.json"})
        scope["state"]["last"] = await receive()

    fast_transport, fast = await upgrade_through_admission(app, request)
    assert isinstance(fast, LeanWebSocketProtocol) and isinstance(fast.conn, OpenConnection)
    # uvicorn's own HTTP protocol: it writes the parsed request out again for websockets to parse.
    http = HttpToolsProtocol(config=ws_config(app), server_state=ServerState(), app_state={},
                             _loop=asyncio.get_running_loop())  # fmt: skip
    slow_transport = FakeTransport()
    slow_transport.set_protocol(http)
    http.connection_made(slow_transport)
    http.data_received(request)
    slow = slow_transport.get_protocol()
    assert isinstance(slow, LeanWebSocketProtocol) and isinstance(slow.conn, ServerProtocol)
    for transport in (fast_transport, slow_transport):
        await until(lambda t=transport: b"\r\n\r\n" in t.written, "the handshake response")  # type: ignore[misc]

    def undated(written: bytearray) -> list[bytes]:
        head = bytes(written).split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        return [line for line in head if not line.lower().startswith(b"date:")]

    assert undated(fast_transport.written) == undated(slow_transport.written)
    assert undated(fast_transport.written)[0] == b"HTTP/1.1 101 Switching Protocols"
    assert scopes[0] == scopes[1]
    assert scopes[0]["path"] == "/ws x" and scopes[0]["query_string"] == b"a=1&b=%C3%A9"
    assert scopes[0]["subprotocols"] == ["croupier.v1.json", "other"]
    for protocol in (fast, slow):
        protocol.data_received(client_frame(0x1, b"hello"))  # type: ignore[union-attr]
        await until(lambda p=protocol: "last" in p.scope["state"], "the message")  # type: ignore[misc]
        assert protocol.scope["state"]["last"]["text"] == "hello"  # type: ignore[union-attr]
        protocol.connection_lost(None)
        await until(lambda p=protocol: not p.tasks, "the end of the app's task")  # type: ignore[misc]


async def test_a_handshake_that_is_not_plain_goes_uvicorns_way_and_websockets_refuses_it() -> None:
    async def app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        raise AssertionError("a refused handshake reaches no app")

    request = HANDSHAKE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
    transport, protocol = await upgrade_through_admission(app, request)
    assert isinstance(protocol, LeanWebSocketProtocol) and isinstance(protocol.conn, ServerProtocol)
    assert transport.written.startswith(b"HTTP/1.1 400 Bad Request") and transport.closing
    assert transport.written.endswith(b"invalid Sec-WebSocket-Version header: 8.\n")


@pytest.mark.parametrize(
    ("method", "headers", "plain"),
    [
        ("GET", [], True),
        ("GET", [(b"connection", b"keep-alive, Upgrade")], True),
        ("GET", [(b"upgrade", b"WebSocket")], True),
        ("POST", [], False),
        ("GET", [(b"connection", b"keep-alive")], False),
        ("GET", [(b"sec-websocket-version", b"8")], False),
        ("GET", [(b"sec-websocket-key", b"c2hvcnQ=")], False),  # 5 bytes
        ("GET", [(b"sec-websocket-key", b"not base64!!")], False),
        ("GET", [(b"sec-websocket-key", None)], False),
        ("GET", [(b"extra", b"twice"), (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), ("dup", b"")], False),
    ],
)
def test_which_handshakes_are_plain(method: str, headers: list[tuple[Any, Any]], plain: bool) -> None:
    request = {b"host": b"127.0.0.1", b"upgrade": b"websocket", b"connection": b"Upgrade",
               b"sec-websocket-key": b"dGhlIHNhbXBsZSBub25jZQ==", b"sec-websocket-version": b"13"}  # fmt: skip
    extra: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name == "dup":  # the key a second time
            extra.append((b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="))
        elif value is None:
            del request[name]
        elif name in request:
            request[name] = value
        else:
            extra.append((name, value))
    config = ws_config(echo)
    key = LeanWebSocketProtocol.parsed_handshake_key(config, method, b"/ws", [*request.items(), *extra])
    assert (key is not None) is plain
    deflate = uvicorn.Config(echo, ws=LeanWebSocketProtocol, ws_per_message_deflate=True, log_config=None)
    assert LeanWebSocketProtocol.parsed_handshake_key(deflate, "GET", b"/ws", list(request.items())) is None
    if plain:  # a target that is not ASCII goes uvicorn's way (websockets refuses it)
        assert (
            LeanWebSocketProtocol.parsed_handshake_key(config, method, "/ws/é".encode(), list(request.items())) is None
        )


async def test_a_client_that_speaks_before_it_is_accepted_keeps_websockets_parser_and_loses_nothing() -> None:
    """websockets may be inside a frame when the app accepts: the connection is not swapped then."""
    accept = asyncio.Event()

    async def slow(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        await receive()
        await accept.wait()
        await send({"type": "websocket.accept"})
        scope["state"]["first"] = await receive()
        scope["state"]["second"] = await receive()

    protocol = LeanWebSocketProtocol(config=ws_config(slow), server_state=ServerState(), app_state={},
                                     _loop=asyncio.get_running_loop())  # fmt: skip
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE)
    early = client_frame(0x1, b"early")
    protocol.data_received(early + client_frame(0x1, b"next")[:3])  # a whole frame and the start of one
    await asyncio.sleep(0)
    accept.set()
    await until(lambda: b"\r\n\r\n" in transport.written, "the handshake response")
    assert isinstance(protocol.conn, ServerProtocol)
    protocol.data_received(client_frame(0x1, b"next")[3:])
    await until(lambda: "second" in protocol.scope["state"], "both messages")
    assert [protocol.scope["state"][k]["text"] for k in ("first", "second")] == ["early", "next"]
    protocol.connection_lost(None)
    await until(lambda: not protocol.tasks, "the end of the app's task")


async def test_the_lean_protocol_pings_from_the_shared_schedule_and_takes_the_pong() -> None:
    async def hold(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        scope["state"]["last"] = await receive()

    config = uvicorn.Config(hold, ws=LeanWebSocketProtocol, log_config=None, proxy_headers=False,
                            ws_per_message_deflate=False, ws_ping_interval=0.001, ws_ping_timeout=20.0)  # fmt: skip
    protocol = LeanWebSocketProtocol(config=config, server_state=ServerState(), app_state={},
                                     _loop=asyncio.get_running_loop())  # fmt: skip
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE)
    await until(lambda: b"\r\n\r\n" in transport.written, "the handshake response")
    assert protocol.ping_timer is None and protocol._ping_due is not None  # no timer of its own
    # The ping goes out at the next whole second of the loop's clock.
    for _ in range(300):
        if server_frames(bytes(transport.written)):
            break
        await asyncio.sleep(0.01)
    (opcode, payload), *_ = server_frames(bytes(transport.written))
    assert opcode == 0x9 and protocol._ping_due is None
    protocol.data_received(client_frame(0xA, payload))  # the pong schedules the next ping
    assert protocol._ping_due is not None and protocol.pong_timer is None
    protocol.data_received(client_frame(0x8, (1000).to_bytes(2, "big")))
    protocol.connection_lost(None)
    assert protocol._ping_due is None  # stopped with the connection
    await until(lambda: not protocol.tasks, "the end of the app's task")


async def test_an_idle_socket_holds_one_task_and_still_answers(node_server: RunningNode) -> None:
    """Authenticated and subscribed, then idle: uvicorn's task for the connection and nothing more
    (no parked writer), and the socket answers at once when spoken to again."""
    sockets = []
    for user_id in range(7001, 7011):
        ws, _ = await authed(node_server, user_id)
        assert (await request(ws, {"t": "subscribe", "id": 2, "game": "dice"}))["t"] == "subscribed"
        sockets.append(ws)
    await asyncio.sleep(0.2)
    # This process also runs the clients (websockets' tasks) and the node's own tasks.
    names = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]  # type: ignore[union-attr]
    assert names.count("WebSocketsSansIOProtocol.run_asgi") == len(sockets), names
    assert not [name for name in names if name.startswith("SendQueue.")], names
    for ws in sockets:
        assert (await request(ws, {"t": "ping", "id": 3}))["t"] == "pong"
        await ws.close()
