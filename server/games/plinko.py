"""Plinko: each bet drops its own ball through ``rows`` rows of pegs into one of ``rows + 1`` slots.

Nothing is shared between the bets of a round (the round's outcome is ``{}``): at settlement
each bet draws its ball's path from its own fair stream (:meth:`FairRng.for_bet`), one
left/right bounce per row from the top, and pays ``amount * table[risk][slot] // 100``, where
``slot`` (0 at the left) is the number of bounces to the right and ``table`` the bet's risk
(``{"risk": "low" | "medium" | "high"}``). The result, ``{"path": [0, 1, ...], "slot": k}``
(0 = left, 1 = right), is sent with the bet's ``bet_settled`` so the client animates that path;
``running_ms`` stays 0 by default, as there is nothing to show before settlement.

Verifying a ball: with the round's revealed ``seed``, its ``salt`` and the bet's id, the bet's
stream is the concatenation of the hex digests of
``HMAC-SHA256(key=seed, msg="plinko:<salt>:bet:<bet id>:<counter>")`` (ASCII; counter 0, 1, ...
in decimal). Row ``i`` (from 0) is ``below(2)`` as :meth:`FairRng.below` documents: the stream's
digits ``5i`` to ``5i + 4`` as an integer ``v``; ``2**20`` is a multiple of 2, so no draw is ever
rejected and the ball goes right exactly when ``v`` is odd. In Python::

    stream = "".join(hmac.new(seed.encode(), f"plinko:{salt}:bet:{bet_id}:{c}".encode(), "sha256").hexdigest()
                     for c in range(2))
    path = [int(stream[5 * i : 5 * i + 5], 16) % 2 for i in range(rows)]

Each bounce is a fair coin, so the slot is binomial: ``P(slot = k) = C(rows, k) / 2**rows``,
and a risk's RTP is ``sum(C(rows, k) * table[k]) / (100 * 2**rows)``. The default tables are
Stake's 8-row ones (1, 8, 28, 56, 70, 56, 28, 8, 1 of 256 balls land in slots 0 to 8):

- low:    5.60 2.10 1.10 1.00 0.50 1.00 1.10 2.10 5.60: RTP 25340/25600 = 0.98984375
- medium: 13.00 3.00 1.30 0.70 0.40 0.70 1.30 3.00 13.00: RTP 25320/25600 = 0.9890625
- high:   29.00 4.00 1.50 0.30 0.20 0.30 1.50 4.00 29.00: RTP 25360/25600 = 0.990625

(Stake calls them 99%; the high table's exact return is a hair above it.)
"""

from __future__ import annotations

from collections.abc import Mapping
from math import comb
from typing import Annotated, Any, Literal, get_args

import msgspec

from ..rounds.fair import FairRng
from ..rounds.handler import BetInfo, BetParams, GameParams, Moments, RoundHandler
from .registry import register

Risk = Literal["low", "medium", "high"]
RISKS: tuple[Risk, ...] = get_args(Risk)
Table = tuple[Annotated[int, msgspec.Meta(ge=0, le=10_000_000)], ...]


class PlinkoParams(GameParams, kw_only=True, frozen=True):
    """Plinko's tunables (``CROUPIER_GAME_PARAMS='{"plinko": {...}}'``)."""

    rows: Annotated[int, msgspec.Meta(ge=8, le=16)] = 8
    """Rows of pegs, 8 to 16: each ball bounces once per row. Changing it needs all three tables."""
    low: Table = (560, 210, 110, 100, 50, 100, 110, 210, 560)
    """The low-risk table: what each slot pays per unit staked (hundredths), slot 0 first; ``rows + 1``
    of them, the same read from either end."""
    medium: Table = (1300, 300, 130, 70, 40, 70, 130, 300, 1300)
    """The medium-risk table (as ``low``)."""
    high: Table = (2900, 400, 150, 30, 20, 30, 150, 400, 2900)
    """The high-risk table (as ``low``)."""
    max_exposure: Annotated[int, msgspec.Meta(gt=0)] = 100_000_000
    """The most one round may pay out, every bet counted at its table's largest multiplier."""

    def __post_init__(self) -> None:
        for risk in RISKS:
            table = self.table(risk)
            if len(table) != self.rows + 1:
                raise ValueError(f"params.{risk} has {len(table)} multipliers; {self.rows} rows need {self.rows + 1}")
            if table != table[::-1]:
                raise ValueError(f"params.{risk} must read the same from either end (a symmetric board)")

    def table(self, risk: Risk) -> tuple[int, ...]:
        """The payout table of ``risk``."""
        return {"low": self.low, "medium": self.medium, "high": self.high}[risk]


class PlinkoBet(BetParams, kw_only=True, frozen=True):
    """A ball: ``{"risk": "medium"}``."""

    risk: Risk
    """Which payout table the ball's slot is read from."""


@register
class Plinko(RoundHandler[PlinkoParams, PlinkoBet]):
    """Plinko: one ball per bet, its path drawn from the bet's own stream."""

    name = "plinko"
    strategies = {risk: {"risk": risk} for risk in RISKS}

    def outcome(self, rng: FairRng) -> dict[str, Any]:
        return {}

    def bet_result(self, rng: FairRng, bet: BetInfo[PlinkoBet], outcome: Mapping[str, Any]) -> dict[str, Any]:
        path = [rng.below(2) for _ in range(self.params.rows)]
        return {"path": path, "slot": sum(path)}

    def payout(self, bet: BetInfo[PlinkoBet], outcome: Mapping[str, Any]) -> int:
        if bet.result is None:
            raise ValueError(f"plinko: bet {bet.bet_id} has no ball (bet_result) to pay on")
        slot: int = bet.result["slot"]
        return bet.amount * self.params.table(bet.params.risk)[slot] // 100

    def max_multiplier(self, bet: PlinkoBet) -> int:
        return max(self.params.table(bet.risk))

    def exposure_cap(self) -> int:
        return self.params.max_exposure

    def declared_rtp(self, bet: PlinkoBet) -> float:
        rows, table = self.params.rows, self.params.table(bet.risk)
        paths = 1 << rows  # 2**rows, each as likely
        return sum(comb(rows, slot) * multiplier for slot, multiplier in enumerate(table)) / (100 * paths)

    def return_moments(self, bet: BetInfo[PlinkoBet]) -> Moments:
        """Exact: the ball lands in slot ``k`` with chance ``C(rows, k) / 2**rows`` and pays that slot's multiplier."""
        rows, table, paths = self.params.rows, self.params.table(bet.params.risk), 1 << self.params.rows
        return Moments.of((comb(rows, slot) / paths, bet.amount * multiplier // 100 / bet.amount)
                          for slot, multiplier in enumerate(table))  # fmt: skip
