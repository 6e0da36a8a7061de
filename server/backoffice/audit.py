"""The audit log of the back office: every write an operator makes, in ``admin_actions`` (migration 0016).

A row says who (the admin key's name, or ``cli:<login>`` for the ``croupier`` command), what (``block``,
``unblock``, ``adjust``, ``void``, ``publish``, ``review``), about what (``user:<id>``, ``round:<id>``,
``game:<name>``, ``all``, ``risk_flag:<id>``), why (the operator's reason) and the state before and after, as
JSON. Blocks, unblocks, adjustments and reviews of risk flags write their row in the transaction of the change
(:func:`record` takes the caller's connection): the change and its row commit together or not at all. A void
is written by the node that drives its game, so its row follows the void's answer; a publish's row precedes
the push.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from ..db.transactions import Connection

_INSERT = """
INSERT INTO admin_actions (key_name, action, target, reason, before, after, idempotency_key)
VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7) RETURNING id
"""
_COLUMNS = "SELECT id, key_name, action, target, reason, before, after, idempotency_key, created_at FROM admin_actions"
_PAGE = f"{_COLUMNS} WHERE id < $1 ORDER BY id DESC LIMIT $2"
_TARGET_PAGE = f"{_COLUMNS} WHERE target = $3 AND id < $1 ORDER BY id DESC LIMIT $2"
"""A page of one target's actions: ``admin_actions_by_target``."""
_ADJUSTMENT = "SELECT after FROM admin_actions WHERE action = 'adjust' AND idempotency_key = $1"
_LAST = "SELECT before, after FROM admin_actions WHERE target = $2 AND action = $1 ORDER BY id DESC LIMIT 1"


@dataclass(frozen=True, slots=True)
class Action:
    """One row of the audit log."""

    id: int
    key_name: str
    action: str
    target: str
    reason: str
    before: Any
    after: Any
    idempotency_key: str | None
    created_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        """The row as the API shows it (``created_at`` in ms)."""
        return {
            "id": self.id,
            "key": self.key_name,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "before": self.before,
            "after": self.after,
            "idempotency_key": self.idempotency_key,
            "at": int(self.created_at.timestamp() * 1000),
        }


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _loads(raw: str | None) -> Any:
    return None if raw is None else orjson.loads(raw)


async def record(
    conn: Connection | asyncpg.Pool,
    key_name: str,
    action: str,
    target: str,
    reason: str,
    *,
    before: Any = None,
    after: Any = None,
    idempotency_key: str | None = None,
) -> int:
    """Write one action; its id. In the caller's transaction when ``conn`` is in one."""
    row_id: int = await conn.fetchval(_INSERT, key_name, action, target, reason, _json(before), _json(after),
                                      idempotency_key)  # fmt: skip
    return row_id


async def adjustment(conn: Connection | asyncpg.Pool, idempotency_key: str) -> Any:
    """The ``after`` of the adjustment made with ``idempotency_key`` (what its first request answered), or None."""
    return _loads(await conn.fetchval(_ADJUSTMENT, idempotency_key))


async def last(conn: Connection | asyncpg.Pool, action: str, target: str) -> tuple[Any, Any] | None:
    """``(before, after)`` of the latest ``action`` about ``target``, or None."""
    row = await conn.fetchrow(_LAST, action, target)
    if row is None:
        return None
    return _loads(row["before"]), _loads(row["after"])


async def page(pool: asyncpg.Pool, target: str | None, before_id: int, limit: int) -> list[Action]:
    """The actions (about ``target``, or all) with ids below ``before_id``, newest first."""
    if target is None:
        rows = await pool.fetch(_PAGE, before_id, limit)
    else:
        rows = await pool.fetch(_TARGET_PAGE, before_id, limit, target)
    return [
        Action(row["id"], row["key_name"], row["action"], row["target"], row["reason"], _loads(row["before"]),
               _loads(row["after"]), row["idempotency_key"], row["created_at"])
        for row in rows
    ]  # fmt: skip
