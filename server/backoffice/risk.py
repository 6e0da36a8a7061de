"""Risk flags as the back office sees them (``GET /admin/api/risk/flags``, ``croupier risk flags``) and
reviews them (``POST /admin/api/risk/flags/{id}/review``, ``croupier risk review``).

``croupier risk report`` (:mod:`server.risk`) writes the flags to ``risk_flags`` (migration 0018): players
for a person to look at, never a ban. The back office lists them, newest first, a page at a time (keyset on
the id, like every list of the back office: stable while reports add flags), filtered by state (``open``:
nobody reviewed it yet), kind and user, and records a review with :func:`server.risk.mark_reviewed` (the
flag's ``reviewed_at`` and ``reviewer``: the admin key's name, or ``cli:<login>``) and its audit row in one
transaction. A flag is reviewed once: reviewing it again changes nothing and writes no audit row, and the
flag keeps its first reviewer. A review changes nothing else: blocking a player stays the operator's
own decision (:mod:`.accounts`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeAlias

import asyncpg
import orjson

from ..db.transactions import Connection, in_transaction
from ..risk import FlagKind, StoredFlag, Window, mark_reviewed
from . import audit
from .errors import Invalid, NotFound

_COLUMNS = (
    "SELECT id, user_id, kind, score, evidence, window_start, window_end, created_at, reviewed_at, reviewer "
    "FROM risk_flags"
)
_FLAG = _COLUMNS + " WHERE id = $1"
_LOCKED = _FLAG + " FOR UPDATE"
_OPEN_COUNT = "SELECT count(*) FROM risk_flags WHERE user_id = $1 AND reviewed_at IS NULL"
"""A user's open flags: ``risk_flags_by_user``."""
KINDS = tuple(kind.value for kind in FlagKind)
Filters: TypeAlias = tuple[bool | None, FlagKind | None, int | None]
"""The list's filters: open (True) or reviewed (False), a kind, a user; None where not given."""


def target(flag_id: int) -> str:
    """The audit log's name for flag ``flag_id``: ``risk_flag:<id>``."""
    return f"risk_flag:{flag_id}"


def parse_kind(raw: str, field: str = "kind") -> FlagKind:
    """``raw`` as a flag kind, or :class:`Invalid` naming ``field`` and the kinds there are."""
    try:
        return FlagKind(raw)
    except ValueError:
        raise Invalid(f"{field} must be one of {', '.join(KINDS)}", field) from None


def _ms(at: dt.datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


def _stored(row: asyncpg.Record) -> StoredFlag:
    return StoredFlag(row["id"], row["user_id"], FlagKind(row["kind"]), row["score"], orjson.loads(row["evidence"]),
                      Window(row["window_start"], row["window_end"]), row["created_at"], row["reviewed_at"],
                      row["reviewer"])  # fmt: skip


def as_json(flag: StoredFlag) -> dict[str, Any]:
    """A flag as the API shows it (times in ms; ``reviewed_at`` and ``reviewer`` null while it is open)."""
    return {
        "id": flag.id,
        "user": flag.user_id,
        "kind": flag.kind.value,
        "score": flag.score,
        "evidence": flag.evidence,
        "window": {"start": _ms(flag.window.start), "end": _ms(flag.window.end)},
        "created_at": _ms(flag.created_at),
        "reviewed_at": _ms(flag.reviewed_at),
        "reviewer": flag.reviewer,
    }


async def page(
    pool: asyncpg.Pool,
    before_id: int,
    limit: int,
    *,
    open_: bool | None = None,
    kind: FlagKind | None = None,
    user_id: int | None = None,
) -> list[dict[str, Any]]:
    """Flags with ids below ``before_id``, newest first, at most ``limit``: only those nobody reviewed yet
    (``open_`` True) or only reviewed ones (False), of one ``kind``, of one user. Each condition is in the
    statement only when asked for, so the planner sees it and picks its index (``risk_flags_open``,
    ``risk_flags_by_user``)."""
    args: list[Any] = [before_id, limit]
    conditions = ["id < $1"]
    if user_id is not None:
        args.append(user_id)
        conditions.append(f"user_id = ${len(args)}")
    if kind is not None:
        args.append(kind.value)
        conditions.append(f"kind = ${len(args)}")
    if open_ is not None:
        conditions.append("reviewed_at IS NULL" if open_ else "reviewed_at IS NOT NULL")
    query = f"{_COLUMNS} WHERE {' AND '.join(conditions)} ORDER BY id DESC LIMIT $2"  # constants and $n only
    return [as_json(_stored(row)) for row in await pool.fetch(query, *args)]


async def open_count(conn: Connection | asyncpg.Pool, user_id: int) -> int:
    """How many of ``user_id``'s flags nobody has reviewed yet."""
    count: int = await conn.fetchval(_OPEN_COUNT, user_id)
    return count


def _review_state(flag: StoredFlag) -> dict[str, Any]:
    """What the audit row keeps of a flag before and after its review."""
    return {"user": flag.user_id, "kind": flag.kind.value, "score": flag.score,
            "reviewed_at": _ms(flag.reviewed_at), "reviewer": flag.reviewer}  # fmt: skip


async def review(pool: asyncpg.Pool, actor: str, flag_id: int, reason: str) -> dict[str, Any]:
    """Record that ``actor`` reviewed flag ``flag_id`` for ``reason``, audited in the same transaction;
    ``{"flag", "changed"}``. A flag reviewed before is left as it is (``changed`` false, no audit row: it keeps
    its first reviewer). :class:`NotFound` if there is no such flag."""

    async def work(conn: Connection) -> tuple[bool, StoredFlag]:
        row = await conn.fetchrow(_LOCKED, flag_id)  # a concurrent review waits here, then finds this one
        if row is None:
            raise NotFound(f"no risk flag {flag_id}")
        before = _stored(row)
        if before.reviewed_at is not None:
            return False, before
        await mark_reviewed(conn, flag_id, actor)
        reviewed = await conn.fetchrow(_FLAG, flag_id)
        assert reviewed is not None
        after = _stored(reviewed)
        await audit.record(conn, actor, "review", target(flag_id), reason, before=_review_state(before),
                           after=_review_state(after))  # fmt: skip
        return True, after

    changed, flag = await in_transaction(pool, work)
    return {"flag": as_json(flag), "changed": changed}


def check_filters(open_: str | None, kind: str | None, user: str | None) -> Filters:
    """The list's filters from their text (None: not given): ``open`` ``true`` or ``false``, a ``kind``, a
    ``user`` id; :class:`Invalid` naming the first one that is none of those."""
    state: bool | None = None
    if open_ is not None:
        if open_.lower() not in ("true", "false"):
            raise Invalid('open must be "true" (flags nobody reviewed yet) or "false" (reviewed ones)', "open")
        state = open_.lower() == "true"
    flag_kind = None if kind is None else parse_kind(kind)
    user_id: int | None = None
    if user is not None:
        if not user.isascii() or not user.isdigit() or len(user) > 19 or not 0 < int(user) < 2**63:
            raise Invalid(f"user must be a user id from 1 to {2**63 - 1}", "user")
        user_id = int(user)
    return state, flag_kind, user_id
