"""JSON and MessagePack codecs for the v1 contract: frames in, typed messages out.

Sans-I/O: a codec turns one WebSocket frame into a :data:`~protocol.messages.Request`
(validating every field) and a server message into frame bytes. Decoding errors are
:class:`ProtocolError` values that say which field was wrong and carry the request id
when it could be read, so the server can answer with a precise ``error``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from .codes import ErrorCode
from .messages import MAX_ID_LENGTH, Request, RequestId, ServerMessage

JSON_SUBPROTOCOL: Final = "croupier.v1.json"
MSGPACK_SUBPROTOCOL: Final = "croupier.v1.msgpack"

_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")


@dataclass(frozen=True, slots=True)
class ProtocolError(Exception):
    """A frame that is not a valid request.

    ``code`` is ``bad_request`` or ``unknown_type``; ``field`` names the offending field
    (``None`` when the frame as a whole is wrong); ``request_id`` is the frame's ``id``
    when it could be read, so the error reply can echo it.
    """

    code: ErrorCode
    message: str
    field: str | None = None
    request_id: RequestId | None = None
    message_type: str | None = None
    """The frame's ``t`` when it was a string, even if the rest was invalid."""

    def __str__(self) -> str:
        return self.message


class _Envelope(msgspec.Struct):
    """Only ``t`` and ``id`` of a frame: read again after a failed decode, to echo the id."""

    t: Any = None
    id: Any = None


class Codec:
    """Encoder and validating decoder for one subprotocol.

    ``binary`` says whether frames of this subprotocol travel as binary (MessagePack) or
    text (JSON) WebSocket frames. Instances are stateless and safe to share.
    """

    name: str
    binary: bool

    def __init__(self, name: str) -> None:
        self.name = name
        if name == JSON_SUBPROTOCOL:
            self.binary = False
            self._decoder: msgspec.json.Decoder[Request] | msgspec.msgpack.Decoder[Request] = msgspec.json.Decoder(
                Request
            )
            self._envelope: msgspec.json.Decoder[_Envelope] | msgspec.msgpack.Decoder[_Envelope] = msgspec.json.Decoder(
                _Envelope
            )
            self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder = msgspec.json.Encoder()
        elif name == MSGPACK_SUBPROTOCOL:
            self.binary = True
            self._decoder = msgspec.msgpack.Decoder(Request)
            self._envelope = msgspec.msgpack.Decoder(_Envelope)
            self._encoder = msgspec.msgpack.Encoder()
        else:
            raise ValueError(f"unknown subprotocol {name!r}")

    def decode(self, frame: bytes | str) -> Request:
        """Decode and validate one frame.

        Raises :class:`ProtocolError` naming the field that was wrong.
        """
        if isinstance(frame, str) and self.binary:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"text frames are not accepted on {self.name}; send binary")
        if isinstance(frame, bytes) and not self.binary:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"binary frames are not accepted on {self.name}; send text")
        try:
            return self._decoder.decode(frame)  # type: ignore[arg-type]  # the JSON decoder takes str too
        except msgspec.ValidationError as exc:
            raise self._validation_error(frame, str(exc)) from None
        except msgspec.DecodeError as exc:
            kind = "MessagePack" if self.binary else "JSON"
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"frame is not valid {kind}: {exc}") from None

    def encode(self, message: ServerMessage | dict[str, Any]) -> bytes:
        """Encode one server message (or a prepared push map) to frame bytes.

        Encode once per broadcast and hand the same bytes to every socket.
        """
        return self._encoder.encode(message)

    def request_id(self, frame: bytes | str) -> RequestId | None:
        """The ``id`` of a frame without validating the rest (None when it has no readable id)."""
        return self._read_envelope(frame)[0]

    def _validation_error(self, frame: bytes | str, detail: str) -> ProtocolError:
        request_id, message_type = self._read_envelope(frame)
        if detail.startswith("Expected `object`") and " - at `" not in detail:
            return ProtocolError(ErrorCode.BAD_REQUEST, "a message must be a map with a string `t`")
        match = _AT_PATH.search(detail)
        field = match.group(1) if match else None
        if field is None:
            missing = _MISSING.search(detail)
            field = missing.group(1) if missing else None
        if field == "t" and detail.startswith("Invalid value"):
            return ProtocolError(
                ErrorCode.UNKNOWN_TYPE, f"unknown message type {message_type!r}", "t", request_id, message_type
            )
        if field == "id":
            request_id = None
        message = f"invalid field `{field}`: {detail}" if field else f"invalid message: {detail}"
        return ProtocolError(ErrorCode.BAD_REQUEST, message, field, request_id, message_type)

    def _read_envelope(self, frame: bytes | str) -> tuple[RequestId | None, str | None]:
        try:
            envelope = self._envelope.decode(frame)  # type: ignore[arg-type]
        except (msgspec.DecodeError, TypeError):  # TypeError: a text frame given to the MessagePack codec
            return None, None
        raw, kind = envelope.id, envelope.t
        message_type = kind if isinstance(kind, str) else None
        if isinstance(raw, bool):
            return None, message_type
        if isinstance(raw, int) or (isinstance(raw, str) and len(raw) <= MAX_ID_LENGTH):
            return raw, message_type
        return None, message_type


JSON = Codec(JSON_SUBPROTOCOL)
MSGPACK = Codec(MSGPACK_SUBPROTOCOL)
SUBPROTOCOLS: Final[dict[str, Codec]] = {JSON.name: JSON, MSGPACK.name: MSGPACK}


def negotiate(offered: list[str]) -> tuple[Codec, str | None] | None:
    """Pick the codec for a handshake offering ``offered`` subprotocols.

    Returns the codec and the subprotocol to echo in the handshake response (``None``
    when the client offered none, which means JSON), or ``None`` when the client offered
    only subprotocols this server does not speak: refuse the handshake.
    """
    if not offered:
        return JSON, None
    for name in offered:
        codec = SUBPROTOCOLS.get(name)
        if codec is not None:
            return codec, name
    return None
