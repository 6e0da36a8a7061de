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
from typing import Annotated, Any

import msgspec

from ..rounds.fair import FairRng
from ..rounds.handler import (
    ActionRefused,
    ActionResult,
    BetInfo,
    BetParams,
    GameParams,
    Moments,
    RoundContext,
    RoundHandler,
    RunState,
    StartResult,
    TickResult,
)
from .registry import register

MAX_CRASH_POINT = 100_000_000  # 1,000,000.00x


def cap_multiplier(amount: int, max_payout: int) -> int:
    """The highest multiplier (hundredths) at which a bet of ``amount`` pays no more than ``max_payout``."""
    return ((max_payout + 1) * 100 - 1) // amount


class CrashParams(GameParams, kw_only=True, frozen=True):
    """Crash's tunables (``CROUPIER_GAME_PARAMS='{"crash": {...}}'``)."""

    house_edge_bp: Annotated[int, msgspec.Meta(ge=-10_000, lt=10_000)] = 100
    """The house edge in basis points (100: 1%). Below 0 the players have the edge: at -10,000 every
    round reaches 2.00x (tests use it to make rounds run long)."""
    growth_per_ms: Annotated[float, msgspec.Meta(gt=0, le=0.01)] = 0.00006
    """The curve's growth: bustabit's 0.00006 reaches 2.00x after ~11.6 s."""
    max_exposure: Annotated[int, msgspec.Meta(gt=0)] = 100_000_000
    """The most one round may pay out in total (above it, everyone still in is cashed out: ``force_point``)."""


class CrashBet(BetParams, kw_only=True, frozen=True):
    """A crash bet: cash out by hand (``action`` ``cashout``), or at ``auto_cashout`` (hundredths, >= 101)."""

    auto_cashout: Annotated[int, msgspec.Meta(ge=101, le=MAX_CRASH_POINT)] | None = None
    """Cash out automatically when the multiplier reaches this (hundredths, at least 101: 1.01x)."""


def _capped_at(bet: BetInfo[CrashBet], outcome: Mapping[str, Any]) -> int | None:
    capped: Mapping[str, int] = outcome.get("capped", {})
    return capped.get(str(bet.bet_id))


@register
class Crash(RoundHandler[CrashParams, CrashBet]):
    name = "crash"
    tick_ms = 100
    strategies = {"auto 2.00x": {"auto_cashout": 200}, "auto 10.00x": {"auto_cashout": 1000}}

    def outcome(self, rng: FairRng) -> dict[str, Any]:
        x = rng.unit()
        keep = (10_000 - self.params.house_edge_bp) / 10_000
        point = math.ceil(100 * keep / (1 - x) - 1e-9)
        return {"crash_point": max(100, min(point, MAX_CRASH_POINT))}

    def multiplier(self, elapsed_ms: int) -> int:
        """The curve's multiplier (hundredths) ``elapsed_ms`` after running started."""
        return int(100 * math.exp(self.params.growth_per_ms * max(elapsed_ms, 0)))

    def elapsed_for(self, multiplier: int) -> int:
        """When the curve reaches ``multiplier`` (ms after start)."""
        return math.ceil(math.log(multiplier / 100) / self.params.growth_per_ms) if multiplier > 100 else 0

    def start(self, ctx: RoundContext[CrashParams], state: RunState[CrashBet]) -> StartResult:
        crash_point = state.outcome["crash_point"]
        fields: dict[str, Any] = {}
        stake = sum(bet.amount for bet in state.bets)
        if stake and stake * crash_point // 100 > self.params.max_exposure:
            fields["force_point"] = max(101, self.params.max_exposure * 100 // stake)
        # The payout cap: a bet still in when its payout would pass it is cashed out there.
        capped: dict[str, int] = {}
        for bet in state.bets:
            cap_point = cap_multiplier(bet.amount, ctx.max_payout)
            exits = [m for m in (bet.params.auto_cashout, fields.get("force_point")) if m is not None]
            if cap_point < crash_point and (not exits or min(exits) > cap_point):
                capped[str(bet.bet_id)] = cap_point
        if capped:
            fields["capped"] = capped
        return StartResult(outcome=fields)  # nothing for the running event: it would tell of the crash point

    def tick(self, ctx: RoundContext[CrashParams], state: RunState[CrashBet]) -> TickResult:
        crash_point = state.outcome["crash_point"]
        current = self.multiplier(ctx.now_ms() - state.started_ms)
        if current >= crash_point:
            return TickResult({"multiplier": crash_point, "crashed": True}, done=True)
        return TickResult({"multiplier": current})

    def action(self, ctx: RoundContext[CrashParams], state: RunState[CrashBet], bet: BetInfo[CrashBet], action: str,
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
        earlier = [m for m in (bet.params.auto_cashout, state.outcome.get("force_point")) if m is not None]
        if earlier and min(earlier) <= current:
            raise ActionRefused(f"already cashed out automatically at {min(earlier) / 100:.2f}x")
        return ActionResult({"multiplier": current, "payout": bet.amount * current // 100}, cashout=current)

    def payout(self, bet: BetInfo[CrashBet], outcome: Mapping[str, Any]) -> int:
        exits = [m for m in (bet.cashout, bet.params.auto_cashout, outcome.get("force_point"),
                             _capped_at(bet, outcome)) if m is not None]  # fmt: skip
        if not exits:
            return 0
        exit_at = min(exits)
        return bet.amount * exit_at // 100 if exit_at < outcome["crash_point"] else 0

    def declared_rtp(self, bet: CrashBet) -> float:
        return 1 - self.params.house_edge_bp / 10_000 if bet.auto_cashout is not None else 0.0

    def reach_chance(self, multiplier: int) -> float:
        """The chance that the crash point is above ``multiplier`` (hundredths, at least 101), so that a bet
        leaving there wins: ``100 * (1 - edge) / multiplier`` (at most 1), 0 from ``MAX_CRASH_POINT`` on."""
        if multiplier >= MAX_CRASH_POINT:
            return 0.0
        keep = (10_000 - self.params.house_edge_bp) / 10_000
        return min(1.0, 100 * keep / (multiplier + 1e-9))  # the 1e-9 of :meth:`outcome`'s rounding

    def return_moments(self, bet: BetInfo[CrashBet]) -> Moments:
        """Exact for a bet leaving at its ``auto_cashout``: it returns ``amount * auto_cashout // 100`` over
        its stake with :meth:`reach_chance`, else 0.

        A bet played by hand (cashed out by hand, or with no ``auto_cashout``) is ``by_hand``: whatever
        multiplier the player meant to leave at, every multiplier m is reached with chance (1 - edge) / m,
        so the bet returns 1 - edge on average. A recorded cash-out is read as the plan (the moments of a
        bet aimed there); a bet that recorded none lost, its plan unknown: mean 1 - edge, variance NaN."""
        exits = [m for m in (bet.cashout, bet.params.auto_cashout) if m is not None]
        by_hand = bet.cashout is not None or bet.params.auto_cashout is None
        if not exits:
            return Moments(1 - self.params.house_edge_bp / 10_000, math.nan, by_hand=True)
        exit_at = min(exits)
        won = Moments.of([(self.reach_chance(exit_at), bet.amount * exit_at // 100 / bet.amount)])
        return won._replace(by_hand=by_hand)

    def public_outcome(self, outcome: Mapping[str, Any]) -> dict[str, Any]:
        return {key: outcome[key] for key in ("crash_point", "force_point") if key in outcome}
