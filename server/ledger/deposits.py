"""Deposits and their reversals, as the ledger holds them.

A ``deposit`` is chips credited from the bank for an external payment, once per ``ref`` (the
payment's charge id). A ``reversal`` takes them back when the payment is refunded: from the wallet
to the bank, at most once per ``ref`` (a unique index, as for deposits) and never more than the
deposit credited (``croupier audit`` checks it). A wallet that has played the chips already gives
back what it holds: the reversal takes that, and the rest is the caller's to record (the shortfall).
A reversal that found the wallet empty moves nothing and so leaves no ledger transaction: the
caller's own record (the Stars cashier's ``star_refunds``) is what says the payment was refunded.

The reads here run in the caller's connection; :class:`~server.ledger.Ledger` writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ..db.transactions import Connection
from .wallets import WalletState


@dataclass(frozen=True, slots=True)
class Deposit:
    """A deposit in the ledger, and its reversal if one moved chips."""

    ref: str
    user_id: int
    wallet: int
    """The wallet's account id."""
    amount: int
    """Chips credited."""
    created_at: dt.datetime
    reversed: int | None
    """Chips the reversal took back (> 0); None when no reversal of ``ref`` is in the ledger."""


@dataclass(frozen=True, slots=True)
class DepositCredit:
    """A deposit to make: ``amount`` chips (> 0) to the wallet of ``user_id`` for the payment ``ref``."""

    user_id: int
    amount: int
    ref: str

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError("a deposit is a positive amount")


@dataclass(frozen=True, slots=True)
class CreditedDeposit:
    """What :meth:`~server.ledger.Ledger.deposit_many` did with one ref."""

    user_id: int
    wallet: WalletState
    """The wallet right after this credit (its state now when the ref was credited before)."""
    credited: bool
    """Credited by this call (False: the ref was credited before, or earlier in the same call)."""


@dataclass(frozen=True, slots=True)
class DepositReversal:
    """What :meth:`~server.ledger.Ledger.reverse_deposit` did (or found done)."""

    ref: str
    user_id: int
    credited: int
    """Chips the deposit credited."""
    taken: int
    """Chips taken back from the wallet (0 when it was empty)."""
    balance: int
    """The wallet's balance after."""
    reversed_before: bool = False
    """A reversal of ``ref`` was in the ledger already: nothing moved this time."""

    @property
    def shortfall(self) -> int:
        """Chips the wallet could not give back (it had played them)."""
        return self.credited - self.taken


_DEPOSITS = """
SELECT t.ref, a.user_id, a.id AS wallet, l.amount, t.created_at,
       (SELECT -rl.amount FROM ledger_txns r JOIN ledger_legs rl ON rl.txn_id = r.id AND rl.account_id = a.id
        WHERE r.kind = 'reversal' AND r.ref = t.ref) AS reversed
FROM ledger_txns t
JOIN ledger_legs l ON l.txn_id = t.id
JOIN accounts a ON a.id = l.account_id AND a.kind = 'wallet'
WHERE t.kind = 'deposit' AND (t.ref = ANY($1::text[]) OR t.created_at >= $2::timestamptz)
ORDER BY t.created_at, t.id
"""


async def find_deposits(conn: Connection | asyncpg.Pool, refs: Sequence[str], since: dt.datetime | None = None,
                        ) -> list[Deposit]:  # fmt: skip
    """The deposits of ``refs``, and with ``since`` (timezone-aware) every deposit made since then, in
    the order they were made."""
    rows = await conn.fetch(_DEPOSITS, list(refs), since)  # NULL: no deposit is "since" it
    return [Deposit(row["ref"], row["user_id"], row["wallet"], row["amount"], row["created_at"], row["reversed"])
            for row in rows]  # fmt: skip
