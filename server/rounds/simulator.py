"""Monte Carlo of a game's handler alone: proves its return to player, deterministically.

Round seeds come from a hash chain of the given start seed, so the same command prints the
same figures on every machine. Each round draws the outcome exactly as the engine does
(``FairRng(seed, salt, game)``) and pays one bet with the strategy's params.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .fair import FairRng
from .handler import BetInfo, RoundHandler

DEFAULT_STRATEGIES: dict[str, dict[str, Any]] = {
    "crash": {"auto_cashout": 200},
    "dice": {"target": 4950, "side": "under"},
    "roulette": {"type": "red", "numbers": []},
}
SIMULATION_SALT = "simulation"


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
    handler: RoundHandler,
    rounds: int,
    params: Mapping[str, Any] | None = None,
    *,
    amount: int = 100,
    start_seed: str = "0" * 64,
) -> SimulationReport:
    """Play ``rounds`` rounds of one bet of ``amount`` with ``params`` (the game's default strategy if None)."""
    if rounds < 2:
        raise ValueError("simulate at least 2 rounds")
    bet_params = handler.validate_bet(params if params is not None else DEFAULT_STRATEGIES.get(handler.name, {}))
    bet = BetInfo(bet_id=0, user_id=0, amount=amount, params=bet_params)
    game = handler.name
    outcome_of, payout_of = handler.outcome, handler.payout
    seed = start_seed
    total = squares = 0.0
    hits = biggest = 0
    started = time.perf_counter()
    for _ in range(rounds):
        seed = hashlib.sha256(seed.encode("ascii")).hexdigest()
        paid = payout_of(bet, outcome_of(FairRng(seed, SIMULATION_SALT, game)))
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
        params=bet_params,
        rtp=mean,
        ci95=1.96 * math.sqrt(variance / rounds),
        declared_rtp=handler.declared_rtp(bet_params),
        hit_rate=hits / rounds,
        max_multiplier=biggest / amount,
        max_exposure=biggest,
        seconds=time.perf_counter() - started,
    )
