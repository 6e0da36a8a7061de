"""The leaderboards' outbox: ``leaderboard_feed`` (migration 0016), one row per bet settled won or lost.

The node gives the ledger :func:`record_settled` as a settlement hook
(:data:`~server.ledger.ledger.SettledHook`, beside the big-win notifications): it runs in every
settlement's transaction, so a bet's row commits with its payout or not at all, once per bet (a bet
closes once). Its ``settled_at`` is the transaction's ``now()``, the very value the settlement writes
into ``bets.settled_at``: a board rebuilt from ``bets`` puts the bet in the same period.

The rows are read back by the relay (:mod:`.relay`), which claims them in batches, applies each batch to
the boards once and deletes it. :func:`combine_settled_hooks` lets the node run this hook beside its others.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..db.transactions import Connection
from ..ledger import ClosedBet
from ..ledger.ledger import SettledHook

COUNTED = frozenset({"won", "lost"})
"""The statuses a leaderboard counts (a refunded bet is as if never placed)."""

_RECORD = """
INSERT INTO leaderboard_feed (bet_id, user_id, game, stake, payout, settled_at)
SELECT r.bet_id, r.user_id, r.game, r.stake, r.payout, now()
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[])
    AS r(bet_id, user_id, game, stake, payout)
"""


async def record_settled(conn: Connection, closed: Sequence[ClosedBet]) -> None:
    """Write a feed row for each bet of ``closed`` settled won or lost, in the settlement's transaction."""
    counted = [bet for bet in closed if bet.status in COUNTED]
    if counted:
        columns = ([b.bet_id for b in counted], [b.user_id for b in counted], [b.game for b in counted],
                   [b.stake for b in counted], [b.payout for b in counted])  # fmt: skip
        await conn.execute(_RECORD, *columns)


def combine_settled_hooks(*hooks: SettledHook | None) -> SettledHook | None:
    """One settlement hook running each of ``hooks`` in turn (None ones left out), in the same transaction;
    None when there are none. A hook that raises rolls the settlement back (the ledger retries it whole)."""
    present = [hook for hook in hooks if hook is not None]
    if len(present) <= 1:
        return present[0] if present else None

    async def settled(conn: Connection, closed: Sequence[ClosedBet]) -> None:
        for hook in present:
            await hook(conn, closed)

    return settled
