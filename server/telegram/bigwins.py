"""Big wins announced by the bot: a ``big_win`` notification queued in the settlement's own transaction.

The node gives the ledger :meth:`BigWins.queue` as its ``on_settled`` hook
(:data:`~server.ledger.ledger.SettledHook`): every settlement runs it with the bets it closed, and each
bet that won at least ``CROUPIER_BIG_WIN_MULTIPLE`` times its stake gets a notification (kind
``big_win``, key ``big_win:<bet id>``, params ``game``, ``payout`` and ``multiple``, the payout over the
stake to two decimals) that commits with the payout or not at all, once per bet. Whether it is sent
is the notifications' business (:mod:`.notifications`: only to users who allowed the bot to write).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..db.transactions import Connection
from ..ledger import ClosedBet
from .notifications import Queued, big_win_key, queue_many
from .templates import NotificationKind


def multiple_text(payout: int, stake: int) -> str:
    """``payout / stake`` as a player reads it, to two decimals without trailing zeros (``12.5``, ``40``);
    exact (integer arithmetic, rounded down)."""
    hundredths = payout * 100 // stake
    whole, cents = divmod(hundredths, 100)
    return str(whole) if cents == 0 else f"{whole}.{cents:02d}".rstrip("0")


def big_wins(closed: Sequence[ClosedBet], multiple: int) -> list[Queued]:
    """The ``big_win`` notifications of the bets of ``closed`` that won at least ``multiple`` (> 0)
    times their stake, in bet order."""
    wins = [bet for bet in closed if bet.status == "won" and bet.payout >= multiple * bet.stake]
    return [
        Queued(
            bet.user_id,
            NotificationKind.BIG_WIN,
            {"game": bet.game, "payout": bet.payout, "multiple": multiple_text(bet.payout, bet.stake)},
            big_win_key(bet.bet_id),
        )
        for bet in sorted(wins, key=lambda bet: bet.bet_id)
    ]


class BigWins:
    """The settlement hook queueing big-win notifications for wins of at least ``multiple`` times the stake."""

    def __init__(self, multiple: int) -> None:
        if multiple <= 0:
            raise ValueError("a big win is a positive multiple of the stake")
        self.multiple = multiple

    async def queue(self, conn: Connection, closed: Sequence[ClosedBet]) -> None:
        """Queue the notifications of the big wins among ``closed``, in the settlement's transaction."""
        await queue_many(conn, big_wins(closed, self.multiple))
