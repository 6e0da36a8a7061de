"""OpenConnection: the client's frames and the server's control frames once a socket is open, checked against
the rules and, case by case, against what ``websockets.ServerProtocol`` does with the same bytes."""

from __future__ import annotations

import struct

import pytest
from websockets.exceptions import InvalidState, PayloadTooBig, ProtocolError
from websockets.frames import Opcode
from websockets.protocol import CLOSING, CONNECTING, OPEN
from websockets.server import ServerProtocol

from server.edge.wsframes import MAX_CLOSE_REASON, OpenConnection, close_payload

MASK = b"\x0f\xf0\x3c\xc3"
HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """A client frame as a client would send it (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 1 << 16:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", length)
    if not masked:
        return header + payload
    return header + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def websockets_open(max_size: int | None) -> ServerProtocol:
    """websockets' own server connection, through its handshake and open."""
    conn = ServerProtocol(max_size=max_size)
    conn.receive_data(HANDSHAKE)
    (request,) = conn.events_received()
    conn.send_response(conn.accept(request))
    conn.data_to_send()
    assert conn.state is OPEN
    return conn


def run(conn: ServerProtocol | OpenConnection, chunks: list[bytes]) -> tuple[list[tuple[int, bytes, bool]], bytes]:
    """Feed ``chunks`` one by one; the events (opcode, payload, fin) and the bytes written (EOF markers aside)."""
    events = []
    written = b""
    for chunk in chunks:
        conn.receive_data(chunk)
        events += [(int(e.opcode), bytes(e.data), e.fin) for e in conn.events_received()]  # type: ignore[union-attr]
        written += b"".join(conn.data_to_send())
    return events, written


CASES = {
    "text": [frame(0x1, b'{"t":"ping","id":1}')],
    "binary": [frame(0x2, bytes(range(50)))],
    "empty text": [frame(0x1, b"")],
    "two frames in one read": [frame(0x1, b"a") + frame(0x1, b"bc")],
    "126-byte length": [frame(0x1, b"x" * 300)],
    "fragmented": [frame(0x1, b"he", fin=False), frame(0x0, b"ll", fin=False), frame(0x0, b"o")],
    "ping answered": [frame(0x9, b"abc")],
    "ping inside a fragmented message": [frame(0x1, b"a", fin=False), frame(0x9, b""), frame(0x0, b"b")],
    "pong": [frame(0xA, b"\x01\x02\x03\x04")],
    "close 1000 with reason": [frame(0x8, struct.pack("!H", 1000) + b"bye")],
    "close without payload": [frame(0x8, b"")],
    "close 4400": [frame(0x8, struct.pack("!H", 4400))],
    "input after close ignored": [frame(0x8, struct.pack("!H", 1001)) + frame(0x1, b"late")],
    "unmasked": [frame(0x1, b"hi", masked=False)],
    "reserved bit": [frame(0x1, b"hi", rsv=0x40)],
    "reserved opcode 3": [frame(0x3, b"hi")],
    "reserved opcode 11": [frame(0xB, b"")],
    "fragmented control": [frame(0x9, b"x", fin=False)],
    "control over 125 bytes": [frame(0x9, b"x" * 126)],
    "unexpected continuation": [frame(0x0, b"x")],
    "text inside a fragmented message": [frame(0x1, b"a", fin=False), frame(0x1, b"b")],
    "close inside a fragmented message": [frame(0x1, b"a", fin=False), frame(0x8, struct.pack("!H", 1000))],
    "close code 999": [frame(0x8, struct.pack("!H", 999))],
    "close code 1005 sent": [frame(0x8, struct.pack("!H", 1005))],
    "close one byte": [frame(0x8, b"\x03")],
    "close reason not UTF-8": [frame(0x8, struct.pack("!H", 1000) + b"\xff\xfe")],
    "over the size limit": [frame(0x1, b"x" * 101)],
    "fragments over the size limit": [frame(0x1, b"x" * 60, fin=False), frame(0x0, b"x" * 60)],
    "valid frame then a bad one": [frame(0x1, b"ok") + frame(0x1, b"no", masked=False)],
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("split", ["whole", "byte by byte"])
def test_open_connection_does_what_websockets_does_with_the_same_bytes(name: str, split: str) -> None:
    chunks = CASES[name]
    if split == "byte by byte":
        chunks = [bytes((b,)) for b in b"".join(chunks)]
    ours, theirs = OpenConnection(max_size=100), websockets_open(max_size=100)
    assert run(ours, chunks) == run(theirs, chunks)
    assert ours.state is theirs.state
    assert ours.close_rcvd == theirs.close_rcvd and ours.close_sent == theirs.close_sent
    assert type(ours.parser_exc) is type(theirs.parser_exc)
    assert str(ours.parser_exc) == str(theirs.parser_exc)


def test_a_64_bit_length_and_no_size_limit() -> None:
    conn = OpenConnection(max_size=None)
    payload = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length
    events, written = run(conn, [frame(0x2, payload)])
    assert events == [(0x2, payload, True)] and written == b""


def test_an_oversized_message_is_refused_from_its_header_before_its_payload_comes() -> None:
    conn = OpenConnection(max_size=16 * 1024)
    header = frame(0x1, b"x" * 70_000)[:14]  # 64-bit length and mask, no payload yet
    conn.receive_data(header)
    assert isinstance(conn.parser_exc, PayloadTooBig) and conn.state is CLOSING
    written = b"".join(conn.data_to_send())
    assert written[0] == 0x88 and written[2:4] == struct.pack("!H", 1009)
    conn.receive_data(b"x" * 70_000)  # discarded, not buffered
    assert conn.events_received() == [] and conn._buffer is None


def test_a_protocol_error_closes_1002_and_nothing_more_is_read() -> None:
    conn = OpenConnection(max_size=100)
    conn.receive_data(frame(0x1, b"hi", masked=False))
    assert isinstance(conn.parser_exc, ProtocolError) and str(conn.parser_exc) == "incorrect masking"
    assert conn.close_sent is not None and conn.close_sent.code == 1002
    conn.receive_data(frame(0x1, b"later"))
    assert conn.events_received() == []


def test_sending_after_the_close_began_is_an_invalid_state_and_pings_still_go() -> None:
    conn = OpenConnection(max_size=100)
    conn.send_text(b"hello")
    conn.send_close(1012, "")
    assert b"".join(conn.data_to_send()) == b"\x81\x05hello" + b"\x88\x02" + struct.pack("!H", 1012)
    assert conn.state is CLOSING and conn.close_sent is not None and conn.close_sent.code == 1012
    with pytest.raises(InvalidState):
        conn.send_binary(b"x")
    with pytest.raises(InvalidState):
        conn.send_close(1000)
    conn.send_ping(b"1234")
    assert conn.data_to_send() == [b"\x89\x041234"]
    conn.receive_data(frame(0x8, struct.pack("!H", 1012)))  # the client's answer to our close
    assert conn.close_rcvd is not None and conn.close_rcvd.code == 1012
    assert conn.data_to_send() == []  # not echoed: ours went first
    assert [e.opcode for e in conn.events_received()] == [Opcode.CLOSE]


def test_a_close_reason_is_cut_to_fit_a_control_frame_without_splitting_a_character() -> None:
    payload = close_payload(4400, "é" * 100)  # 200 bytes of UTF-8
    assert len(payload) <= 2 + MAX_CLOSE_REASON
    assert payload[2:].decode() == "é" * (MAX_CLOSE_REASON // 2)
    assert close_payload(None, "ignored") == b""
    conn = OpenConnection(max_size=100)
    conn.fail(1011, "x" * 500)
    (written,) = conn.data_to_send()
    assert written[:2] == bytes((0x88, 125)) and conn.state is CLOSING


def test_a_frame_in_many_pieces_is_gathered_in_one_growing_buffer() -> None:
    conn = OpenConnection(max_size=None)
    payload = bytes(range(256)) * 40  # 10,240 bytes
    wire = frame(0x2, payload) + frame(0x1, b"next")
    pieces = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    conn.receive_data(pieces[0])
    gathered = conn._buffer
    assert isinstance(gathered, bytearray)
    events = []
    for piece in pieces[1:]:
        conn.receive_data(piece)
        events += conn.events_received()
        if not events:
            assert conn._buffer is gathered  # not copied while the first frame is coming
    assert [(e.opcode, bytes(e.data)) for e in events] == [(Opcode.BINARY, payload), (Opcode.TEXT, b"next")]
    assert conn._buffer is None


def test_the_handshake_response_opens_or_ends_the_connection_as_websockets_does() -> None:
    ours = OpenConnection(max_size=100, state=CONNECTING)
    theirs = ServerProtocol(max_size=100)
    theirs.receive_data(HANDSHAKE)
    (request,) = theirs.events_received()
    accepted = theirs.accept(request)
    ours.send_response(accepted)
    assert ours.state is OPEN and b"".join(ours.data_to_send()) == accepted.serialize()
    with pytest.raises(InvalidState):
        ours.send_response(accepted)  # only once
    refused = OpenConnection(max_size=100, state=CONNECTING)
    response = refused.reject(403, "no")
    assert (response.status_code, response.reason_phrase, response.body) == (403, "Forbidden", b"no")
    assert dict(response.headers.raw_items()).keys() == dict(theirs.reject(403, "no").headers.raw_items()).keys()
    refused.send_response(response)
    assert b"".join(refused.data_to_send()).startswith(b"HTTP/1.1 403 Forbidden\r\n")
    refused.receive_data(frame(0x1, b"after"))  # nothing is read after a refusal
    assert refused.events_received() == [] and refused.state is CONNECTING
