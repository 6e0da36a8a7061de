"""``GET /ws``: the Starlette WebSocket endpoint, a thin adapter around :class:`Session`.

It negotiates the subprotocol, enforces the auth timeout and the frame size limit,
feeds frames to the session and puts the session's replies, encoded once, on the
socket's bounded :class:`SendQueue`.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from protocol import CloseCode, Codec, negotiate

from ..node import Node
from .sendqueue import Frame, SendQueue
from .session import Session, State

log = logging.getLogger(__name__)


class _AsgiEndpoint:
    """Starlette routes an object that is not a function as a raw ASGI app (scope, receive, send)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve_socket(scope, receive, send)


async def serve_socket(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one Mini App connection from handshake to close (a raw ASGI app: the frames of the
    send queue go straight to the server's ``send``, past Starlette's per-message state checks,
    which were a tenth of the node's CPU in a broadcast to 5,000 sockets)."""
    websocket = WebSocket(scope, receive, send)
    node: Node = websocket.app.state.node
    negotiated = negotiate(list(websocket.scope.get("subprotocols", [])))
    if negotiated is None:
        # Only unknown subprotocols offered: refuse the handshake (HTTP 403).
        await websocket.close(code=1002, reason="unsupported subprotocol; offer croupier.v1.json or .msgpack")
        return
    codec, subprotocol = negotiated
    await websocket.accept(subprotocol=subprotocol)

    async def send_frame(frame: Frame) -> None:
        # The socket is accepted and only this queue's writer sends on it: the server raises an
        # OSError (ClientDisconnected) when the peer is gone, which ends the writer.
        if isinstance(frame, bytes):
            await send({"type": "websocket.send", "bytes": frame})
        else:
            await send({"type": "websocket.send", "text": frame})

    async def close(code: int, reason: str) -> None:
        try:
            await websocket.close(code=code, reason=reason)
        except WebSocketDisconnect as exc:
            raise ConnectionError("peer disconnected") from exc

    queue = SendQueue(send_frame, close, limit=node.settings.send_queue_frames)
    queue.start()
    session = Session(node, _Peer(codec, queue))
    loop = asyncio.get_running_loop()
    auth_deadline = loop.time() + node.settings.auth_timeout
    max_frame = node.settings.max_frame_bytes
    try:
        while not queue.closing:
            try:
                if session.state is State.AWAITING_AUTH:
                    async with asyncio.timeout_at(auth_deadline):
                        message = await websocket.receive()
                else:
                    message = await websocket.receive()
            except TimeoutError:
                outcome = session.auth_timed_out()
                queue.close(CloseCode.AUTH_TIMEOUT, outcome.reason)
                break
            if message["type"] == "websocket.disconnect":
                break
            frame: bytes | str | None = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            if _too_big(frame, max_frame):
                queue.close(CloseCode.MESSAGE_TOO_BIG, f"frame over {max_frame} bytes")
                break
            outcome = await session.receive(frame)
            for reply in outcome.replies:
                data = codec.encode(reply)
                queue.put(data if codec.binary else data.decode())
            if outcome.close is not None:
                queue.close(outcome.close, outcome.reason)
    except WebSocketDisconnect:
        pass
    finally:
        await session.detach()
        if not queue.closing:
            queue.close(CloseCode.NORMAL, "")
        await queue.wait_closed(grace=5.0)


class _Peer:
    """This socket as the per-user registry sees it: its codec and its send queue."""

    __slots__ = ("_queue", "codec", "put")

    def __init__(self, codec: Codec, queue: SendQueue) -> None:
        self.codec = codec
        self.put = queue.put
        self._queue = queue

    def backlog(self) -> float:
        return self._queue.fill


def _too_big(frame: bytes | str, limit: int) -> bool:
    if len(frame) > limit:
        return True
    if isinstance(frame, str) and len(frame) * 4 > limit:
        return len(frame.encode()) > limit
    return False


websocket_endpoint = _AsgiEndpoint()
"""The ``GET /ws`` route's app."""
