"""The steps of a round that need no I/O, in one place for every caller.

The driver (:mod:`.driver`) plays them on its clock with the database and broker around them; the
game designer's harness (:mod:`server.games.testing`) on a fake clock; the simulator
(:mod:`.simulator`) a million times over. So a handler tested with the harness or simulated runs
exactly as it will in production:

- :func:`stake_limit`: what a bet could pay, against the operator's ``max_payout``;
- :func:`begin_running`: ``start``, its event fields, what it adds to the outcome;
- :func:`tick_fields`: one tick's fields, checked not to clash with the event's own;
- :func:`settle_bets`: each bet's own draw (per-bet games), its payout, the operator's cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .events import TICK_RESERVED
from .fair import FairRng
from .handler import BetInfo, InvalidBet, RoundContext, RoundHandler, RunState, TickResult


@dataclass(frozen=True, slots=True)
class Settled:
    """What one bet pays at settlement, and its own draw (per-bet games)."""

    bet_id: int
    payout: int
    result: dict[str, Any] | None = None
    capped_from: int | None = None
    """What the game said the bet pays when that was over the operator's ``max_payout`` (a game's
    bug: bets that could pay more are refused or cashed out first); ``payout`` is cut to the cap."""


def stake_limit(handler: RoundHandler[Any, Any], bet: Any, amount: int, max_payout: int) -> tuple[int, int | None]:
    """The most a bet of ``amount`` could pay (counted at 1.01x when the game knows no bound before the
    round runs) and its ``max_multiplier``; :class:`InvalidBet` (field ``amount``) above ``max_payout``."""
    multiplier = handler.max_multiplier(bet)
    worst = amount * (multiplier if multiplier is not None else 101) // 100
    if worst > max_payout:
        could = "could pay" if multiplier is not None else "would pay at 1.01x"
        raise InvalidBet(
            f"this bet {could} {worst}; the most one bet may pay on {handler.name} is {max_payout}", "amount"
        )
    return worst, multiplier


def begin_running(handler: RoundHandler[Any, Any], ctx: RoundContext[Any], state: RunState[Any]) -> dict[str, Any]:
    """Call ``start``: add what it returns for the outcome to ``state.outcome``; return the fields of
    the ``running`` event (its ``info``)."""
    started = handler.start(ctx, state)
    state.outcome.update(started.outcome)
    return dict(started.event)


def tick_fields(game: str, result: TickResult) -> dict[str, Any] | None:
    """The fields a tick pushes (None: no push). ``ValueError`` when one has a name the engine uses."""
    if result.event is None:
        return None
    clash = TICK_RESERVED.intersection(result.event)
    if clash:
        raise ValueError(f"{game}: tick fields may not be named {sorted(clash)}")
    return result.event


def settle_bets(
    handler: RoundHandler[Any, Any],
    rng: FairRng,
    outcome: dict[str, Any],
    bets: Sequence[BetInfo[Any]],
    max_payout: int,
) -> list[Settled]:
    """What each bet pays: its own draw first (``bet_result`` on the bet's stream), then ``payout``."""
    settled: list[Settled] = []
    draws = type(handler).bet_result is not RoundHandler.bet_result  # else: no bet's stream to open
    for bet in bets:
        result = handler.bet_result(rng.for_bet(bet.bet_id), bet, outcome) if draws else None
        if result is not None:
            bet = replace(bet, result=result)
        paid = handler.payout(bet, outcome)
        if paid < 0:
            raise ValueError(f"{handler.name}: payout of bet {bet.bet_id} is negative ({paid})")
        if paid > max_payout:
            settled.append(Settled(bet.bet_id, max_payout, result, capped_from=paid))
        else:
            settled.append(Settled(bet.bet_id, paid, result))
    return settled
