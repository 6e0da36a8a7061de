"""The games: one module per game, each a registered :class:`~server.rounds.handler.RoundHandler`."""

from __future__ import annotations

from . import crash, dice, plinko, roulette, wheel  # noqa: F401 - importing registers them
from .registry import configure_games, register, registered_games

__all__ = ["configure_games", "register", "registered_games"]
