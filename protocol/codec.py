"""JSON and MessagePack codecs for the v1 contract: frames in, typed messages out.

Sans-I/O: a codec turns one WebSocket frame into a :data:`~protocol.messages.Request`
(validating every field) and a server message into frame bytes. Decoding errors are
:class:`ProtocolError` values that say which field was wrong and carry the request id
when it could be read, so the server can answer with a precise ``error``.

Hostile frames end as :class:`ProtocolError` too, never as another exception: text that
PostgreSQL cannot store and ``params`` that are not plain JSON (see :mod:`protocol.checks`),
and frames nested deeper than the decoder recurses (msgspec raises ``RecursionError``
past the interpreter's recursion limit, for JSON and MessagePack alike).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from .checks import CHECKS, MAX_PARAMS_DEPTH, check_params, check_request
from .codes import ErrorCode
from .messages import MAX_ID_LENGTH, REQUEST_TYPES, Request, RequestId, ServerMessage

JSON_SUBPROTOCOL: Final = "croupier.v1.json"
MSGPACK_SUBPROTOCOL: Final = "croupier.v1.msgpack"

_AT_PATH = re.compile(r" - at (?:`[^`]*` in )?`\$\.?([^`]*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_LONE_SURROGATE = re.compile(
    r"[\ud800-\udfff]"  # a raw surrogate code point in a str frame (not UTF-8: msgspec cannot read it)
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"  # a high surrogate escape, no low after
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a low surrogate escape, no high before
)
_TAGS: Final[dict[type[Any], str]] = {kind: str(kind.__struct_config__.tag) for kind in REQUEST_TYPES}
TOO_DEEP: Final = f"frame nests maps or arrays too deeply (params: at most {MAX_PARAMS_DEPTH} levels)"


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
            self._untyped: msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any] = msgspec.json.Decoder()
        elif name == MSGPACK_SUBPROTOCOL:
            self.binary = True
            self._decoder = msgspec.msgpack.Decoder(Request)
            self._envelope = msgspec.msgpack.Decoder(_Envelope)
            self._encoder = msgspec.msgpack.Encoder()
            self._untyped = msgspec.msgpack.Decoder()
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
            request = self._decoder.decode(frame)  # type: ignore[arg-type]  # the JSON decoder takes str too
        except msgspec.ValidationError as exc:
            raise self._validation_error(frame, str(exc)) from None
        except msgspec.DecodeError as exc:
            raise self._decode_error(frame, str(exc)) from None
        except UnicodeEncodeError:  # a str frame holding a raw lone surrogate (never from a real socket)
            raise self._decode_error(frame, "a string is not valid UTF-8") from None
        except RecursionError:
            request_id, message_type = self._read_envelope(frame)
            raise ProtocolError(ErrorCode.BAD_REQUEST, TOO_DEEP, None, request_id, message_type) from None
        check = CHECKS.get(type(request))  # check_request(), without a call for requests with nothing to check
        if check is not None and (problem := check(request)) is not None:
            raise self._refusal(request, problem)
        return request

    def encode(self, message: ServerMessage | dict[str, Any]) -> bytes:
        """Encode one server message (or a prepared push map) to frame bytes.

        Encode once per broadcast and hand the same bytes to every socket.
        """
        return self._encoder.encode(message)

    def request_id(self, frame: bytes | str) -> RequestId | None:
        """The ``id`` of a frame without validating the rest (None when it has no readable id)."""
        return self._read_envelope(frame)[0]

    @staticmethod
    def _refusal(request: Request, problem: tuple[str, str]) -> ProtocolError:
        field, reason = problem
        return ProtocolError(ErrorCode.BAD_REQUEST, f"invalid field `{field}`: it {reason}", field, request.id,
                             _TAGS[type(request)])  # fmt: skip

    def _decode_error(self, frame: bytes | str, detail: str) -> ProtocolError:
        """The error for a frame the decoder could not read, naming the field when a lone surrogate was the cause."""
        kind = "MessagePack" if self.binary else "JSON"
        if isinstance(frame, str) and _LONE_SURROGATE.search(frame):
            # JSON text cannot hold a lone surrogate. Read the frame again with U+0000 in its place to tell
            # which field held it (the same refusal as for U+0000), or at least echo the id.
            patched = _LONE_SURROGATE.sub(r"\\u0000", frame)
            try:
                request = self._decoder.decode(patched)  # type: ignore[arg-type]  # the JSON decoder takes str
            except msgspec.ValidationError as exc:  # the surrogates were not all that was wrong
                return self._validation_error(patched, str(exc))
            except (msgspec.DecodeError, RecursionError):
                return ProtocolError(ErrorCode.BAD_REQUEST, f"frame is not valid {kind}: {detail}")
            problem = check_request(request)
            if problem is not None:
                return self._refusal(request, problem)
            request_id, message_type = self._read_envelope(patched)
            return ProtocolError(ErrorCode.BAD_REQUEST, "frame is not valid JSON: a string holds a lone UTF-16 "
                                 "surrogate, which is not text", None, request_id, message_type)  # fmt: skip
        return ProtocolError(ErrorCode.BAD_REQUEST, f"frame is not valid {kind}: {detail}")

    def _validation_error(self, frame: bytes | str, detail: str) -> ProtocolError:
        request_id, message_type = self._read_envelope(frame)
        if detail.startswith("Expected `object`") and " - at `" not in detail:
            return ProtocolError(ErrorCode.BAD_REQUEST, "a message must be a map with a string `t`")
        match = _AT_PATH.search(detail)
        field = match.group(1) if match else None
        if field is not None and "[...]" in field:  # inside a map msgspec does not name the key
            field = field.partition("[...]")[0]
            if field == "params":
                return self._params_error(frame, detail, request_id, message_type)
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

    def _params_error(
        self, frame: bytes | str, detail: str, request_id: RequestId | None, message_type: str | None
    ) -> ProtocolError:
        """A value in ``params`` the decoder refused: read them again untyped to name the value and say why."""
        problem: tuple[str, str] | None = None
        try:
            raw = self._untyped.decode(frame)  # type: ignore[arg-type]
        except (msgspec.MsgspecError, RecursionError, UnicodeEncodeError):
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("params"), dict):
            problem = check_params(raw["params"])
        if problem is None:
            return ProtocolError(ErrorCode.BAD_REQUEST, f"invalid field `params`: {detail}", "params", request_id,
                                 message_type)  # fmt: skip
        field, reason = problem
        return ProtocolError(ErrorCode.BAD_REQUEST, f"invalid field `{field}`: it {reason}", field, request_id,
                             message_type)  # fmt: skip

    def _read_envelope(self, frame: bytes | str) -> tuple[RequestId | None, str | None]:
        try:
            envelope = self._envelope.decode(frame)  # type: ignore[arg-type]
        except (msgspec.DecodeError, TypeError, UnicodeEncodeError, RecursionError):
            # TypeError: a text frame given to the MessagePack codec; UnicodeEncodeError: a raw lone surrogate
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
