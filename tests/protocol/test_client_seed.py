"""``bet.client_seed`` at the codec: 1 to 64 printable ASCII characters other than ':' (they are joined with
':' into a seed chain's salt, docs/fairness.md), else ``bad_request`` naming ``client_seed``."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from protocol import JSON, MSGPACK, Codec, ErrorCode, ProtocolError
from protocol import messages as m
from protocol.checks import BAD_CLIENT_SEED

BET: dict[str, Any] = {"t": "bet", "id": 7, "game": "dice", "round": 3, "amount": 10}
CODECS = pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])


def frame_of(codec: Codec, message: dict[str, Any]) -> bytes | str:
    return msgspec.msgpack.encode(message) if codec.binary else json.dumps(message)


@CODECS
@pytest.mark.parametrize("seed", ["a", "lucky 7", "~" * 64, " leading and trailing ", "!#$%&'()*+,-./;<=>?@[\\]^_`{|}"])
def test_a_bet_carries_a_client_seed_of_printable_ascii(codec: Codec, seed: str) -> None:
    bet = codec.decode(frame_of(codec, {**BET, "client_seed": seed}))
    assert isinstance(bet, m.Bet) and bet.client_seed == seed


@CODECS
def test_a_bet_without_a_client_seed_has_none(codec: Codec) -> None:
    bet = codec.decode(frame_of(codec, BET))
    assert isinstance(bet, m.Bet) and bet.client_seed is None


@CODECS
@pytest.mark.parametrize("seed", ["a:b", ":", "café", "tab\there", "bell\x07", "del\x7f", "nul\x00", "c1\x85", "😀"])
def test_a_client_seed_with_a_colon_or_other_than_printable_ascii_is_refused(codec: Codec, seed: str) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.decode(frame_of(codec, {**BET, "client_seed": seed}))
    error = info.value
    assert (error.code, error.field, error.request_id) == (ErrorCode.BAD_REQUEST, "client_seed", 7)
    assert BAD_CLIENT_SEED in error.message


@CODECS
@pytest.mark.parametrize("seed", ["", "x" * 65, 42, None])
def test_a_client_seed_of_the_wrong_length_or_type_is_refused(codec: Codec, seed: object) -> None:
    frame = {**BET, "client_seed": seed}
    if seed is None:  # null is the field left out
        assert codec.decode(frame_of(codec, frame)) == codec.decode(frame_of(codec, BET))
        return
    with pytest.raises(ProtocolError) as info:
        codec.decode(frame_of(codec, frame))
    assert (info.value.code, info.value.field) == (ErrorCode.BAD_REQUEST, "client_seed")
