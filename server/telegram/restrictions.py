"""Accounts that may not buy chips (the ``account_restrictions`` table).

A user is ``flagged`` by a refund their wallet could not cover (:mod:`.refunds`: they had played the
refunded chips); an operator ``blocks`` a user through the back office (:mod:`server.backoffice.accounts`,
with :func:`locked_restriction`, :func:`block`, :func:`lift_block` and :func:`restore` here), or marks one
``self_excluded`` (with SQL, for now). Whatever the kind, the cashier refuses the user's ``deposit``
requests (no invoice is made) and the pre-checkout queries of invoices made before: Telegram then takes no
payment. The table holds one restriction per user: a block replaces the restriction in place, and lifting
it puts back what it replaced (the back office keeps that in its audit log). A restriction stays until the
operator removes its row. Every write of the table is a function of this module; the queries run in the
caller's connection or transaction.
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


_LOCKED = _SELECT + " FOR UPDATE"
_BLOCK = "INSERT INTO account_restrictions (user_id, kind, reason) VALUES ($1, 'blocked', $2) RETURNING created_at"
_REBLOCK = """
UPDATE account_restrictions SET kind = 'blocked', reason = $2, created_at = now() WHERE user_id = $1
RETURNING created_at
"""
_LIFT_BLOCK = "DELETE FROM account_restrictions WHERE user_id = $1 AND kind = 'blocked' RETURNING user_id"
_RESTORE = """
INSERT INTO account_restrictions (user_id, kind, reason, created_at)
VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000))
"""


async def restrict(conn: Connection, user_id: int, kind: RestrictionKind, reason: str) -> bool:
    """Restrict ``user_id``; False (nothing changed) if they were restricted already: the first
    restriction and its reason stay."""
    return await conn.fetchval(_INSERT, user_id, kind.value, reason) is not None


async def locked_restriction(conn: Connection, user_id: int) -> Restriction | None:
    """The restriction on ``user_id``, its row locked (``FOR UPDATE``) until the caller's transaction ends, or
    None: what a change of it reads first."""
    row = await conn.fetchrow(_LOCKED, user_id)
    if row is None:
        return None
    return Restriction(row["user_id"], RestrictionKind(row["kind"]), row["reason"], row["created_at"])


async def block(conn: Connection, user_id: int, reason: str, *, replacing: bool) -> dt.datetime:
    """Make ``user_id``'s restriction a block for ``reason``; when it starts (now). ``replacing``: the user has a
    restriction (the caller read it, locked, with :func:`locked_restriction`), which the block takes the place
    of; else a new row, and a restriction written meanwhile by someone else makes this fail with
    ``UniqueViolationError`` (SQLSTATE 23505): retry the transaction to read it."""
    created_at: dt.datetime | None = await conn.fetchval(_REBLOCK if replacing else _BLOCK, user_id, reason)
    if created_at is None:
        raise LookupError(f"user {user_id} has no restriction to replace")
    return created_at


async def lift_block(conn: Connection, user_id: int) -> bool:
    """Remove ``user_id``'s block; False (nothing changed) if their restriction is not a block (or they have
    none): no other kind is lifted here."""
    return await conn.fetchval(_LIFT_BLOCK, user_id) is not None


async def restore(conn: Connection, user_id: int, kind: RestrictionKind, reason: str, since_ms: int) -> None:
    """Put back a restriction a block had replaced, as it was: ``kind``, ``reason`` and its start (``since_ms``,
    Unix ms). The user must have no restriction now (:func:`lift_block` first)."""
    await conn.execute(_RESTORE, user_id, kind.value, reason, since_ms)
