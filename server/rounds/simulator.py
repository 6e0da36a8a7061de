"""Monte Carlo of a game's handler alone: proves its return to player, deterministically.

Round seeds come from a hash chain of the given start seed, so the same command prints the
same figures on every machine. Each round plays one bet with the strategy's params through the
steps the engine plays (:mod:`.play`): the outcome from ``FairRng(seed, salt, game)``, ``start``,
the bet's own draw (per-bet games) and its payout. Ticks and player actions are not played: a
strategy is what a bet's params say (crash: an ``auto_cashout``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .fair import FairRng
from .handler import BetInfo, RoundContext, RoundHandler, RunState
from .play import begin_running, settle_bets

SIMULATION_SALT = "simulation"
_NO_CAP = 2**62


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """What a simulation measured. ``rtp`` is total paid over total staked."""

    game: str
    rounds: int
    params: Mapping[str, Any]
    rtp: float
    ci95: float
    declared_rtp: float
    hit_rate: float
    max_multiplier: float
    max_exposure: int
    seconds: float

    @property
    def within_interval(self) -> bool:
        """True when the declared RTP lies inside the 95% confidence interval of the simulated one."""
        return abs(self.rtp - self.declared_rtp) <= self.ci95

    def summary(self) -> str:
        verdict = "within" if self.within_interval else "OUTSIDE"
        return "\n".join([
            f"{self.game}: {self.rounds:,} rounds, bet params {dict(self.params)} ({self.seconds:.1f} s)",
            f"  RTP {self.rtp:.5f} +- {self.ci95:.5f} (95% CI); declared {self.declared_rtp:.5f}: "
            f"{verdict} the interval",
            f"  hit rate {self.hit_rate:.5f}; max multiplier {self.max_multiplier:.2f}x; "
            f"max exposure (largest payout of one round) {self.max_exposure:,}",
        ])  # fmt: skip


def simulate(
    handler: RoundHandler[Any, Any],
    rounds: int,
    params: Mapping[str, Any],
    *,
    amount: int = 100,
    start_seed: str = "0" * 64,
) -> SimulationReport:
    """Play ``rounds`` rounds of one bet of ``amount`` with bet ``params`` (``InvalidBet`` if the game refuses them)."""
    if rounds < 2:
        raise ValueError("simulate at least 2 rounds")
    bet = BetInfo(bet_id=0, user_id=0, amount=amount, params=handler.read_bet(params, amount))
    game, log = handler.name, logging.getLogger(f"simulate.{handler.name}")
    outcome_of = handler.outcome
    starts = type(handler).start is not RoundHandler.start  # else: nothing to play when betting closes
    seed = start_seed
    total = squares = 0.0
    hits = biggest = 0
    started = time.perf_counter()
    for number in range(rounds):
        seed = hashlib.sha256(seed.encode("ascii")).hexdigest()
        rng = FairRng(seed, SIMULATION_SALT, game)
        outcome = outcome_of(rng)
        if starts:
            ctx = RoundContext(number, _zero, rng, handler.params, log, _NO_CAP)
            begin_running(handler, ctx, RunState(0, outcome, [bet]))
        paid = settle_bets(handler, rng, outcome, [bet], _NO_CAP)[0].payout
        ratio = paid / amount
        total += ratio
        squares += ratio * ratio
        if paid:
            hits += 1
            biggest = max(biggest, paid)
    mean = total / rounds
    variance = max(squares / rounds - mean * mean, 0.0) * rounds / (rounds - 1)
    return SimulationReport(
        game=game,
        rounds=rounds,
        params=handler.bet_wire(bet.params),
        rtp=mean,
        ci95=1.96 * math.sqrt(variance / rounds),
        declared_rtp=handler.declared_rtp(bet.params),
        hit_rate=hits / rounds,
        max_multiplier=biggest / amount,
        max_exposure=biggest,
        seconds=time.perf_counter() - started,
    )


def _zero() -> int:
    return 0
