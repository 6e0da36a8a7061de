"""The betting lock of a round: no bet can land in a round that stopped betting.

A PostgreSQL transaction-level advisory lock per round, keyed by minus the round id (round ids
are positive, so these keys never meet the positive one-key locks of the migrator and of the node
claim; the round drivers' game locks use the two-key space). Two parties take it:

- every bet batch takes it **shared** on each round it bets on (:data:`HOLD_BETTING_OPEN`),
  before it reads whether the rounds still take bets, and holds it until it commits;
- the round driver takes it **exclusively** to close betting (:func:`close_betting`), in the
  transaction that moves the round out of ``betting``.

So closing waits for the batches in flight, and a batch that starts after the close sees the
round closed. Advisory locks live in memory: no tuple is written for them, and a batch betting
on several rounds does not block another batch on the same rounds (shared with shared).
"""

from __future__ import annotations

from .transactions import Connection

HOLD_BETTING_OPEN = "SELECT count(pg_advisory_xact_lock_shared(-r)) AS held FROM unnest($1::bigint[]) AS r"
"""A subquery taking the betting lock shared on every round id of the array ``$1`` (one row, the
count); the bet batch runs it first in its locking statement. Held until the transaction ends."""

_CLOSE_BETTING = "SELECT pg_advisory_xact_lock(-$1::bigint)"


async def close_betting(conn: Connection, round_id: int) -> None:
    """Take ``round_id``'s betting lock exclusively, in the caller's transaction: returns once every
    bet batch holding it committed or rolled back; until the transaction ends, no batch can take it.

    The caller moves the round out of ``betting`` in the same transaction, so every bet is either
    committed before it (and read with the round's bets) or refused ``betting_closed``."""
    await conn.execute(_CLOSE_BETTING, round_id)
