"""Players' own records: their bets and wallet movements (:mod:`.history`).

Reads only: what the ledger and the round engine wrote, as a player may see it.
"""

from __future__ import annotations

from .history import PlayerHistory

__all__ = ["PlayerHistory"]
