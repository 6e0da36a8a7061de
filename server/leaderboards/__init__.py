"""Leaderboards: per game and over every game, net winnings and the biggest single win, by day, ISO week
and all time, in a configured time zone.

The data flows one way. The ledger's settlement hook (:func:`record_settled`) writes each bet settled
won or lost into an outbox table, ``leaderboard_feed``, in the settlement's transaction; one relay at a
time (:class:`LeaderboardRelay`) applies the feed to the boards in batches, each exactly once, whatever
crashes; the boards live in a :class:`LeaderboardStore` (Redis sorted sets, or this process for a node
alone); sessions read them and watch them through :class:`Leaderboards`. ``croupier leaderboard rebuild``
rebuilds every board from ``bets`` (:mod:`.rebuild`).
"""

from __future__ import annotations

from .boards import SCOPE_ALL, Board, BoardChanges, BoardKey, Planner, SettledBet, Win, plan
from .feed import combine_settled_hooks, record_settled
from .names import PlayerNames
from .periods import time_zone
from .relay import LeaderboardRelay
from .service import Leaderboards
from .store import LeaderboardStore, LeaderboardUnavailable, Standing, store_from_url

__all__ = [
    "SCOPE_ALL",
    "Board",
    "BoardChanges",
    "BoardKey",
    "LeaderboardRelay",
    "LeaderboardStore",
    "LeaderboardUnavailable",
    "Leaderboards",
    "Planner",
    "PlayerNames",
    "SettledBet",
    "Standing",
    "Win",
    "combine_settled_hooks",
    "plan",
    "record_settled",
    "store_from_url",
    "time_zone",
]
