"""A player's own bets and wallet movements, newest first, a page at a time (keyset pagination).

``my_bets`` pages through ``bets`` by the index ``bets_by_user`` (``user_id, id DESC``) or, for one
game, ``bets_by_user_game`` (``user_id, game, id DESC``); ``my_transactions`` through the wallet's
``ledger_legs`` by ``ledger_legs_by_account`` (``account_id, txn_id DESC``). A page is one index range
scan of ``limit`` rows whatever the table's size: the cursor is the id the last page ended at (opaque
to clients), and the next page is what comes after it in the index. docs/ledger.md shows the plans;
tests/players/test_history.py checks that they use these indexes.

A bet shows its round's seed only once the round is settled (before, the seed would tell the outcome).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg
import orjson

from protocol import messages as m

_BET_COLUMNS = """
SELECT b.id, b.game, b.round_id, b.amount, b.params, b.status, b.payout, b.cashout, b.result, b.created_at,
       b.settled_at, r.seed_hash, c.salt AS salt, CASE WHEN r.phase = 'settled' THEN s.seed END AS seed
FROM (SELECT * FROM bets WHERE {where} ORDER BY id DESC LIMIT $3) AS b
JOIN rounds r ON r.id = b.round_id
JOIN seed_chains c ON c.id = r.chain_id
LEFT JOIN seeds s ON s.chain_id = r.chain_id AND s.idx = r.chain_idx
ORDER BY b.id DESC
"""

BETS = _BET_COLUMNS.format(where="user_id = $1 AND id < $2")
"""A page of a player's bets of every game: ($1 user id, $2 the cursor's id, $3 the page size)."""
GAME_BETS = _BET_COLUMNS.format(where="user_id = $1 AND id < $2 AND game = $4")
"""A page of a player's bets of one game ($4)."""
TRANSACTIONS = """
SELECT t.id, t.kind, l.amount, t.ref, t.reason, t.created_at
FROM ledger_legs l JOIN ledger_txns t ON t.id = l.txn_id
WHERE l.account_id = (SELECT id FROM accounts WHERE user_id = $1) AND l.txn_id < $2
ORDER BY l.txn_id DESC LIMIT $3
"""
"""A page of a player's wallet movements: ($1 user id, $2 the cursor's id, $3 the page size)."""

_START = 2**63 - 1
"""The cursor of the first page: before every id."""
_SHOWN_REASONS = frozenset({"adjust", "reversal", "welcome"})
"""Kinds whose ``reason`` the player sees (written for people); the others' are internal."""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A page of records and the cursor of the next (None: this was the last)."""

    items: list[T]
    next: str | None


class PlayerHistory:
    """A player's records over one pool (reads only)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def bets(self, user_id: int, game: str | None, cursor: str | None, limit: int, /) -> Page[m.MyBet]:
        """The player's bets (of ``game``, or every game) after ``cursor``, newest first."""
        before = _position(cursor)
        if game is None:
            rows = await self._pool.fetch(BETS, user_id, before, limit)
        else:
            rows = await self._pool.fetch(GAME_BETS, user_id, before, limit, game)
        bets = [_bet(row) for row in rows]
        return Page(bets, str(bets[-1].id) if len(bets) == limit else None)

    async def transactions(self, user_id: int, cursor: str | None, limit: int, /) -> Page[m.Transaction]:
        """The player's wallet movements after ``cursor``, newest first."""
        rows = await self._pool.fetch(TRANSACTIONS, user_id, _position(cursor), limit)
        items = [
            m.Transaction(id=row["id"], kind=row["kind"], amount=row["amount"], ref=row["ref"],
                          reason=row["reason"] if row["kind"] in _SHOWN_REASONS else None, at=_ms(row["created_at"]))
            for row in rows
        ]  # fmt: skip
        return Page(items, str(items[-1].id) if len(items) == limit else None)


def _position(cursor: str | None) -> int:
    """The id a cursor stands for (checked digits by the protocol's checks; clamped to a bigint)."""
    return _START if cursor is None else min(int(cursor), _START)


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def _bet(row: asyncpg.Record) -> m.MyBet:
    return m.MyBet(
        id=row["id"],
        game=row["game"],
        round=row["round_id"],
        amount=row["amount"],
        params=orjson.loads(row["params"]),
        status=row["status"],
        payout=row["payout"],
        placed_at=_ms(row["created_at"]),
        settled_at=None if row["settled_at"] is None else _ms(row["settled_at"]),
        cashout=row["cashout"],
        result=None if row["result"] is None else orjson.loads(row["result"]),
        seed_hash=row["seed_hash"],
        salt=row["salt"],
        seed=row["seed"],
    )
