"""Rounds: the engine that runs them, the plug-in interface games implement, provable fairness.

- :mod:`.handler`: :class:`RoundHandler`, what a game designer writes;
- :mod:`.fair`: seed hash chains and the fair RNG;
- :mod:`.engine`: :class:`RoundEngine`, what the node and its sessions use, made of
  :mod:`.lease` (which node drives a game; fencing), :mod:`.driver` (the round loop),
  :mod:`.recovery` (rounds a previous driver left), :mod:`.actions` (cash-outs, forwarding),
  :mod:`.follower` (every node's view of every game; resume), :mod:`.events` (the events of a
  game's channel) and :mod:`.clock` (time, injected);
- :mod:`.store`: rounds and seeds in PostgreSQL;
- :mod:`.simulator`: Monte Carlo of a handler alone, to prove its return to player.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GameRules:
    """Limits every bet on a game must respect (amounts in the smallest unit)."""

    name: str
    min_bet: int
    max_bet: int
    max_payout: int
    max_params_bytes: int = 512
