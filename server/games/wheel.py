"""Wheel of fortune: one spin per round, the same segment for everyone.

The wheel is a list of ``segments`` (20 by default), each with a multiplier (hundredths; 0
loses) and a colour (red, black or gold). The round's outcome is the index of the segment the
wheel stops at, ``rng.below(len(segments))`` (:meth:`FairRng.below`): every segment is equally
likely, so a bet's return to player is the mean of what it pays over the segments. The
``running`` event's ``info`` carries ``{"segment": i}`` so clients animate the wheel stopping
there. Bets (``params.type``):

- ``{"type": "spin"}`` pays ``amount * multiplier // 100``, the landed segment's multiplier;
- ``{"type": "colour", "colour": c}`` pays ``amount * colour_pays[c] // 100`` when the landed
  segment is ``c`` (only colours listed in ``colour_pays`` may be bet on).

The default wheel, clockwise from segment 0 (9 red, 9 black, 2 gold)::

    segment   0     1     2     3     4     5     6     7     8     9
    colour    gold  red   black red   black red   black red   black red
    pays      3.00  1.20  0     1.20  0     2.00  0     1.20  0     1.20

and segments 10 to 19 the same again with red and black swapped (10 is gold 3.00x, 11 black
1.20x, 12 red 0, ...), with ``colour_pays`` red 2.18x, black 2.18x, gold 9.80x. Exact RTPs: spin
(2 * 3.00 + 8 * 1.20 + 2 * 2.00) / 20 = 19.60 / 20 = 0.98; red or black 9/20 * 2.18 = 0.981;
gold 2/20 * 9.80 = 0.98.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeAlias

import msgspec

from ..rounds.fair import FairRng
from ..rounds.handler import (
    BetInfo,
    BetParams,
    GameParams,
    InvalidBet,
    Moments,
    RoundContext,
    RoundHandler,
    RunState,
    StartResult,
)
from .registry import register

ColourName = Literal["red", "black", "gold"]


class Segment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One segment of the wheel: ``{"multiplier": 120, "colour": "red"}``."""

    multiplier: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
    """What a spin landing here pays per unit staked, in hundredths (0: the spin loses)."""
    colour: ColourName
    """The segment's colour, for colour bets."""


DEFAULT_SEGMENTS = (
    Segment(300, "gold"), Segment(120, "red"), Segment(0, "black"), Segment(120, "red"), Segment(0, "black"),
    Segment(200, "red"), Segment(0, "black"), Segment(120, "red"), Segment(0, "black"), Segment(120, "red"),
    Segment(300, "gold"), Segment(120, "black"), Segment(0, "red"), Segment(120, "black"), Segment(0, "red"),
    Segment(200, "black"), Segment(0, "red"), Segment(120, "black"), Segment(0, "red"), Segment(120, "black"),
)  # fmt: skip
DEFAULT_COLOUR_PAYS: dict[ColourName, int] = {"red": 218, "black": 218, "gold": 980}


class WheelParams(GameParams, kw_only=True, frozen=True):
    """The wheel's tunables (``CROUPIER_GAME_PARAMS='{"wheel": {...}}'``)."""

    segments: Annotated[tuple[Segment, ...], msgspec.Meta(min_length=2, max_length=64)] = DEFAULT_SEGMENTS
    """The wheel, clockwise from segment 0: 2 to 64 segments, each equally likely."""
    colour_pays: dict[ColourName, Annotated[int, msgspec.Meta(gt=100, le=1_000_000)]] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_COLOUR_PAYS)
    )
    """What a colour bet pays per unit staked when the wheel stops on its colour (hundredths, above
    1.00x); a colour missing here cannot be bet on. Each must be the colour of some segment."""
    running_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 5000
    """How long the wheel spins (clients animate it stopping at the ``running`` event's segment)."""
    max_exposure: Annotated[int, msgspec.Meta(gt=0)] = 100_000_000
    """The most one round may pay out, every bet counted at its largest multiplier."""

    def __post_init__(self) -> None:
        missing = set(self.colour_pays) - {segment.colour for segment in self.segments}
        if missing:
            raise ValueError(f"params.colour_pays pays on {', '.join(sorted(missing))}: no segment has that colour")


class WheelBet(BetParams, tag_field="type", kw_only=True, frozen=True):
    """A bet on the wheel; ``type`` says which."""


class Spin(WheelBet, tag="spin", kw_only=True, frozen=True):
    """``{"type": "spin"}``: pays the multiplier of the segment the wheel stops at."""


class Colour(WheelBet, tag="colour", kw_only=True, frozen=True):
    """``{"type": "colour", "colour": "red"}``: pays ``colour_pays[colour]`` if the wheel stops on that colour."""

    colour: ColourName
    """The colour bet on."""


AnyWheelBet: TypeAlias = Spin | Colour


@register
class Wheel(RoundHandler[WheelParams, AnyWheelBet]):
    """The wheel of fortune: one segment drawn per round, spin and colour bets."""

    name = "wheel"
    strategies = {"spin": {"type": "spin"}} | {c: {"type": "colour", "colour": c} for c in DEFAULT_COLOUR_PAYS}

    def multiplier(self, bet: AnyWheelBet, segment: Segment) -> int:
        """What ``bet`` pays per unit staked (hundredths) when the wheel stops on ``segment``."""
        if isinstance(bet, Spin):
            return segment.multiplier
        return self.params.colour_pays.get(bet.colour, 0) if segment.colour == bet.colour else 0

    def validate_bet(self, bet: AnyWheelBet, amount: int) -> AnyWheelBet:
        if isinstance(bet, Colour) and bet.colour not in self.params.colour_pays:
            raise InvalidBet(f"a colour bet on {bet.colour} pays nothing on this wheel", "params.colour")
        return bet

    def outcome(self, rng: FairRng) -> dict[str, Any]:
        return {"segment": rng.below(len(self.params.segments))}

    def start(self, ctx: RoundContext[WheelParams], state: RunState[AnyWheelBet]) -> StartResult:
        return StartResult(event={"segment": state.outcome["segment"]})

    def payout(self, bet: BetInfo[AnyWheelBet], outcome: Mapping[str, Any]) -> int:
        return bet.amount * self.multiplier(bet.params, self.params.segments[outcome["segment"]]) // 100

    def max_multiplier(self, bet: AnyWheelBet) -> int:
        return max(self.multiplier(bet, segment) for segment in self.params.segments)

    def exposure_cap(self) -> int:
        return self.params.max_exposure

    def declared_rtp(self, bet: AnyWheelBet) -> float:
        segments = self.params.segments
        return sum(self.multiplier(bet, segment) for segment in segments) / (100 * len(segments))

    def return_moments(self, bet: BetInfo[AnyWheelBet]) -> Moments:
        """Exact: every segment is equally likely, and pays the bet what :meth:`payout` says there."""
        segments = self.params.segments
        return Moments.of((1 / len(segments), bet.amount * self.multiplier(bet.params, segment) // 100 / bet.amount)
                          for segment in segments)  # fmt: skip
