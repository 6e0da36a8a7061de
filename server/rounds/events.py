"""The events of a game's channel ``game:<name>``, typed (docs/protocol.md, "Rounds and events").

The driver publishes them (:func:`encode_round`, :func:`encode_tick`), every node's follower reads
them (:func:`read_event`), and the edge pushes the bytes to sockets as they are. Each event is
stamped with its place on the channel: ``ch``, ``offset`` (one more per event), ``epoch`` (new with
each driver) and ``ts`` (the driver's clock when it published).

The bytes are the wire contract: encoded with orjson, ``t`` first and the fields in the order
clients have always received them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import orjson

from protocol.messages import SeedChain

Phase = Literal["betting", "running", "settled"]


def game_channel(game: str) -> str:
    """The broker channel of ``game``'s events."""
    return f"game:{game}"


class RoundView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A round as its ``round`` events describe it: the body of those events, and the ``round`` of
    ``subscribed``. Fields in wire order; unset ones are left out."""

    game: str
    round: int
    seed_hash: str
    salt: str | None
    """The chain's salt; null (always sent) in the ``betting`` event of a chain's first round, whose
    betting fixes it (docs/fairness.md, "The salt of a chain")."""
    closes_at: int | None = None
    """When betting closes (ms); absent from the events of a round a new driver recovered."""
    phase: Phase
    started_at: int | None = None
    """When the round started running (ms): in its ``running`` event."""
    info: dict[str, Any] | None = None
    """The game's own fields of its ``running`` event (what the handler's ``start`` returned), if any."""
    seed: str | None = None
    """The revealed seed: in the ``settled`` event."""
    voided: bool = False
    """Settled without an outcome (a handler failed, or a betting round was recovered): bets refunded."""
    outcome: dict[str, Any] | None = None
    """The public outcome: in the ``settled`` event of a round that was not voided."""
    chain: SeedChain | None = None
    """In the events of a chain's first round: the chain, committed before the round opened (with the
    client seeds of its salt from the ``running`` event on)."""

    def as_wire(self) -> dict[str, Any]:
        """The view as a JSON object, its fields in wire order."""
        wire: dict[str, Any] = msgspec.to_builtins(self)
        return wire


@dataclass(frozen=True, slots=True)
class Stamp:
    """Where an event goes on its channel."""

    channel: str
    offset: int
    epoch: str
    ts: int


def encode_round(view: RoundView, stamp: Stamp) -> bytes:
    """A ``round`` event: the round's view, then its stamp."""
    return _encode({"t": "round", **view.as_wire()}, stamp)


def encode_tick(game: str, round_id: int, fields: dict[str, Any], stamp: Stamp) -> bytes:
    """A ``tick`` event: the game's own ``fields`` (crash: ``multiplier``, and ``crashed`` on the last),
    none of them in :data:`TICK_RESERVED`."""
    return _encode({"t": "tick", "game": game, "round": round_id, **fields}, stamp)


def _encode(event: dict[str, Any], stamp: Stamp) -> bytes:
    event.update(ch=stamp.channel, offset=stamp.offset, epoch=stamp.epoch, ts=stamp.ts)
    return orjson.dumps(event)


_TICK_PREFIX = b'{"t":"tick"'


def is_tick(payload: bytes) -> bool:
    """Whether an encoded event is a ``tick`` (``t`` comes first), without decoding it."""
    return payload.startswith(_TICK_PREFIX)


class _Header(msgspec.Struct, frozen=True):
    """What a follower reads of every event (other fields are skipped while decoding)."""

    t: str
    round: int
    offset: int
    epoch: str


class RoundEvent(msgspec.Struct, frozen=True):
    """A ``round`` event as read: the new view of the round, at ``offset`` in ``epoch``."""

    view: RoundView
    offset: int
    epoch: str


class TickEvent(msgspec.Struct, frozen=True):
    """A ``tick`` event as read: the game's own fields of it, at ``offset`` in ``epoch``."""

    round: int
    fields: dict[str, Any]
    offset: int
    epoch: str


GameEvent = RoundEvent | TickEvent

_headers = msgspec.json.Decoder(_Header)
_views = msgspec.json.Decoder(RoundView)
TICK_ENVELOPE = frozenset({"t", "game", "round", "ch", "offset", "epoch", "ts"})
"""The fields of a ``tick`` event the engine sets; the rest are the game's."""
TICK_RESERVED = TICK_ENVELOPE | frozenset(RoundView.__struct_fields__)
"""Names a game's tick fields may not take: the event's own, and a round's (a snapshot of a running
round carries its last tick's fields beside the round's)."""


def read_event(payload: bytes) -> GameEvent | None:
    """The event encoded in ``payload``; None for a kind a follower does not track.

    Raises ``msgspec.ValidationError`` (or ``msgspec.DecodeError``) for a payload that is not one.
    """
    header = _headers.decode(payload)
    if header.t == "round":
        return RoundEvent(_views.decode(payload), header.offset, header.epoch)
    if header.t == "tick":
        fields = {key: value for key, value in orjson.loads(payload).items() if key not in TICK_ENVELOPE}
        return TickEvent(header.round, fields, header.offset, header.epoch)
    return None
