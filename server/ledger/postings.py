"""Postings: balanced sets of legs, written in bulk.

A :class:`Posting` is one ledger transaction: legs (account, amount) that sum to zero. The
constructor refuses unbalanced legs, so no code path can write money that does not balance;
``croupier audit`` checks the same invariant on the stored data.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .transactions import Connection

TXN_KINDS = frozenset({"bet", "payout", "refund", "deposit", "adjust", "welcome"})


@dataclass(frozen=True, slots=True)
class Posting:
    """One ledger transaction of ``kind`` with ``legs`` summing to zero."""

    kind: str
    legs: tuple[tuple[int, int], ...]
    ref: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TXN_KINDS:
            raise ValueError(f"unknown ledger transaction kind {self.kind!r}")
        if len(self.legs) < 2 or sum(amount for _, amount in self.legs) != 0:
            raise ValueError(f"unbalanced posting: {self.legs}")
        if any(amount == 0 or not isinstance(amount, int) for _, amount in self.legs):
            raise ValueError("legs must be non-zero integers")
        if len({account for account, _ in self.legs}) != len(self.legs):
            raise ValueError("an account appears twice in one posting")


def transfer(kind: str, source: int, target: int, amount: int, *, ref: str | None = None,
             reason: str | None = None) -> Posting:  # fmt: skip
    """A two-leg posting moving ``amount`` (> 0) from ``source`` to ``target``."""
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    return Posting(kind, ((source, -amount), (target, amount)), ref, reason)


_POST = """
WITH txns AS (
    INSERT INTO ledger_txns (id, kind, ref, reason)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
), legs AS (
    INSERT INTO ledger_legs (txn_id, account_id, amount)
    SELECT * FROM unnest($5::bigint[], $6::bigint[], $7::bigint[])
)
UPDATE accounts SET balance = accounts.balance + d.delta, version = accounts.version + d.n
FROM unnest($8::bigint[], $9::bigint[], $10::bigint[]) AS d(account_id, delta, n)
WHERE accounts.id = d.account_id
RETURNING accounts.id, accounts.balance, accounts.version
"""


async def post(conn: Connection, postings: list[Posting]) -> tuple[list[int], dict[int, tuple[int, int]]]:
    """Write ``postings`` and apply them to balances, in the caller's transaction.

    Returns the new transaction ids (in order) and each touched account's final
    (balance, version). A wallet that would go negative raises ``CheckViolationError``.
    Accounts are locked in id order first, the lock order of every ledger writer (system
    accounts have the lowest ids), so concurrent writers cannot deadlock each other.
    """
    if not postings:
        return [], {}
    ids: list[int] = await conn.fetchval(
        "SELECT array_agg(nextval('ledger_txns_id_seq')) FROM generate_series(1, $1)", len(postings)
    )
    leg_txn: list[int] = []
    leg_account: list[int] = []
    leg_amount: list[int] = []
    delta: dict[int, int] = defaultdict(int)
    count: dict[int, int] = defaultdict(int)
    for txn_id, posting in zip(ids, postings, strict=True):
        for account, amount in posting.legs:
            leg_txn.append(txn_id)
            leg_account.append(account)
            leg_amount.append(amount)
            delta[account] += amount
            count[account] += 1
    accounts = sorted(delta)
    await conn.execute("SELECT 1 FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", accounts)
    rows = await conn.fetch(
        _POST,
        ids,
        [p.kind for p in postings],
        [p.ref for p in postings],
        [p.reason for p in postings],
        leg_txn,
        leg_account,
        leg_amount,
        accounts,
        [delta[a] for a in accounts],
        [count[a] for a in accounts],
    )
    return ids, {row["id"]: (row["balance"], row["version"]) for row in rows}
