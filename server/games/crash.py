"""Crash: a multiplier climbs from 1.00x until it crashes; cash out before it does.

The crash point is drawn before betting opens (bustabit's formula with the house edge as a
parameter): ``max(1.00, ceil(100 * (1 - edge) / (1 - X)) / 100)`` for a uniform X, so a bet
that cashes out at any multiplier m wins with probability (1 - edge) / m: the RTP is 1 - edge
whatever the target. A bet pays ``amount * cashout // 100`` if it cashed out below the crash
point, else 0. The multiplier at t ms is ``floor(100 * e^(growth * t))``.

Exposure cap (bustabit's forcePoint): when betting closes, if the round's total stake times the
multiplier could exceed ``max_exposure``, everyone still in is cashed out at the multiplier
where it would, ``force_point``. Payout cap (the game's ``max_payout``): a bet still in when its
payout would pass the cap is cashed out at the highest multiplier that stays within it (listed
by bet id in the stored outcome's ``capped``); a cash-out after that point is refused saying so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from ..rounds.fair import FairRng
from ..rounds.handler import (
    ActionRefused,
    ActionResult,
    BetInfo,
    InvalidBet,
    RoundContext,
    RoundHandler,
    RunState,
    TickResult,
)
from .registry import register

MAX_CRASH_POINT = 100_000_000  # 1,000,000.00x


def cap_multiplier(amount: int, max_payout: int) -> int:
    """The highest multiplier (hundredths) at which a bet of ``amount`` pays no more than ``max_payout``."""
    return ((max_payout + 1) * 100 - 1) // amount


def _capped_at(bet: BetInfo, outcome: Mapping[str, Any]) -> int | None:
    capped: Mapping[str, int] = outcome.get("capped", {})
    return capped.get(str(bet.bet_id))


@register
class Crash(RoundHandler):
    name = "crash"
    tick_ms = 100
    default_params: ClassVar[Mapping[str, Any]] = {
        "house_edge_bp": 100,  # 1%
        "growth_per_ms": 0.00006,  # bustabit's curve: 2.00x after ~11.6 s
        "max_exposure": 100_000_000,  # the most one round may pay out in total
    }

    def validate_bet(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(params) - {"auto_cashout"}
        if unknown:
            raise InvalidBet(f"crash takes only auto_cashout, not {sorted(unknown)}", "params")
        auto = params.get("auto_cashout")
        if auto is None:
            return {}
        if not isinstance(auto, int) or isinstance(auto, bool) or not 101 <= auto <= MAX_CRASH_POINT:
            raise InvalidBet("auto_cashout must be an integer multiplier in hundredths, at least 101 (1.01x)",
                             "params.auto_cashout")  # fmt: skip
        return {"auto_cashout": auto}

    def outcome(self, rng: FairRng) -> dict[str, Any]:
        x = rng.unit()
        keep = (10_000 - self.params["house_edge_bp"]) / 10_000
        point = math.ceil(100 * keep / (1 - x) - 1e-9)
        return {"crash_point": max(100, min(point, MAX_CRASH_POINT))}

    def multiplier(self, elapsed_ms: int) -> int:
        """The curve's multiplier (hundredths) ``elapsed_ms`` after running started."""
        return int(100 * math.exp(self.params["growth_per_ms"] * max(elapsed_ms, 0)))

    def elapsed_for(self, multiplier: int) -> int:
        """When the curve reaches ``multiplier`` (ms after start)."""
        return math.ceil(math.log(multiplier / 100) / self.params["growth_per_ms"]) if multiplier > 100 else 0

    def start(self, ctx: RoundContext, state: RunState) -> dict[str, Any]:
        crash_point = state.outcome["crash_point"]
        fields: dict[str, Any] = {}
        stake = sum(bet.amount for bet in state.bets)
        if stake and stake * crash_point // 100 > self.params["max_exposure"]:
            fields["force_point"] = max(101, self.params["max_exposure"] * 100 // stake)
        # The payout cap: a bet still in when its payout would pass it is cashed out there.
        capped: dict[str, int] = {}
        for bet in state.bets:
            cap_point = cap_multiplier(bet.amount, ctx.max_payout)
            exits = [m for m in (bet.params.get("auto_cashout"), fields.get("force_point")) if m is not None]
            if cap_point < crash_point and (not exits or min(exits) > cap_point):
                capped[str(bet.bet_id)] = cap_point
        if capped:
            fields["capped"] = capped
        return fields

    def tick(self, ctx: RoundContext, state: RunState) -> TickResult:
        crash_point = state.outcome["crash_point"]
        current = self.multiplier(ctx.now_ms() - state.started_ms)
        if current >= crash_point:
            return TickResult({"multiplier": crash_point, "crashed": True}, done=True)
        return TickResult({"multiplier": current})

    def action(self, ctx: RoundContext, state: RunState, bet: BetInfo, action: str,
               params: Mapping[str, Any]) -> ActionResult:  # fmt: skip
        if action != "cashout":
            raise ActionRefused(f"crash has no action {action!r}; use cashout")
        current = self.multiplier(ctx.now_ms() - state.started_ms)
        crash_point = state.outcome["crash_point"]
        if current >= crash_point:
            raise ActionRefused(f"too late: the round crashed at {crash_point / 100:.2f}x")
        if bet.cashout is not None:
            raise ActionRefused(f"already cashed out at {bet.cashout / 100:.2f}x")
        cap = _capped_at(bet, state.outcome)
        if cap is not None and cap <= current:
            raise ActionRefused(f"already cashed out at {cap / 100:.2f}x, where the payout reached the game's cap")
        earlier = [m for m in (bet.params.get("auto_cashout"), state.outcome.get("force_point")) if m is not None]
        if earlier and min(earlier) <= current:
            raise ActionRefused(f"already cashed out automatically at {min(earlier) / 100:.2f}x")
        return ActionResult({"multiplier": current, "payout": bet.amount * current // 100}, cashout=current)

    def payout(self, bet: BetInfo, outcome: Mapping[str, Any]) -> int:
        exits = [m for m in (bet.cashout, bet.params.get("auto_cashout"), outcome.get("force_point"),
                             _capped_at(bet, outcome)) if m is not None]  # fmt: skip
        if not exits:
            return 0
        exit_at = min(exits)
        return bet.amount * exit_at // 100 if exit_at < outcome["crash_point"] else 0

    def public_outcome(self, outcome: Mapping[str, Any]) -> dict[str, Any]:
        return {key: outcome[key] for key in ("crash_point", "force_point") if key in outcome}
