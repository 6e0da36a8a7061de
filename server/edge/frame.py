"""One outgoing WebSocket message, encoded once: its payload and its complete wire frame.

A broadcast to thousands of sockets sends the same message to each of them. Server frames
are never masked (RFC 6455, 5.1) and permessage-deflate is off by default
(``CROUPIER_WS_COMPRESSION``; a socket that negotiated it gets its own compressed copy), so the bytes
on the wire are the same for every socket: :class:`Frame` builds them once (header and payload, one ``bytes``)
and every socket with room gets exactly those bytes written to its transport. Without this,
the WebSocket library serializes the frame again for each socket, and a text payload is
decoded to ``str`` and encoded back, per socket.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80


def frame_header(length: int, binary: bool) -> bytes:
    """The RFC 6455 header of an unmasked, unfragmented data frame carrying ``length`` bytes."""
    first = _FIN | (OP_BINARY if binary else OP_TEXT)
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


class Frame:
    """An encoded message (``data``: UTF-8 JSON text, or MessagePack when ``binary``) and the
    server-to-client frame that carries it (``wire``)."""

    __slots__ = ("binary", "data", "wire")

    def __init__(self, data: bytes, binary: bool) -> None:
        self.data = data
        self.binary = binary
        self.wire = frame_header(len(data), binary) + data

    def __repr__(self) -> str:
        return f"Frame({self.data!r}, binary={self.binary})"
