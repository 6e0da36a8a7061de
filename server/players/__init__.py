"""Players' own records and limits: their bets and wallet movements (:mod:`.history`), and the limits they set
on themselves (:mod:`.limits`: the rules; :mod:`.limitstore`: in PostgreSQL).

History is reads only: what the ledger and the round engine wrote, as a player may see it.
"""

from __future__ import annotations

from .history import PlayerHistory
from .limits import Calendar, InvalidLimit
from .limitstore import ResponsibleGaming, SessionCheck

__all__ = ["Calendar", "InvalidLimit", "PlayerHistory", "ResponsibleGaming", "SessionCheck"]
