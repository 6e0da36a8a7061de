"""Deposit-then-refund cycling: Stars payments refunded again and again, or right after their chips were played.

A refunded payment's chips are taken back (:mod:`server.telegram.refunds`), but what was won with them
before the refund stays won, and what the wallet had already lost is a shortfall the operator carries.
A player who deposits, plays, and asks Telegram for the money back has had a free bet. A user is flagged
when, among the refunds made in the window (``star_refunds``):

- ``min_refunds`` (2) or more are theirs; or
- one came within ``soon`` (24 hours) of its deposit, and the chips had been played: the user staked at
  least half of what the deposit credited between the deposit and the refund, or the refund fell short.

The score is the number of the user's refunds in the window; the evidence lists each (charge id, chips
credited and taken back, when it was deposited and refunded, what was staked between).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from ..db.transactions import Connection
from .flags import Flag, FlagKind, Window


@dataclass(frozen=True, slots=True)
class CyclingRule:
    """The thresholds (see the module)."""

    min_refunds: int = 2
    soon: dt.timedelta = dt.timedelta(hours=24)
    played_share: float = 0.5


RULE = CyclingRule()


@dataclass(frozen=True, slots=True)
class RefundedDeposit:
    """One refund of the window with its deposit."""

    user_id: int
    charge_id: str
    credited: int
    taken: int
    refunded_at: dt.datetime
    deposited_at: dt.datetime | None
    """When the deposit was credited (None: no deposit of that charge id is on the books)."""
    staked_between: int
    """What the user staked from the deposit to the refund."""

    def played_soon(self, rule: CyclingRule) -> bool:
        """Refunded within ``rule.soon`` of its deposit, its chips played (see the module)."""
        if self.deposited_at is None or self.refunded_at - self.deposited_at > rule.soon:
            return False
        return self.taken < self.credited or self.staked_between >= rule.played_share * self.credited


_REFUNDS = """
SELECT r.user_id, r.telegram_payment_charge_id AS charge_id, r.credited, r.taken, r.created_at AS refunded_at,
       d.created_at AS deposited_at,
       coalesce((SELECT sum(b.amount) FROM bets b
                 WHERE b.user_id = r.user_id AND b.created_at >= d.created_at AND b.created_at <= r.created_at),
                0) AS staked_between
FROM star_refunds r
LEFT JOIN ledger_txns d ON d.kind = 'deposit' AND d.ref = r.telegram_payment_charge_id
WHERE r.created_at >= $1 AND r.created_at < $2
ORDER BY r.user_id, r.created_at
"""


async def refunded_deposits(conn: Connection, window: Window) -> list[RefundedDeposit]:
    """The refunds made in ``window``, each with its deposit and what was staked in between."""
    rows = await conn.fetch(_REFUNDS, window.start, window.end)
    return [
        RefundedDeposit(
            row["user_id"],
            row["charge_id"],
            row["credited"],
            row["taken"],
            row["refunded_at"],
            row["deposited_at"],
            int(row["staked_between"]),
        )
        for row in rows
    ]


def cycling_flags(refunds: Iterable[RefundedDeposit], rule: CyclingRule = RULE) -> list[Flag]:
    """One flag per user whose refunds in the window cycle (see the module)."""
    by_user: dict[int, list[RefundedDeposit]] = {}
    for refund in refunds:
        by_user.setdefault(refund.user_id, []).append(refund)
    flags = []
    for user_id, theirs in by_user.items():
        played = [refund for refund in theirs if refund.played_soon(rule)]
        if len(theirs) < rule.min_refunds and not played:
            continue
        shortfall = sum(refund.credited - refund.taken for refund in theirs)
        why = f"{len(theirs)} refunds" if len(theirs) >= rule.min_refunds else "1 refund"
        if played:
            why += f", {len(played)} within {rule.soon.total_seconds() / 3600:g} h of a deposit whose chips were played"
        flags.append(Flag(user_id, FlagKind.REFUND_CYCLING, len(theirs), {
            "summary": f"{why}; {sum(r.credited for r in theirs)} chips credited, {shortfall} short",
            "refunds": [{
                "charge_id": r.charge_id, "credited": r.credited, "taken": r.taken,
                "deposited_at": None if r.deposited_at is None else r.deposited_at.isoformat(),
                "refunded_at": r.refunded_at.isoformat(), "staked_between": r.staked_between,
                "played_soon": r.played_soon(rule),
            } for r in theirs],
            "rule": {"min_refunds": rule.min_refunds, "soon_hours": rule.soon.total_seconds() / 3600,
                     "played_share": rule.played_share},
        }))  # fmt: skip
    return flags
