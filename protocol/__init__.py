"""The Croupier v1 wire contract as pure code: messages, codecs, error and close codes.

No I/O, no asyncio, no server imports (a test enforces it), so client authors and
tools can depend on this package alone.
"""

from __future__ import annotations

from .codec import JSON, JSON_SUBPROTOCOL, MSGPACK, MSGPACK_SUBPROTOCOL, SUBPROTOCOLS, Codec, ProtocolError, negotiate
from .codes import CloseCode, ErrorCode

__all__ = [
    "JSON",
    "JSON_SUBPROTOCOL",
    "MSGPACK",
    "MSGPACK_SUBPROTOCOL",
    "SUBPROTOCOLS",
    "CloseCode",
    "Codec",
    "ErrorCode",
    "ProtocolError",
    "negotiate",
]
