"""Accounts that may not buy chips (the ``account_restrictions`` table).

A user is ``flagged`` by a refund their wallet could not cover (:mod:`.refunds`: they had played the
refunded chips); an operator may also mark a user ``blocked`` or ``self_excluded`` (with SQL, for now).
Whatever the kind, the cashier refuses the user's ``deposit`` requests (no invoice is made) and the
pre-checkout queries of invoices made before: Telegram then takes no payment.
A restriction stays until the operator removes its row. The queries run in the caller's connection
or transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from ..db.transactions import Connection

REFUSAL = "This account cannot buy chips at the moment. Send /paysupport to the bot for help."
"""What a restricted payer is told at checkout (Telegram shows it): it gives no reason away."""


class RestrictionKind(StrEnum):
    FLAGGED = "flagged"
    """A refund took the wallet below what it owed (a shortfall): set by the cashier."""
    BLOCKED = "blocked"
    SELF_EXCLUDED = "self_excluded"


@dataclass(frozen=True, slots=True)
class Restriction:
    """One row of ``account_restrictions``."""

    user_id: int
    kind: RestrictionKind
    reason: str
    created_at: dt.datetime


_SELECT = "SELECT user_id, kind, reason, created_at FROM account_restrictions WHERE user_id = $1"

_INSERT = """
INSERT INTO account_restrictions (user_id, kind, reason) VALUES ($1, $2, $3)
ON CONFLICT (user_id) DO NOTHING
RETURNING user_id
"""


async def restriction_of(conn: Connection | asyncpg.Pool, user_id: int) -> Restriction | None:
    """The restriction on ``user_id``, or None when they may buy chips."""
    row = await conn.fetchrow(_SELECT, user_id)
    if row is None:
        return None
    return Restriction(row["user_id"], RestrictionKind(row["kind"]), row["reason"], row["created_at"])


async def restrict(conn: Connection, user_id: int, kind: RestrictionKind, reason: str) -> bool:
    """Restrict ``user_id``; False (nothing changed) if they were restricted already: the first
    restriction and its reason stay."""
    return await conn.fetchval(_INSERT, user_id, kind.value, reason) is not None
