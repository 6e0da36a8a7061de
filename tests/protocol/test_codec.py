"""The v1 codecs: every request decodes, bad frames name their field, replies encode."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import pytest

from protocol import JSON, MSGPACK, ErrorCode, ProtocolError, negotiate
from protocol import messages as m


def decode_error(frame: bytes | str, codec: object = JSON) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        codec.decode(frame)  # type: ignore[attr-defined]
    return info.value


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"t": "auth", "id": 1, "init_data": "a=b"}, m.Auth(id=1, init_data="a=b")),
        ({"t": "ping", "id": "p-1"}, m.Ping(id="p-1")),
        ({"t": "balance", "id": 2}, m.BalanceRequest(id=2)),
        ({"t": "subscribe", "id": 3, "game": "crash"}, m.Subscribe(id=3, game="crash")),
        (
            {"t": "subscribe", "id": 3, "game": "crash", "since": {"offset": 7, "epoch": "e1"}},
            m.Subscribe(id=3, game="crash", since=m.StreamPosition(7, "e1")),
        ),
        ({"t": "unsubscribe", "id": 4, "game": "dice"}, m.Unsubscribe(id=4, game="dice")),
        (
            {"t": "bet", "id": 5, "game": "dice", "round": 9, "amount": 100, "params": {"target": 5000}, "key": "k1"},
            m.Bet(id=5, game="dice", round=9, amount=100, params={"target": 5000}, key="k1"),
        ),
        (
            {"t": "action", "id": 6, "game": "crash", "round": 9, "action": "cashout"},
            m.Action(id=6, game="crash", round=9, action="cashout"),
        ),
        ({"t": "history", "id": 7, "game": "crash", "limit": 100}, m.History(id=7, game="crash", limit=100)),
    ],
)
def test_every_request_decodes_from_json_and_msgpack(frame: dict[str, object], expected: m.Request) -> None:
    assert JSON.decode(json.dumps(frame)) == expected
    assert MSGPACK.decode(msgspec.msgpack.encode(frame)) == expected


def test_unknown_fields_are_ignored_for_compatible_extension() -> None:
    assert JSON.decode('{"t":"ping","id":1,"future":true}') == m.Ping(id=1)


@pytest.mark.parametrize(
    ("frame", "code", "field", "request_id"),
    [
        ("not json", ErrorCode.BAD_REQUEST, None, None),
        ("[1,2]", ErrorCode.BAD_REQUEST, None, None),
        ('"text"', ErrorCode.BAD_REQUEST, None, None),
        ('{"id":1}', ErrorCode.BAD_REQUEST, "t", 1),
        ('{"t":5,"id":1}', ErrorCode.BAD_REQUEST, "t", 1),
        ('{"t":"fly","id":"x"}', ErrorCode.UNKNOWN_TYPE, "t", "x"),
        ('{"t":"ping"}', ErrorCode.BAD_REQUEST, "id", None),
        ('{"t":"ping","id":1.5}', ErrorCode.BAD_REQUEST, "id", None),
        ('{"t":"ping","id":true}', ErrorCode.BAD_REQUEST, "id", None),
        ('{"t":"ping","id":"' + "x" * 65 + '"}', ErrorCode.BAD_REQUEST, "id", None),
        ('{"t":"auth","id":1}', ErrorCode.BAD_REQUEST, "init_data", 1),
        ('{"t":"auth","id":1,"init_data":7}', ErrorCode.BAD_REQUEST, "init_data", 1),
        ('{"t":"bet","id":2,"game":"dice","round":1,"amount":1.5}', ErrorCode.BAD_REQUEST, "amount", 2),
        ('{"t":"bet","id":2,"game":"dice","round":1,"amount":"10"}', ErrorCode.BAD_REQUEST, "amount", 2),
        ('{"t":"bet","id":2,"game":"dice","round":1,"amount":0}', ErrorCode.BAD_REQUEST, "amount", 2),
        ('{"t":"bet","id":2,"game":"dice","round":1,"amount":-5}', ErrorCode.BAD_REQUEST, "amount", 2),
        ('{"t":"bet","id":2,"game":"dice","round":1,"amount":9007199254740993}', ErrorCode.BAD_REQUEST, "amount", 2),
        ('{"t":"bet","id":2,"game":"dice","round":1,"amount":5,"key":"' + "k" * 65 + '"}', ErrorCode.BAD_REQUEST,
         "key", 2),
        ('{"t":"bet","id":2,"game":"dice","round":1,"amount":5,"params":[]}', ErrorCode.BAD_REQUEST, "params", 2),
        ('{"t":"subscribe","id":3,"game":"crash","since":{"offset":-1,"epoch":"e"}}', ErrorCode.BAD_REQUEST,
         "since.offset", 3),
        ('{"t":"history","id":4,"game":"crash","limit":101}', ErrorCode.BAD_REQUEST, "limit", 4),
    ],
)  # fmt: skip
def test_bad_frames_name_the_field_and_echo_the_id(
    frame: str, code: ErrorCode, field: str | None, request_id: object
) -> None:
    error = decode_error(frame)
    assert error.code is code
    assert error.field == field
    assert error.request_id == request_id
    if field:
        assert field in error.message


def test_frame_kind_must_match_the_subprotocol() -> None:
    assert "binary frames" in decode_error(b'{"t":"ping","id":1}', JSON).message
    assert "text frames" in decode_error('{"t":"ping","id":1}', MSGPACK).message
    assert decode_error(b"\xc1", MSGPACK).code is ErrorCode.BAD_REQUEST


def test_replies_encode_with_integers_and_null_error_ids() -> None:
    error = json.loads(JSON.encode(m.Error(id=None, code="bad_request", message="x")))
    assert error == {"t": "error", "id": None, "code": "bad_request", "message": "x", "field": None}
    pong = msgspec.msgpack.decode(MSGPACK.encode(m.Pong(id=3, server_time=12)))
    assert pong == {"t": "pong", "id": 3, "server_time": 12}
    balance = json.loads(JSON.encode(m.Balance(id=1, balance=0)))
    assert balance == {"t": "balance", "id": 1, "balance": 0}


def test_negotiation_prefers_the_first_known_offer_and_refuses_unknown_only() -> None:
    assert negotiate([]) == (JSON, None)
    assert negotiate(["croupier.v1.msgpack", "croupier.v1.json"]) == (MSGPACK, "croupier.v1.msgpack")
    assert negotiate(["chat", "croupier.v1.json"]) == (JSON, "croupier.v1.json")
    assert negotiate(["chat", "croupier.v2.json"]) is None


def test_protocol_package_is_pure() -> None:
    """protocol/ imports no asyncio, no server code and no web framework."""
    code = (
        "import sys, protocol, protocol.schema, protocol.messages, protocol.codec;"
        "bad = [n for n in sys.modules if n.split('.')[0] in "
        "('asyncio', 'server', 'starlette', 'uvicorn', 'websockets', 'asyncpg', 'redis')];"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_schema_command_prints_every_message() -> None:
    result = subprocess.run([sys.executable, "-m", "protocol.schema"], capture_output=True, text=True, check=True)
    schema = json.loads(result.stdout)
    client = schema["properties"]["client"]["discriminator"]["mapping"]
    server = schema["properties"]["server"]["discriminator"]["mapping"]
    assert set(client) == {"auth", "subscribe", "unsubscribe", "bet", "action", "balance", "history", "ping", "deposit",
                           "my_bets", "my_transactions", "leaderboard", "limits", "set_limit", "exclude"}  # fmt: skip
    assert {"welcome", "error", "pong", "bet_ok", "balance", "round", "bet_settled", "invoice", "my_bets",
            "my_transactions", "limits"} <= set(server)  # fmt: skip
    assert schema["$defs"]["Bet"]["properties"]["amount"]["type"] == "integer"
