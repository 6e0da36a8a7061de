"""A minimal WebSocket client for benchmarks: thousands of sockets in one process, cheaply.

The ``websockets`` client costs tens of microseconds per frame in Python; a benchmark that
delivers a million frames to one load-generating process would measure that client. This one is
an :class:`asyncio.Protocol` that does the HTTP upgrade, sends masked text frames, and on the way
in only walks the frame headers to count frames (payloads are decoded only while a caller waits
for a reply). Server frames are unmasked, never fragmented by Croupier or ``websockets``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import Any

import orjson

REPLY_TIMEOUT = 30.0


def text_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client frame (FIN, text by default), masked with a zero key: the payload stays as it is."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + b"\0\0\0\0" + payload


class CountingClient(asyncio.Protocol):
    """One socket: counts the frames the server sends; :meth:`request` waits for a decoded reply."""

    def __init__(self, host: str, port: int, path: str = "/ws", subprotocol: str = "croupier.v1.json") -> None:
        self.request_line = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.frames = 0
        self.close_code: int | None = None
        self._buffer = bytearray()
        self._waiting: asyncio.Future[dict[str, Any]] | None = None
        self.target = 0
        self.reached: asyncio.Future[None] | None = None
        #: Called with every data frame's payload when set (a benchmark that reads what it receives).
        self.on_frame: Callable[[bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request_line)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"connection lost during the upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " not in status:
                self.upgraded.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.upgraded.set_result(None)
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if size - position < 4:
                    break
                length, header = (buffer[position + 2] << 8) | buffer[position + 3], 4
            elif length == 127:
                if size - position < 10:
                    break
                length, header = struct.unpack_from("!Q", buffer, position + 2)[0], 10
            end = position + header + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode == 9:  # ping: keepalive must be answered, or the server closes the socket
                assert self.transport is not None
                self.transport.write(text_frame(bytes(buffer[position + header : end]), opcode=10))
            elif opcode == 8:  # close
                if length >= 2:
                    self.close_code = (buffer[position + header] << 8) | buffer[position + header + 1]
            elif opcode in (1, 2):
                self.frames += 1
                if self.on_frame is not None:
                    self.on_frame(bytes(buffer[position + header : end]))
                waiting = self._waiting
                if waiting is not None and not waiting.done():
                    message = orjson.loads(bytes(buffer[position + header : end]))
                    if "ch" not in message:
                        waiting.set_result(message)
                if self.reached is not None and self.frames >= self.target and not self.reached.done():
                    self.reached.set_result(None)
            position = end
        del buffer[:position]

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` and wait (at most 30 s) for the next reply that is not a push."""
        self._waiting = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(text_frame(orjson.dumps(message)))
        try:
            return await asyncio.wait_for(self._waiting, REPLY_TIMEOUT)
        finally:
            self._waiting = None

    def expect(self, frames: int) -> asyncio.Future[None]:
        """A future done once ``frames`` more frames have arrived."""
        self.target = self.frames + frames
        self.reached = asyncio.get_running_loop().create_future()
        if self.frames >= self.target:
            self.reached.set_result(None)
        return self.reached

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_client(host: str, port: int, path: str = "/ws") -> CountingClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: CountingClient(host, port, path), host, port)
    await client.upgraded
    return client
