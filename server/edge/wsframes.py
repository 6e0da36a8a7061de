"""RFC 6455 once a socket is open, server side, without extensions: the frames a client sends and the
control frames the server answers with.

:class:`OpenConnection` stands in for ``websockets.ServerProtocol`` after the handshake of a socket that
negotiated no extension (permessage-deflate is off by default, ``CROUPIER_WS_COMPRESSION``), with the
part of its interface that uvicorn's WebSocket protocol uses from then on (``receive_data``,
``events_received``, ``data_to_send``, ``send_text``/``send_binary``/``send_ping``/``send_close``,
``fail``, ``state``, ``close_rcvd``/``close_sent``, ``parser_exc``), and, for a handshake the node took as
uvicorn's HTTP protocol parsed it, the response's part (``send_response``, ``reject``: ``websockets``' own
response objects). ``websockets`` parses with three
nested generators and a stream reader per connection (about 1.7 KiB that an idle socket keeps, and a
generator round trip per byte range read); this is one bytes buffer, parsed in a loop when data comes.

The rules are RFC 6455's, as ``websockets`` applies them to a server: client frames must be masked,
reserved bits clear, opcodes known, control frames unfragmented and at most 125 bytes, continuation
frames only inside a fragmented message; any of these broken closes with 1002; a message over the size
limit closes with 1009 as soon as its header says so (before its payload is buffered); a close frame's
code must be one a peer may send and its reason UTF-8 (1002 / 1007). A ping is answered with a pong of
the same payload; a close frame is echoed, after which input is discarded. Text is not decoded here:
uvicorn decodes each message and closes with 1007 on invalid UTF-8.
"""

from __future__ import annotations

import email.utils
import http
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, PayloadTooBig, ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import CLOSING, CONNECTING, OPEN, State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_OPCODES = {code: Opcode(code) for code in (_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG)}
_FIN = 0x80
MAX_CLOSE_REASON = 123
"""Bytes of a close frame's reason: a control frame's payload is at most 125 bytes, 2 of them the code."""


def control_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked control frame (FIN set) carrying ``payload`` (at most 125 bytes)."""
    return bytes((_FIN | opcode, len(payload))) + payload


def data_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked, unfragmented data frame carrying ``payload``."""
    length = len(payload)
    if length < 126:
        return bytes((_FIN | opcode, length)) + payload
    if length < 1 << 16:
        return bytes((_FIN | opcode, 126)) + length.to_bytes(2, "big") + payload
    return bytes((_FIN | opcode, 127)) + length.to_bytes(8, "big") + payload


def close_payload(code: int | None, reason: str) -> bytes:
    """A close frame's payload: none without a code, else the code and the reason (cut to fit, UTF-8 kept
    whole)."""
    if code is None:
        return b""
    encoded = reason.encode()
    if len(encoded) > MAX_CLOSE_REASON:
        encoded = encoded[:MAX_CLOSE_REASON].decode(errors="ignore").encode()
    return code.to_bytes(2, "big") + encoded


class OpenConnection:
    """One open WebSocket, server side, no extension: parses the client's frames into ``websockets``
    :class:`~websockets.frames.Frame` events and serializes the server's, as ``websockets.ServerProtocol``
    does once open (see the module's docstring for the rules).

    ``max_size``: the largest message (payload bytes, fragments summed) the client may send, or None."""

    __slots__ = ("_buffer", "_discarding", "_events", "_message", "_writes", "close_rcvd", "close_sent",
                 "max_size", "parser_exc", "state")  # fmt: skip

    extensions: tuple[Any, ...] = ()
    handshake_exc: Exception | None = None

    def __init__(self, max_size: int | None, state: State = OPEN) -> None:
        self.max_size = max_size
        self.state: State = state  # CONNECTING until the handshake response is sent (send_response), then OPEN
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.parser_exc: Exception | None = None
        self._buffer: bytearray | None = None  # the start of a frame whose end has not come yet
        self._discarding = False  # after a close frame or a failure: nothing more is read
        self._message: int | None = None  # bytes so far of a fragmented message in progress, else None
        self._events: list[Frame] | None = None
        self._writes: list[bytes] | None = None

    # Input

    def receive_data(self, data: bytes) -> None:
        """Parse what the client sent; complete frames become events, a partial one waits for the rest.

        The checks come in the order ``websockets`` makes them (so that a frame with several faults is refused
        for the same one): opcode and masking from the first two bytes, the size from the length, the rest
        once the whole frame is in."""
        if self._discarding:
            return
        buffer: bytes | bytearray
        if self._buffer is None:
            buffer = data
        else:  # grown in place: a frame that comes in many pieces is not copied again for each piece
            buffer = self._buffer
            buffer += data
        size = len(buffer)
        at = 0
        while size - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            opcode = first & 0x0F
            if opcode not in _OPCODES:
                self._failed(1002, ProtocolError("invalid opcode"))
                return
            if not second & 0x80:
                self._failed(1002, ProtocolError("incorrect masking"))
                return
            length = second & 0x7F
            head = at + 2
            if length == 126:
                if size - at < 4:
                    break
                length = int.from_bytes(buffer[head : head + 2], "big")
                head += 2
            elif length == 127:
                if size - at < 10:
                    break
                length = int.from_bytes(buffer[head : head + 8], "big")
                head += 8
            if self.max_size is not None:
                limit = self.max_size - (self._message or 0)
                if length > limit:
                    too_big = PayloadTooBig(length, limit)
                    too_big.set_current_size(self._message)
                    self._failed(1009, too_big)
                    return
            end = head + 4 + length
            if end > size:
                break
            payload = apply_mask(buffer[head + 4 : end], buffer[head : head + 4]) if length else b""
            at = end
            fin = bool(first & _FIN)
            if first & 0x70:
                self._failed(1002, ProtocolError("reserved bits must be 0"))
                return
            if opcode >= _CLOSE:
                if length > 125:
                    self._failed(1002, ProtocolError("control frame too long"))
                    return
                if not fin:
                    self._failed(1002, ProtocolError("fragmented control frame"))
                    return
            self._frame(opcode, payload, fin)
            if self._discarding:
                return
        if at >= size:
            self._buffer = None
        elif at == 0:
            self._buffer = buffer if isinstance(buffer, bytearray) else bytearray(buffer)
        else:
            self._buffer = bytearray(memoryview(buffer)[at:])

    def _frame(self, opcode: int, payload: bytes, fin: bool) -> None:
        """A whole frame: what it means for the message in progress and the closing handshake."""
        if opcode in (_TEXT, _BINARY):
            if self._message is not None:
                self._failed(1002, ProtocolError("expected a continuation frame"))
                return
            if not fin:
                self._message = len(payload)
        elif opcode == _CONT:
            if self._message is None:
                self._failed(1002, ProtocolError("unexpected continuation frame"))
                return
            self._message = None if fin else self._message + len(payload)
        elif opcode == _PING:
            self._write(control_frame(_PONG, payload))
        elif opcode == _CLOSE:
            try:
                self.close_rcvd = Close.parse(payload)
            except ProtocolError as exc:
                self._failed(1002, exc)
                return
            except UnicodeDecodeError as exc:
                self._failed(1007, exc, f"{exc.reason} at position {exc.start}")
                return
            if self._message is not None:
                self._failed(1002, ProtocolError("incomplete fragmented message"))
                return
            if self.state is OPEN:
                self._write(control_frame(_CLOSE, payload))  # echoed as the client sent it (1005: no payload)
                self.close_sent = self.close_rcvd
                self.state = CLOSING
            self._discarding = True
        if self._events is None:
            self._events = []
        self._events.append(Frame(_OPCODES[opcode], payload, fin))

    def _failed(self, code: int, exc: Exception, reason: str | None = None) -> None:
        self.parser_exc = exc
        self.fail(code, str(exc) if reason is None else reason)

    def events_received(self) -> list[Frame]:
        """The frames parsed since the last call."""
        events, self._events = self._events, None
        return events or []

    # Output

    def data_to_send(self) -> list[bytes]:
        """The bytes to write since the last call."""
        writes, self._writes = self._writes, None
        return writes or []

    def _write(self, data: bytes) -> None:
        if self._writes is None:
            self._writes = [data]
        else:
            self._writes.append(data)

    def send_response(self, response: Response) -> None:
        """Write the handshake's HTTP response: 101 opens the connection, anything else ends it (nothing more is
        read), as ``websockets`` does."""
        self._write(response.serialize())
        if response.status_code == 101:
            if self.state is not CONNECTING:
                raise InvalidState(f"connection is {self.state.name.lower()}")
            self.state = OPEN
        else:
            self._discarding = True
            self._buffer = None

    @staticmethod
    def reject(status: int, text: str) -> Response:
        """An HTTP response refusing the handshake, as ``websockets``' ``reject`` builds it."""
        phrase = http.HTTPStatus(status)
        body = text.encode()
        headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                           ("Content-Length", str(len(body))),
                           ("Content-Type", "text/plain; charset=utf-8")])  # fmt: skip
        return Response(phrase.value, phrase.phrase, headers, body)

    def send_text(self, data: bytes, fin: bool = True) -> None:
        self._send_data(_TEXT, data)

    def send_binary(self, data: bytes, fin: bool = True) -> None:
        self._send_data(_BINARY, data)

    def _send_data(self, opcode: int, data: bytes) -> None:
        if self.state is not OPEN:
            raise InvalidState(f"connection is {self.state.name.lower()}")
        self._write(data_frame(opcode, data))

    def send_ping(self, data: bytes) -> None:
        if self.state is not OPEN and self.state is not CLOSING:
            raise InvalidState(f"connection is {self.state.name.lower()}")
        self._write(control_frame(_PING, data))

    def send_close(self, code: int | None = None, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason`` (no code: an empty close frame)."""
        if self.state is not OPEN:
            raise InvalidState(f"connection is {self.state.name.lower()}")
        self._write(control_frame(_CLOSE, close_payload(code, reason)))
        self.close_sent = Close(1005 if code is None else code, reason if code is not None else "")
        self.state = CLOSING

    def fail(self, code: int, reason: str = "") -> None:
        """Close with ``code`` because something went wrong, and read nothing more."""
        if self.state is OPEN:
            self._write(control_frame(_CLOSE, close_payload(code, reason)))
            self.close_sent = Close(code, reason)
            self.state = CLOSING
        self._discarding = True
        self._buffer = None
