"""Hostile frames at the codec (issue 12): text PostgreSQL cannot store, deep nesting, params that are not JSON.

Every refusal is a :class:`ProtocolError` (``bad_request`` naming the field), never another exception: not
``RecursionError`` from a frame nested 5,000 deep, not ``TypeError`` later from a MessagePack ``bin`` value that
reached ``orjson.dumps``.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import JSON, MSGPACK, Codec, ErrorCode, ProtocolError
from protocol import messages as m
from protocol.checks import CONTROL_KEY, JSON_VALUES, MAX_PARAMS_DEPTH, UNSTORABLE, check_params, check_request

BET: dict[str, Any] = {"t": "bet", "id": 7, "game": "dice", "round": 3, "amount": 10}
ACTION: dict[str, Any] = {"t": "action", "id": "a1", "game": "crash", "round": 3, "action": "cashout"}
CODECS = pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])


def frame_of(codec: Codec, message: dict[str, Any]) -> bytes | str:
    if codec.binary:
        return msgspec.msgpack.encode(message)
    return json.dumps(message)  # ensure_ascii: U+0000 travels as the escape \u0000


def refusal(codec: Codec, frame: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        codec.decode(frame)
    return info.value


def nested(depth: int) -> Any:
    """``depth`` levels of maps and arrays, alternating, innermost empty."""
    value: Any = []
    for level in range(depth - 1):
        value = {"k": value} if level % 2 else [value]
    return value


# ---------------------------------------------------------------- text PostgreSQL cannot store


@CODECS
@pytest.mark.parametrize("key", ["a\x00b", "\x00", "tab\there", "new\nline", "bell\x07", "del\x7f", "c1\x85"])
def test_keys_with_nul_or_control_characters_are_refused_naming_key(codec: Codec, key: str) -> None:
    error = refusal(codec, frame_of(codec, {**BET, "key": key}))
    assert (error.code, error.field, error.request_id, error.message_type) == (ErrorCode.BAD_REQUEST, "key", 7, "bet")
    assert "`key`" in error.message


@CODECS
@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({**BET, "params": {"side": "ov\x00er"}}, "params.side"),
        ({**BET, "params": {"a": {"b": [1, "x", "\x00"]}}}, "params.a.b[2]"),
        ({**BET, "params": {"si\x00de": "over"}}, "params"),
        ({**BET, "params": {"a": [{"\x00": 1}]}}, "params.a[0]"),
        ({**BET, "game": "di\x00ce"}, "game"),
        ({**ACTION, "params": {"x": ["\x00"]}}, "params.x[0]"),
        ({**ACTION, "action": "cash\x00out"}, "action"),
        ({**ACTION, "game": "\x00"}, "game"),
        ({"t": "subscribe", "id": 1, "game": "cr\x00ash"}, "game"),
        ({"t": "subscribe", "id": 1, "game": "crash", "since": {"offset": 1, "epoch": "e\x00"}}, "since.epoch"),
        ({"t": "unsubscribe", "id": 1, "game": "\x00"}, "game"),
        ({"t": "history", "id": 1, "game": "\x00"}, "game"),
        ({"t": "auth", "id": 1, "init_data": "a=b", "since": {"offset": 1, "epoch": "\x00"}}, "since.epoch"),
    ],
)
def test_nul_anywhere_it_would_reach_the_database_is_refused_naming_the_field(
    codec: Codec, message: dict[str, Any], field: str
) -> None:
    error = refusal(codec, frame_of(codec, message))
    assert (error.code, error.field, error.request_id) == (ErrorCode.BAD_REQUEST, field, message["id"])
    assert error.message_type == message["t"]  # an auth stays an auth: the socket is not closed for it
    assert "U+0000" in error.message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('"key":"a\\ud800"', "key"),
        ('"key":"\\udc00x"', "key"),
        ('"key":"\\udc00\\ud800"', "key"),  # a low then a high surrogate: two lone ones, not a pair
        ('"params":{"side":"\\uDBFF"}', "params.side"),
        ('"params":{"a":{"\\ud800":1}}', "params.a"),
        ('"game":"\\ud800"', "game"),
    ],
)
def test_lone_surrogate_escapes_in_json_are_refused_naming_the_field(text: str, field: str) -> None:
    frame = '{"t":"bet","id":7,"game":"dice","round":3,"amount":10,' + text + "}"
    error = refusal(JSON, frame)
    assert (error.code, error.field, error.request_id) == (ErrorCode.BAD_REQUEST, field, 7)


def test_lone_surrogates_elsewhere_and_raw_surrogates_are_bad_requests_never_unicode_errors() -> None:
    error = refusal(JSON, '{"t":"auth","id":1,"init_data":"\\ud800"}')
    assert (error.code, error.field, error.request_id, error.message_type) == (ErrorCode.BAD_REQUEST, None, 1, "auth")
    assert "surrogate" in error.message
    # A str frame with a raw surrogate code point (not UTF-8: no real socket delivers one) used to raise
    # UnicodeEncodeError out of the decoder.
    error = refusal(JSON, '{"t":"bet","id":7,"game":"dice","round":3,"amount":10,"key":"a\ud800"}')
    assert (error.code, error.field) == (ErrorCode.BAD_REQUEST, "key")
    assert JSON.request_id('{"t":"ping","id":4,"x":"\ud800"}') is None
    # A pair is one character and passes; so does a backslash followed by "ud800".
    assert JSON.decode('{"t":"bet","id":7,"game":"dice","round":3,"amount":10,"key":"\\ud83d\\ude00"}').key == "😀"
    assert JSON.decode('{"t":"ping","id":1,"x":"\\\\ud800"}') == m.Ping(id=1)


def test_msgpack_strings_must_be_utf8_so_encoded_surrogates_are_refused() -> None:
    frame = msgspec.msgpack.encode({**BET, "key": "XXX"}).replace(b"\xa3XXX", b"\xa3\xed\xa0\x80")
    error = refusal(MSGPACK, frame)
    assert error.code is ErrorCode.BAD_REQUEST and "UTF-8" in error.message


@CODECS
def test_honest_unicode_still_passes(codec: Codec) -> None:
    params = {"side": "über", "note": "🎲 ставка", "tags": ["a b", "c.d"], "n": -(2**63), "x": 1.5, "ok": None}
    bet = codec.decode(frame_of(codec, {**BET, "key": "ключ-🎲-1", "params": params}))
    assert isinstance(bet, m.Bet) and bet.params == params and bet.key == "ключ-🎲-1"


# ---------------------------------------------------------------- depth


@CODECS
@pytest.mark.parametrize("depth", [2_000, 5_000, 16_000])
def test_frames_nested_thousands_deep_are_bad_requests_not_recursion_errors(codec: Codec, depth: int) -> None:
    """The decoder gives up with RecursionError past the interpreter's limit; the codec answers bad_request."""
    for frame, too_deep in _deep_frames(codec, depth):
        error = refusal(codec, frame)
        assert error.code is ErrorCode.BAD_REQUEST, frame[:80]
        assert ("too deeply" in error.message) is too_deep, error
        assert codec.request_id(frame) is None  # the rate-limited path reads the id: no RecursionError either


def _deep_frames(codec: Codec, depth: int) -> list[tuple[bytes | str, bool]]:
    """Frames nested ``depth`` deep, and whether the decoder reaches the depth (else it stops earlier)."""
    if codec.binary:
        head = msgspec.msgpack.encode({**BET, "params": {}})[:-1]  # the map ends with params: {}
        return [(head + b"\x81\xa1a" + b"\x91" * depth + b"\x90", True),  # params.a: arrays `depth` deep
                (head.replace(b"\x86", b"\x87", 1) + b"\x80\xa1x" + b"\x91" * depth + b"\x90", True),  # unknown
                (head + b"\x81\xa1a" + b"\x91" * depth, True),  # truncated
                (b"\x91" * depth + b"\x90", False)]  # not a map: refused at once  # fmt: skip
    head = '{"t":"bet","id":7,"game":"dice","round":3,"amount":10,'
    return [(head + '"params":{"a":' + "[" * depth + "]" * depth + "}}", True),
            (head + '"x":' + "[" * depth + "]" * depth + "}", True),
            (head + '"params":{"a":' + "[" * depth, True),  # truncated
            ("[" * depth, False)]  # fmt: skip


@CODECS
def test_params_nest_at_most_the_limit(codec: Codec) -> None:
    assert MAX_PARAMS_DEPTH == 32
    ok = codec.decode(frame_of(codec, {**BET, "params": {"a": nested(MAX_PARAMS_DEPTH - 1)}}))
    assert isinstance(ok, m.Bet)
    for message in ({**BET, "params": {"a": nested(MAX_PARAMS_DEPTH)}},
                    {**ACTION, "params": {"a": [nested(MAX_PARAMS_DEPTH - 1)]}}):  # fmt: skip
        error = refusal(codec, frame_of(codec, message))
        assert (error.code, error.field, error.request_id) == (ErrorCode.BAD_REQUEST, "params", message["id"])
        assert f"deeper than {MAX_PARAMS_DEPTH} levels" in error.message


# ---------------------------------------------------------------- params hold JSON values only


@pytest.mark.parametrize("base", [BET, ACTION], ids=["bet", "action"])
@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"a": b"\x00\xff"}, "params.a", "bin"),
        ({"a": [1, {"b": b""}]}, "params.a[1].b", "bin"),
        ({"a": msgspec.msgpack.Ext(3, b"xy")}, "params.a", "ext"),
        ({"a": datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)}, "params.a", "timestamp"),
        ({"a": {1: "one"}}, "params.a", "key that is not a string"),
        ({"a": {None: 1}}, "params.a", "key that is not a string"),
        ({"a": {b"k": 1}}, "params.a", "key that is not a string"),
        ({"a": 2**64 - 1}, "params.a", "64 bits"),
        ({"a": 2**63}, "params.a", "64 bits"),
        ({"a": math.nan}, "params.a", "finite"),
        ({"a": {"b c": [math.inf]}}, 'params.a["b c"][0]', "finite"),
    ],
)
def test_msgpack_params_that_are_not_json_are_refused_naming_the_field(
    base: dict[str, Any], params: dict[str, Any], field: str, says: str
) -> None:
    error = refusal(MSGPACK, msgspec.msgpack.encode({**base, "params": params}))
    assert (error.code, error.field, error.request_id) == (ErrorCode.BAD_REQUEST, field, base["id"])
    assert says in error.message


def test_msgpack_map_keys_that_are_arrays_are_refused() -> None:
    frame = msgspec.msgpack.encode({**ACTION, "params": {}})[:-1] + b"\x81\xa1a\x81\x92\x01\x02\x03"
    error = refusal(MSGPACK, frame)  # params: {"a": {[1, 2]: 3}}, read by msgspec as a tuple key
    assert (error.code, error.field) == (ErrorCode.BAD_REQUEST, "params.a")


def test_json_numbers_out_of_range_name_params() -> None:
    for number, field in [("18446744073709551616", "params.a"), ("-9223372036854775809", "params.a"),
                          ("[9223372036854775808]", "params.a[0]"), ("1e999", "params")]:  # fmt: skip
        error = refusal(JSON, '{"t":"bet","id":7,"game":"dice","round":3,"amount":10,"params":{"a":' + number + "}}")
        assert (error.code, error.field, error.request_id) == (ErrorCode.BAD_REQUEST, field, 7)


def test_requests_built_in_python_and_the_precise_walk() -> None:
    bet = m.Bet(id=1, game="dice", round=1, amount=1, params={"a": ["x", "y\x00"]}, key="k")
    assert check_request(bet) == ("params.a[1]", UNSTORABLE)
    assert check_request(m.Bet(id=1, game="dice", round=1, amount=1, key="k\n")) == ("key", CONTROL_KEY)
    assert check_request(m.Ping(id=1)) is None
    # The walk behind every refusal also names what the decoders already refuse (lone surrogates, bin values).
    assert check_params({"a": {"b": "\ud800"}}) == ("params.a.b", UNSTORABLE)
    assert check_params({"a": [1, b"x"]}, path="p") == ("p.a[1]", f"is a MessagePack bin value; {JSON_VALUES}")
    assert check_params({"\udc00": 1}) == ("params", f"has a map key that {UNSTORABLE}")


_msgpack_ints = st.integers(-(2**63), 2**64 - 1)
_json_scalars = st.none() | st.booleans() | _msgpack_ints | st.floats() | st.text() | st.binary()
_keys = st.text(max_size=5) | _msgpack_ints | st.binary(max_size=3)
_values = st.recursive(
    _json_scalars | st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=4)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=12,
)


@settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(params=st.dictionaries(st.text(max_size=5), _values, max_size=4), action=st.booleans())
def test_any_msgpack_params_are_refused_or_safe_to_forward_and_store(params: dict[str, Any], action: bool) -> None:
    """Whatever MessagePack carries in params: a bad_request, or params orjson writes and reads back as is
    (what forwarding an action to another node and the ledger's jsonb do), with no U+0000 in them."""
    frame = msgspec.msgpack.encode({**(ACTION if action else BET), "params": params})
    try:
        request = MSGPACK.decode(frame)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST and exc.field is not None and exc.field.startswith("params")
        return
    assert isinstance(request, m.Bet | m.Action)
    dumped = orjson.dumps(request.params)
    assert b"\\u0000" not in dumped
    assert orjson.loads(dumped) == request.params


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ('{"t":"bet","id":7,"game":"dice","round":9223372036854775808,"amount":10}', "round"),
        ('{"t":"action","id":7,"game":"crash","round":' + str(2**70) + ',"action":"cashout"}', "round"),
        ('{"t":"subscribe","id":7,"game":"crash","since":{"offset":' + str(2**64) + ',"epoch":"e"}}', "since.offset"),
    ],
)
def test_round_ids_and_offsets_fit_64_bits(frame: str, field: str) -> None:
    """A round of 2**70 in an action reached ``orjson.dumps`` (forwarding to the driving node): TypeError."""
    error = refusal(JSON, frame)
    assert (error.code, error.field, error.request_id) == (ErrorCode.BAD_REQUEST, field, 7)
    largest = frame.replace(str(2**70), str(2**63 - 1)).replace(str(2**63), str(2**63 - 1))
    largest = largest.replace(str(2**64), str(2**63 - 1))
    assert JSON.decode(largest).id == 7
