"""``GET /ws``: the WebSocket endpoint as a raw ASGI app, a thin adapter around :class:`Session`.

It negotiates the subprotocol, enforces the auth timeout and the frame size limit,
feeds frames to the session and puts the session's replies, encoded once, on the
socket's bounded :class:`SendQueue`.

It speaks ASGI directly (no Starlette ``WebSocket`` wrapper, no middleware stack; see
:class:`server.app.CroupierApp`): the frames of the send queue go straight to the
server's ``send``, and an idle socket keeps only what it needs. Starlette's per-message
state checks were a tenth of the node's CPU in a broadcast to 5,000 sockets, and its
middleware frames about 3 KiB of every idle socket.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import Receive, Scope, Send

from protocol import CloseCode, Codec, negotiate

from ..metrics import CONNECTIONS, FRAMES_OUT, REFUSED, SOCKETS_OPEN
from .admission import ADMISSION, Ticket
from .frame import Frame
from .sendqueue import SendQueue
from .services import SessionServices
from .session import Session, State
from .wsprotocol import SEND_NOW

log = logging.getLogger(__name__)


async def serve_socket(scope: Scope, receive: Receive, send: Send, services: SessionServices) -> None:
    """Serve one Mini App connection from handshake to close, with ``services`` (the node's)."""
    if (await receive())["type"] != "websocket.connect":
        return  # the client left before the handshake finished
    negotiated = negotiate(list(scope.get("subprotocols", [])))
    if negotiated is None:
        # Only unknown subprotocols offered: refuse the handshake (the server answers HTTP 403).
        REFUSED["subprotocol"].n += 1
        await send({"type": "websocket.close", "code": 1002,
                    "reason": "unsupported subprotocol; offer croupier.v1.json or .msgpack"})  # fmt: skip
        return
    codec, subprotocol = negotiated
    await send({"type": "websocket.accept", "subprotocol": subprotocol})

    # croupier serve's WebSocket protocol offers a synchronous write of a frame's wire bytes.
    send_now = scope.get("extensions", {}).get(SEND_NOW)
    sender = _Sender(send)
    queue = SendQueue(sender.frame, sender.close, limit=services.settings.send_queue_frames, send_now=send_now)
    client = scope.get("client")
    session = Session(services, _Peer(codec, queue), address=client[0] if client else None)
    # croupier serve's HTTP protocol counts the connection as unauthenticated until the session authenticates.
    ticket: Ticket | None = scope.get("extensions", {}).get(ADMISSION)
    if ticket is not None:
        ticket.claim()  # the handshake is done: the auth timeout applies from here, not the handshake timeout
        receive = ticket.watch(receive, lambda: session.state is State.READY)
    CONNECTIONS.of(codec.name).n += 1
    open_sockets = SOCKETS_OPEN.of(codec.name)
    open_sockets.n += 1
    # The loop is here rather than in a function of its own: an idle socket's task keeps every suspended
    # frame between uvicorn and the receive it waits on for hours (one more frame was ~290 bytes a socket).
    settings = services.settings
    auth_deadline = asyncio.get_running_loop().time() + settings.auth_timeout
    max_frame = settings.max_frame_bytes
    try:
        while not queue.closing:
            try:
                if session.state is State.AWAITING_AUTH:
                    async with asyncio.timeout_at(auth_deadline):
                        message = await receive()
                else:
                    message = await receive()
            except TimeoutError:
                outcome = session.auth_timed_out()
                queue.close(CloseCode.AUTH_TIMEOUT, outcome.reason)
                break
            if message["type"] != "websocket.receive":
                break  # websocket.disconnect
            frame: bytes | str | None = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            if _too_big(frame, max_frame):
                queue.close(CloseCode.MESSAGE_TOO_BIG, f"frame over {max_frame} bytes")
                break
            await _answer(session, queue, frame)
            # While it waits for the next frame, an idle socket keeps no copy of its last exchange.
            del message, frame
    finally:
        open_sockets.n -= 1
        if ticket is not None:
            ticket.release()
        await session.detach()
        if not queue.closing:
            queue.close(CloseCode.NORMAL, "")
        await queue.wait_closed(grace=5.0)


async def _answer(session: Session, queue: SendQueue, frame: bytes | str) -> None:
    """Hand one frame to the session and queue its replies, encoded once."""
    outcome = await session.receive(frame)
    codec = session.codec
    for reply in outcome.replies:
        queue.put(Frame(codec.encode(reply), codec.binary))
        FRAMES_OUT.of(type(reply)).n += 1
    if outcome.close is not None:
        queue.close(outcome.close, outcome.reason)


class _Sender:
    """The server's ASGI ``send`` as the send queue calls it (two bound methods of one small object: an idle
    socket kept two closures and their cells, twice the bytes)."""

    __slots__ = ("_send",)

    def __init__(self, send: Send) -> None:
        self._send = send

    async def frame(self, frame: Frame) -> None:
        # Only the queue's writer sends on the socket: the server raises an OSError
        # (ClientDisconnected) when the peer is gone, which ends the writer.
        if frame.binary:
            await self._send({"type": "websocket.send", "bytes": frame.data})
        else:
            await self._send({"type": "websocket.send", "text": frame.data.decode()})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


class _Peer:
    """This socket as the per-user registry sees it: its codec and its send queue."""

    __slots__ = ("_queue", "codec", "put")

    def __init__(self, codec: Codec, queue: SendQueue) -> None:
        self.codec = codec
        self.put = queue.put
        self._queue = queue

    def backlog(self) -> float:
        return self._queue.fill

    def close(self, code: CloseCode, reason: str) -> None:
        if not self._queue.closing:
            self._queue.close(code, reason)


def _too_big(frame: bytes | str, limit: int) -> bool:
    if len(frame) > limit:
        return True
    if isinstance(frame, str) and len(frame) * 4 > limit:
        return len(frame.encode()) > limit
    return False
