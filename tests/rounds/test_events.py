"""The events of a game channel keep their bytes: the typed events encode exactly as the engine's
dicts did before them (docs/protocol.md, "Rounds and events"), and read back into the same view."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from server.rounds.events import RoundEvent, RoundView, Stamp, TickEvent, encode_round, encode_tick, is_tick, read_event

STAMP = Stamp("game:crash", 12, "0badcafe", 1_700_000_000_123)
BASE = {"t": "round", "game": "crash", "round": 41, "seed_hash": "ab" * 32, "salt": "cd" * 32, "closes_at": 1_700_000}
VIEW = RoundView(game="crash", round=41, seed_hash="ab" * 32, salt="cd" * 32, closes_at=1_700_000, phase="betting")
RECOVERED = msgspec.structs.replace(VIEW, closes_at=None)  # a recovered round's events carry no closes_at


def as_before(event: dict[str, Any]) -> bytes:
    """How the engine encoded an event before the events were typed: its dict, then the stamp."""
    return orjson.dumps({**event, "ch": STAMP.channel, "offset": STAMP.offset, "epoch": STAMP.epoch, "ts": STAMP.ts})


def test_a_betting_event_on_the_wire() -> None:
    view = msgspec.structs.replace(VIEW, seed_hash="5eed", salt="5a17")
    assert encode_round(view, STAMP) == (
        b'{"t":"round","game":"crash","round":41,"seed_hash":"5eed","salt":"5a17","closes_at":1700000,'
        b'"phase":"betting","ch":"game:crash","offset":12,"epoch":"0badcafe","ts":1700000000123}'
    )


@pytest.mark.parametrize(
    ("view", "before"),
    [
        (VIEW, {**BASE, "phase": "betting"}),
        (
            msgspec.structs.replace(VIEW, phase="running", started_at=1_700_010),
            {**BASE, "phase": "running", "started_at": 1_700_010},
        ),
        (
            msgspec.structs.replace(VIEW, phase="settled", seed="ef" * 32, outcome={"crash_point": 250}),
            {**BASE, "phase": "settled", "seed": "ef" * 32, "outcome": {"crash_point": 250}},
        ),
        (
            msgspec.structs.replace(VIEW, phase="settled", seed="ef" * 32, outcome={"x": 1.5e20, "empty": {}}),
            {**BASE, "phase": "settled", "seed": "ef" * 32, "outcome": {"x": 1.5e20, "empty": {}}},
        ),
        (
            msgspec.structs.replace(VIEW, phase="settled", seed="ef" * 32, voided=True),
            {**BASE, "phase": "settled", "seed": "ef" * 32, "voided": True},
        ),
        (
            msgspec.structs.replace(RECOVERED, phase="running", started_at=5),
            {k: v for k, v in BASE.items() if k != "closes_at"} | {"phase": "running", "started_at": 5},
        ),
        (
            msgspec.structs.replace(RECOVERED, phase="settled", seed="ef" * 32, voided=True),
            {k: v for k, v in BASE.items() if k != "closes_at"}
            | {"phase": "settled", "seed": "ef" * 32, "voided": True},
        ),
    ],
)
def test_round_events_encode_as_before_and_read_back(view: RoundView, before: dict[str, Any]) -> None:
    payload = encode_round(view, STAMP)
    assert payload == as_before(before)
    assert not is_tick(payload)
    assert read_event(payload) == RoundEvent(view, STAMP.offset, STAMP.epoch)
    # The view is the event without its stamp: what `subscribed` shows as the round.
    assert view.as_wire() == {k: v for k, v in before.items() if k != "t"}


@pytest.mark.parametrize("fields", [{"multiplier": 150}, {"multiplier": 300, "crashed": True}, {"spin": 0.25}])
def test_ticks_encode_as_before_and_read_back(fields: dict[str, Any]) -> None:
    payload = encode_tick("crash", 41, fields, STAMP)
    assert payload == as_before({"t": "tick", "game": "crash", "round": 41, **fields})
    assert is_tick(payload)
    assert read_event(payload) == TickEvent(41, fields, STAMP.offset, STAMP.epoch)
