"""European roulette: one zero, 37 pockets, the standard inside and outside bets.

Bet params ``{"type": T, "numbers": [...]}``. Inside bets name their numbers as they sit on
the table (three columns, rows 1-2-3, 4-5-6, ...): straight (1 number, 35 to 1), split (2
adjacent, 17), street (a row of 3, or 0-1-2 / 0-2-3, 11), corner (a square of 4, or 0-1-2-3,
8), line (two adjacent rows, 6 numbers, 5). Outside bets: dozen and column (numbers [1], [2]
or [3], 2 to 1), red, black, odd, even, low (1-18), high (19-36) (numbers empty, 1 to 1). The
stake is returned on a win: a win pays ``amount * (odds + 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from ..rounds.fair import FairRng
from ..rounds.handler import BetInfo, BetParams, GameParams, InvalidBet, Moments, RoundHandler
from .registry import register

RED = frozenset({1, 3, 5, 7, 9, 12, 14, 16, 18, 19, 21, 23, 25, 27, 30, 32, 34, 36})
ODDS = {"straight": 35, "split": 17, "street": 11, "corner": 8, "line": 5, "dozen": 2, "column": 2,
        "red": 1, "black": 1, "odd": 1, "even": 1, "low": 1, "high": 1}  # fmt: skip


EVEN_MONEY = {
    "red": RED,
    "black": frozenset(range(1, 37)) - RED,
    "odd": frozenset(range(1, 37, 2)),
    "even": frozenset(range(2, 37, 2)),
    "low": frozenset(range(1, 19)),
    "high": frozenset(range(19, 37)),
}


def _inside_sets() -> dict[str, set[frozenset[int]]]:
    rows = [[3 * r + 1, 3 * r + 2, 3 * r + 3] for r in range(12)]
    split = {frozenset({n, n + 1}) for row in rows for n in row[:2]} | {frozenset({n, n + 3}) for n in range(1, 34)}
    split |= {frozenset({0, 1}), frozenset({0, 2}), frozenset({0, 3})}
    street = {frozenset(row) for row in rows} | {frozenset({0, 1, 2}), frozenset({0, 2, 3})}
    corner = {frozenset({n, n + 1, n + 3, n + 4}) for row in rows[:11] for n in row[:2]} | {frozenset({0, 1, 2, 3})}
    line = {frozenset(rows[r] + rows[r + 1]) for r in range(11)}
    return {"split": split, "street": street, "corner": corner, "line": line}


INSIDE = _inside_sets()


def covered(kind: str, numbers: list[int]) -> frozenset[int]:
    """The pockets a (validated) bet covers."""
    if kind in ("straight", "split", "street", "corner", "line"):
        return frozenset(numbers)
    if kind == "dozen":
        return frozenset(range(12 * numbers[0] - 11, 12 * numbers[0] + 1))
    if kind == "column":
        return frozenset(range(numbers[0], 37, 3))
    return EVEN_MONEY[kind]


class RouletteParams(GameParams, kw_only=True, frozen=True):
    """Roulette's tunables (``CROUPIER_GAME_PARAMS='{"roulette": {...}}'``)."""

    running_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 3000
    max_exposure: Annotated[int, msgspec.Meta(gt=0)] = 100_000_000
    """The most one round may pay out, every bet counted as a win."""


BetKind = Literal["straight", "split", "street", "corner", "line", "dozen", "column",
                  "red", "black", "odd", "even", "low", "high"]  # fmt: skip


class RouletteBet(BetParams, kw_only=True, frozen=True):
    """A roulette bet: ``type``, and the ``numbers`` an inside bet covers as they sit on the table (a
    dozen or column: [1], [2] or [3]; none for red, black, odd, even, low, high)."""

    type: BetKind
    """The bet: an inside bet on ``numbers``, a dozen or column (``numbers`` [1], [2] or [3]), or an even-money bet."""
    numbers: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=36)]], msgspec.Meta(max_length=6)] = []
    """The numbers an inside bet covers, as they sit on the table; empty for even-money bets."""


@register
class Roulette(RoundHandler[RouletteParams, RouletteBet]):
    name = "roulette"
    strategies = {"red": {"type": "red"}, "dozen": {"type": "dozen", "numbers": [2]},
                  "straight": {"type": "straight", "numbers": [17]}}  # fmt: skip

    def validate_bet(self, bet: RouletteBet, amount: int) -> RouletteBet:
        kind, numbers = bet.type, sorted(bet.numbers)
        if kind == "straight":
            ok = len(numbers) == 1
        elif kind in INSIDE:
            ok = frozenset(numbers) in INSIDE[kind] and len(set(numbers)) == len(numbers)
        elif kind in ("dozen", "column"):
            ok = numbers in ([1], [2], [3])
        else:
            ok = numbers == []
        if not ok:
            raise InvalidBet(f"numbers {numbers} do not form a {kind} bet", "params.numbers")
        return RouletteBet(type=kind, numbers=numbers)

    def outcome(self, rng: FairRng) -> dict[str, Any]:
        return {"number": rng.below(37)}

    def payout(self, bet: BetInfo[RouletteBet], outcome: Mapping[str, Any]) -> int:
        kind = bet.params.type
        if outcome["number"] in covered(kind, bet.params.numbers):
            return bet.amount * (ODDS[kind] + 1)
        return 0

    def max_multiplier(self, bet: RouletteBet) -> int:
        return (ODDS[bet.type] + 1) * 100

    def exposure_cap(self) -> int:
        return self.params.max_exposure

    def declared_rtp(self, bet: RouletteBet) -> float:
        return len(covered(bet.type, bet.numbers)) * (ODDS[bet.type] + 1) / 37

    def return_moments(self, bet: BetInfo[RouletteBet]) -> Moments:
        """Exact: the bet wins when one of the pockets it covers comes up (each 1 in 37), paying odds + 1."""
        return Moments.of([(len(covered(bet.params.type, bet.params.numbers)) / 37, ODDS[bet.params.type] + 1)])
