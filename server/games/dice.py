"""Dice: a roll 0..9999; bet it lands under or over a target.

``under T`` wins when roll < T (chance T/10000); ``over T`` when roll > T (chance
(9999-T)/10000). The payout multiplier (hundredths) is ``floor(100 * (1 - edge) / chance)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..rounds.fair import FairRng
from ..rounds.handler import BetInfo, InvalidBet, RoundHandler
from .registry import register


def winning_rolls(target: int, side: str) -> int:
    return target if side == "under" else 9999 - target


@register
class Dice(RoundHandler):
    name = "dice"
    default_params: ClassVar[Mapping[str, Any]] = {
        "house_edge_bp": 100,
        "running_ms": 1000,
        "max_exposure": 100_000_000,  # the most one round may pay out, every bet counted as a win
    }

    def multiplier(self, target: int, side: str) -> int:
        """Payout multiplier in hundredths for a bet on ``side`` of ``target``."""
        return int((10_000 - self.params["house_edge_bp"]) * 100 // winning_rolls(target, side))

    def validate_bet(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(params) - {"target", "side"}
        if unknown:
            raise InvalidBet(f"dice takes target and side, not {sorted(unknown)}", "params")
        target, side = params.get("target"), params.get("side")
        if not isinstance(target, int) or isinstance(target, bool) or not 1 <= target <= 9998:
            raise InvalidBet("target must be an integer from 1 to 9998", "params.target")
        if side not in ("under", "over"):
            raise InvalidBet('side must be "under" or "over"', "params.side")
        if self.multiplier(target, side) <= 100:
            raise InvalidBet(f"{side} {target} wins too often to pay more than the stake", "params.target")
        return {"target": target, "side": side}

    def outcome(self, rng: FairRng) -> dict[str, Any]:
        return {"roll": rng.below(10_000)}

    def payout(self, bet: BetInfo, outcome: Mapping[str, Any]) -> int:
        target, side, roll = bet.params["target"], bet.params["side"], outcome["roll"]
        won = roll < target if side == "under" else roll > target
        return bet.amount * self.multiplier(target, side) // 100 if won else 0

    def max_multiplier(self, params: Mapping[str, Any]) -> int:
        return self.multiplier(params["target"], params["side"])

    def exposure_cap(self) -> int:
        return int(self.params["max_exposure"])

    def declared_rtp(self, params: Mapping[str, Any]) -> float:
        wins = winning_rolls(params["target"], params["side"])
        return wins / 10_000 * self.multiplier(params["target"], params["side"]) / 100
