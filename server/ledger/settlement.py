"""Closing bets: settle with payouts, or refund the stake. Idempotent: a bet closes once.

Only bets still ``accepted`` are closed; closing an already closed bet does nothing and pays
nothing, so settling a round twice pays once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson

from ..db.transactions import Connection
from ..players.limitstore import count_paid_back
from .postings import Posting, post, transfer


@dataclass(frozen=True, slots=True)
class ClosedBet:
    """A bet this call closed, with the user's wallet balance and version after the whole call.

    Each closed bet bumps its wallet's version once (its ``bet_settled`` event) and once more when
    it paid (its ``balance`` event), so a user's events of one settlement have consecutive offsets
    ending at ``version``."""

    bet_id: int
    user_id: int
    game: str
    stake: int
    """The bet's amount."""
    status: str
    payout: int
    balance: int
    version: int
    result: dict[str, Any] | None = None
    """The bet's own draw (per-bet games), as stored with it."""


_SETTLE = """
UPDATE bets SET status = CASE WHEN o.payout > 0 THEN 'won' ELSE 'lost' END, payout = o.payout, settled_at = now(),
    result = o.result::jsonb, cashout = COALESCE(bets.cashout, o.cashout)
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::integer[]) AS o(id, payout, result, cashout)
WHERE bets.id = o.id AND bets.status = 'accepted'
RETURNING bets.id, bets.user_id, bets.game, bets.amount, bets.payout, bets.status
"""
"""``cashout``: the cash-out the payout was computed with. A cash-out is in the round's state (and paid by a
settlement from then on) before its own write (``Ledger.record_cashout``) commits; a round that settles in
between stores it here, so that a bet is never closed as paid by a cash-out its row does not show."""

_REFUND = """
UPDATE bets SET status = 'refunded', payout = bets.amount, settled_at = now()
WHERE bets.id = ANY($1::bigint[]) AND bets.status = 'accepted'
RETURNING bets.id, bets.user_id, bets.game, bets.amount, bets.payout, bets.status
"""


async def settle_bets(
    conn: Connection, payouts: list[tuple[int, int]], house: int, results: Mapping[int, dict[str, Any]] | None = None,
    cashouts: Mapping[int, int] | None = None,
) -> list[ClosedBet]:  # fmt: skip
    """Settle bets (id, payout >= 0), each with its own draw from ``results`` (per-bet games) and the cash-out
    its payout was computed with from ``cashouts`` (recorded on the bet if it was not yet): winners are paid
    from ``house`` in the caller's transaction."""
    if any(payout < 0 for _, payout in payouts):
        raise ValueError("a payout is never negative")
    results = results or {}
    cashouts = cashouts or {}
    stored = [None if bet not in results else orjson.dumps(results[bet]).decode() for bet, _ in payouts]
    rows = await conn.fetch(_SETTLE, [bet for bet, _ in payouts], [payout for _, payout in payouts], stored,
                            [cashouts.get(bet) for bet, _ in payouts])  # fmt: skip
    closed = await _pay(conn, rows, house, "payout")
    return [bet if bet.bet_id not in results else replace(bet, result=results[bet.bet_id]) for bet in closed]


async def refund_bets(conn: Connection, bet_ids: list[int], house: int) -> list[ClosedBet]:
    """Void bets and return their stakes from ``house``, in the caller's transaction."""
    return await _pay(conn, await conn.fetch(_REFUND, bet_ids), house, "refund")


async def _pay(conn: Connection, rows: list[asyncpg.Record], house: int, kind: str) -> list[ClosedBet]:
    """Pay the bets of ``rows`` (the ``RETURNING`` of :data:`_SETTLE` or :data:`_REFUND`) from ``house``."""
    if not rows:
        return []
    closed = [(r["id"], r["user_id"], r["payout"], r["status"]) for r in rows]
    users = sorted({user for _, user, _, _ in closed})
    accounts = await conn.fetch("SELECT id, user_id, limited FROM accounts WHERE user_id = ANY($1::bigint[])", users)
    wallets = {r["user_id"]: r["id"] for r in accounts}
    limited = {r["user_id"] for r in accounts if r["limited"]}
    # Each closed bet is one more event on its user's stream (bet_settled): bump the wallet version for it.
    per_user: dict[int, int] = {}
    for _, user, _, _ in closed:
        per_user[user] = per_user.get(user, 0) + 1
    await conn.execute(
        "UPDATE accounts SET version = version + d.n FROM unnest($1::bigint[], $2::bigint[]) AS d(user_id, n) "
        "WHERE accounts.user_id = d.user_id",
        list(per_user), list(per_user.values()),
    )  # fmt: skip
    paid = [(bet, user, amount) for bet, user, amount, _ in closed if amount > 0]
    if limited:  # players who set limits: their payouts and refunds count against a loss limit
        await count_paid_back(conn, [(user, amount) for _, user, amount in paid if user in limited])
    postings: list[Posting] = [transfer(kind, house, wallets[user], amount, ref=str(bet)) for bet, user, amount in paid]
    txn_ids, states = await post(conn, postings)
    if paid:
        await conn.execute(
            "UPDATE bets SET settle_txn = t.txn FROM unnest($1::bigint[], $2::bigint[]) AS t(bet, txn) "
            "WHERE id = t.bet",
            [bet for bet, _, _ in paid],
            txn_ids,
        )
    for row in await conn.fetch("SELECT id, balance, version FROM accounts WHERE user_id = ANY($1::bigint[])", users):
        states[row["id"]] = (row["balance"], row["version"])
    return [ClosedBet(r["id"], r["user_id"], r["game"], r["amount"], r["status"], r["payout"],
                      *states[wallets[r["user_id"]]]) for r in rows]  # fmt: skip
