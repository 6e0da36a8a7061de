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
from typing import Any, ClassVar

from ..rounds.fair import FairRng
from ..rounds.handler import BetInfo, InvalidBet, RoundHandler
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


@register
class Roulette(RoundHandler):
    name = "roulette"
    default_params: ClassVar[Mapping[str, Any]] = {
        "running_ms": 3000,
        "max_exposure": 100_000_000,  # the most one round may pay out, every bet counted as a win
    }

    def validate_bet(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(params) - {"type", "numbers"}
        if unknown:
            raise InvalidBet(f"roulette takes type and numbers, not {sorted(unknown)}", "params")
        kind = params.get("type")
        if kind not in ODDS:
            raise InvalidBet(f"type must be one of {', '.join(ODDS)}", "params.type")
        numbers = params.get("numbers", [])
        if not isinstance(numbers, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise InvalidBet("numbers must be a list of integers", "params.numbers")
        numbers = sorted(numbers)
        if kind == "straight":
            ok = len(numbers) == 1 and 0 <= numbers[0] <= 36
        elif kind in INSIDE:
            ok = frozenset(numbers) in INSIDE[kind] and len(set(numbers)) == len(numbers)
        elif kind in ("dozen", "column"):
            ok = numbers in ([1], [2], [3])
        else:
            ok = numbers == []
        if not ok:
            raise InvalidBet(f"numbers {numbers} do not form a {kind} bet", "params.numbers")
        return {"type": kind, "numbers": numbers}

    def outcome(self, rng: FairRng) -> dict[str, Any]:
        return {"number": rng.below(37)}

    def payout(self, bet: BetInfo, outcome: Mapping[str, Any]) -> int:
        kind = bet.params["type"]
        if outcome["number"] in covered(kind, bet.params["numbers"]):
            return bet.amount * (ODDS[kind] + 1)
        return 0

    def max_multiplier(self, params: Mapping[str, Any]) -> int:
        return (ODDS[params["type"]] + 1) * 100

    def exposure_cap(self) -> int:
        return int(self.params["max_exposure"])

    def declared_rtp(self, params: Mapping[str, Any]) -> float:
        return len(covered(params["type"], params["numbers"])) * (ODDS[params["type"]] + 1) / 37
