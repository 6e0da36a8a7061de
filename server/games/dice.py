"""Dice: a roll 0..9999; bet it lands under or over a target.

``under T`` wins when roll < T (chance T/10000); ``over T`` when roll > T (chance
(9999-T)/10000). The payout multiplier (hundredths) is ``floor(100 * (1 - edge) / chance)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from ..rounds.fair import FairRng
from ..rounds.handler import BetInfo, BetParams, GameParams, InvalidBet, Moments, RoundHandler
from .registry import register


class DiceParams(GameParams, kw_only=True, frozen=True):
    """Dice's tunables (``CROUPIER_GAME_PARAMS='{"dice": {...}}'``)."""

    house_edge_bp: Annotated[int, msgspec.Meta(ge=0, lt=10_000)] = 100
    """The house edge in basis points (100: 1%)."""
    running_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 1000
    max_exposure: Annotated[int, msgspec.Meta(gt=0)] = 100_000_000
    """The most one round may pay out, every bet counted as a win."""


class DiceBet(BetParams, kw_only=True, frozen=True):
    """A dice bet: the roll (0..9999) lands ``under`` or ``over`` the ``target`` (1..9998)."""

    target: Annotated[int, msgspec.Meta(ge=1, le=9998)]
    """The roll to beat: 1..9998."""
    side: Literal["under", "over"]
    """``under``: the roll is below the target; ``over``: above it."""


def winning_rolls(target: int, side: str) -> int:
    return target if side == "under" else 9999 - target


@register
class Dice(RoundHandler[DiceParams, DiceBet]):
    name = "dice"
    strategies = {"under 49.50": {"target": 4950, "side": "under"}, "over 90.00": {"target": 9000, "side": "over"}}

    def multiplier(self, target: int, side: str) -> int:
        """Payout multiplier in hundredths for a bet on ``side`` of ``target``."""
        return (10_000 - self.params.house_edge_bp) * 100 // winning_rolls(target, side)

    def validate_bet(self, bet: DiceBet, amount: int) -> DiceBet:
        if self.multiplier(bet.target, bet.side) <= 100:
            raise InvalidBet(f"{bet.side} {bet.target} wins too often to pay more than the stake", "params.target")
        return bet

    def outcome(self, rng: FairRng) -> dict[str, Any]:
        return {"roll": rng.below(10_000)}

    def payout(self, bet: BetInfo[DiceBet], outcome: Mapping[str, Any]) -> int:
        target, side, roll = bet.params.target, bet.params.side, outcome["roll"]
        won = roll < target if side == "under" else roll > target
        return bet.amount * self.multiplier(target, side) // 100 if won else 0

    def max_multiplier(self, bet: DiceBet) -> int:
        return self.multiplier(bet.target, bet.side)

    def exposure_cap(self) -> int:
        return self.params.max_exposure

    def declared_rtp(self, bet: DiceBet) -> float:
        return winning_rolls(bet.target, bet.side) / 10_000 * self.multiplier(bet.target, bet.side) / 100

    def return_moments(self, bet: BetInfo[DiceBet]) -> Moments:
        """Exact: the bet wins with chance ``winning_rolls / 10000`` and then returns its payout over its stake."""
        chance = winning_rolls(bet.params.target, bet.params.side) / 10_000
        won = bet.amount * self.multiplier(bet.params.target, bet.params.side) // 100 / bet.amount
        return Moments.of([(chance, won)])
