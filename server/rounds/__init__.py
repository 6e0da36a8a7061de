"""Rounds: which games exist, their betting rules, and which round takes bets now.

The round engine (betting -> running -> settled, provably fair, plug-in handlers) is the
next piece of work. Until it lands, :class:`PlaceholderRounds` serves the v1 games with one
round each (id 1) that is always open for betting and never settles, so bets, balances and
the ledger can be exercised end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

V1_GAMES = ("crash", "dice", "roulette")


@dataclass(frozen=True, slots=True)
class GameRules:
    """Limits every bet on a game must respect (amounts in the smallest unit)."""

    name: str
    min_bet: int
    max_bet: int
    max_params_bytes: int = 512


class RoundSource(Protocol):
    """What the session asks about games and rounds before a bet reaches the ledger."""

    def games(self) -> tuple[str, ...]:
        """Names of the games this node serves."""
        ...

    def rules(self, game: str) -> GameRules | None:
        """The game's betting rules, or None for an unknown game."""
        ...

    def betting_round(self, game: str) -> int | None:
        """Id of the round now taking bets, or None when betting is closed."""
        ...

    def snapshot(self, game: str) -> dict[str, object]:
        """The current round as a ``subscribed`` reply carries it."""
        ...


class PlaceholderRounds:
    """Round 1 of every game, always in ``betting``. Replaced by the round engine."""

    ROUND_ID = 1

    def __init__(self, *, min_bet: int, max_bet: int, games: tuple[str, ...] = V1_GAMES) -> None:
        self._rules = {name: GameRules(name, min_bet, max_bet) for name in games}

    def games(self) -> tuple[str, ...]:
        return tuple(self._rules)

    def rules(self, game: str) -> GameRules | None:
        return self._rules.get(game)

    def betting_round(self, game: str) -> int | None:
        return self.ROUND_ID if game in self._rules else None

    def snapshot(self, game: str) -> dict[str, object]:
        return {"round": self.ROUND_ID, "game": game, "phase": "betting"}
