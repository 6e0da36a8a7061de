"""Players' accounts as the back office sees and changes them: profile, look-up, block and unblock.

A blocked account is an ``account_restrictions`` row of kind ``blocked`` (migration 0010; the cashier
refuses any restricted account's deposits), written by :mod:`server.telegram.restrictions`, which owns the
table: this module decides and audits, that one writes. Blocking also closes the user's sockets with 4403
on every node (:class:`~server.backoffice.control.ClusterControl`), and their next ``auth`` is refused (the
sign-in reads the restriction with the user's row, :class:`server.ledger.signin.AccountBlocked`). The table
holds one restriction per user: blocking a ``flagged`` or ``self_excluded`` account replaces its restriction
(the audit row keeps it), and unblocking puts it back, so an unblock never lifts what the block did not set.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

from protocol import CloseCode

from ..db.transactions import RETRYABLE_SQLSTATES, Connection, in_transaction
from ..players import ResponsibleGaming
from . import audit, risk
from .control import BLOCK_HOLD, ClusterControl
from .errors import NotFound

_PROFILE = """
SELECT u.id, u.first_name, u.last_name, u.username, u.language_code, u.is_premium, u.allows_write_to_pm,
       u.created_at, u.last_seen_at, a.balance, a.version, r.kind, r.reason, r.created_at AS restricted_at
FROM users u LEFT JOIN accounts a ON a.user_id = u.id LEFT JOIN account_restrictions r ON r.user_id = u.id
"""
_BY_ID = _PROFILE + "WHERE u.id = $1"
_BY_USERNAME = _PROFILE + "WHERE lower(u.username) = lower($1) AND u.username IS NOT NULL ORDER BY u.id LIMIT 50"
"""``users_by_username`` (migration 0016): Telegram usernames are case-insensitive; one may have changed hands."""
CLOSE_REASON = "account blocked"
"""The close reason a blocked account's sockets get (the operator's reason stays in the audit log)."""


def _ms(at: dt.datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


def _restriction(kind: str | None, reason: str | None, since: dt.datetime | None) -> dict[str, Any] | None:
    return None if kind is None else {"kind": kind, "reason": reason, "since": _ms(since)}


def _profile(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "username": row["username"],
        "language_code": row["language_code"],
        "is_premium": row["is_premium"],
        "allows_write_to_pm": row["allows_write_to_pm"],
        "created_at": _ms(row["created_at"]),
        "last_seen_at": _ms(row["last_seen_at"]),
        "balance": row["balance"],
        "wallet_version": row["version"],
        "restriction": _restriction(row["kind"], row["reason"], row["restricted_at"]),
        "blocked": row["kind"] == "blocked",
    }


async def profile(pool: asyncpg.Pool, responsible: ResponsibleGaming, user_id: int) -> dict[str, Any]:
    """The user's profile (``users``), balance (``accounts``; null before their first sign-in opened a wallet),
    restriction, the number of their risk flags nobody reviewed yet (``open_risk_flags``, :mod:`.risk`) and
    their responsible-gaming state (``responsible_gaming``: the limits they set on themselves with what is
    used of them, and their active cool-off or self-exclusion, as the player's own ``limits`` request shows
    them; read only: the back office never changes them), or :class:`NotFound`."""
    row = await pool.fetchrow(_BY_ID, user_id)
    if row is None:
        raise NotFound(f"no user {user_id}: the user never authenticated")
    open_flags = await risk.open_count(pool, user_id)
    limits = await responsible.state(user_id)
    return {
        **_profile(row),
        "open_risk_flags": open_flags,
        "responsible_gaming": {
            "limits": msgspec.to_builtins(limits.limits),
            "exclusion": msgspec.to_builtins(limits.exclusion),
        },
    }


async def find(pool: asyncpg.Pool, username: str) -> list[dict[str, Any]]:
    """The users whose (last known) Telegram username is ``username``, without ``@``, case-insensitive."""
    return [_profile(row) for row in await pool.fetch(_BY_USERNAME, username.removeprefix("@"))]


async def _locked_restriction(conn: Connection, user_id: int) -> dict[str, Any] | None:
    from ..telegram import restrictions  # see block()

    if await conn.fetchval("SELECT 1 FROM users WHERE id = $1", user_id) is None:
        raise NotFound(f"no user {user_id}: the user never authenticated")
    found = await restrictions.locked_restriction(conn, user_id)
    return None if found is None else _restriction(found.kind.value, found.reason, found.created_at)


async def block(pool: asyncpg.Pool, control: ClusterControl, actor: str, user_id: int, reason: str) -> dict[str, Any]:
    """Block ``user_id`` (audited in the same transaction), then close their sockets on every node with
    4403. Blocking a blocked account changes nothing (and writes no audit row) but closes its sockets
    again. Returns ``{"user", "blocked", "changed", "restriction"}``."""
    # Imported here: importing server.telegram imports aiogram (seconds), which the back office's other
    # commands (croupier risk flags, ...) need not wait for; a node has it loaded already.
    from ..telegram import restrictions
    from ..telegram.restrictions import RestrictionKind

    async def work(conn: Connection) -> tuple[bool, dict[str, Any] | None]:
        before = await _locked_restriction(conn, user_id)
        if before is not None and before["kind"] == "blocked":
            return False, before
        # A concurrent block inserting first makes the INSERT fail (23505): the retry finds its row.
        since = await restrictions.block(conn, user_id, reason, replacing=before is not None)
        after = _restriction(RestrictionKind.BLOCKED.value, reason, since)
        await audit.record(conn, actor, "block", f"user:{user_id}", reason, before={"restriction": before},
                           after={"restriction": after})  # fmt: skip
        return True, after

    changed, restriction = await in_transaction(pool, work, retry_sqlstates=RETRYABLE_SQLSTATES | {"23505"})
    await control.close_user(user_id, CloseCode.FORBIDDEN, CLOSE_REASON, hold=BLOCK_HOLD)
    return {"user": user_id, "blocked": True, "changed": changed, "restriction": restriction}


async def unblock(pool: asyncpg.Pool, control: ClusterControl, actor: str, user_id: int, reason: str) -> dict[str, Any]:
    """Lift ``user_id``'s block (audited in the same transaction), putting back the restriction the block
    replaced, if any; their sockets are admitted again at once on every node. An account that is not
    blocked is left as it is (no audit row). Returns ``{"user", "blocked", "changed", "restriction"}``."""
    from ..telegram import restrictions  # see block()
    from ..telegram.restrictions import RestrictionKind

    target = f"user:{user_id}"

    async def work(conn: Connection) -> tuple[bool, dict[str, Any] | None]:
        before = await _locked_restriction(conn, user_id)
        if before is None or before["kind"] != "blocked":
            return False, before
        await restrictions.lift_block(conn, user_id)
        restored = await _replaced(conn, target, before)
        if restored is not None:
            await restrictions.restore(conn, user_id, RestrictionKind(restored["kind"]), restored["reason"],
                                       restored["since"])  # fmt: skip
        await audit.record(conn, actor, "unblock", target, reason, before={"restriction": before},
                           after={"restriction": restored})  # fmt: skip
        return True, restored

    changed, restriction = await in_transaction(pool, work)
    await control.lift(user_id)
    return {"user": user_id, "blocked": False, "changed": changed, "restriction": restriction}


async def _replaced(conn: Connection, target: str, blocked: dict[str, Any]) -> dict[str, Any] | None:
    """The restriction the block now being lifted replaced, from that block's audit row (None when it
    replaced none, or when the block was not made by the back office)."""
    last = await audit.last(conn, "block", target)
    if last is None:
        return None
    before, after = last
    made = (after or {}).get("restriction") or {}
    if made.get("since") != blocked["since"]:  # the block in place is not the one that row recorded
        return None
    replaced = (before or {}).get("restriction")
    return replaced if isinstance(replaced, dict) and replaced.get("kind") != "blocked" else None
