"""Bot API updates already handled (the ``telegram_updates`` table), by bot and ``update_id``.

Telegram delivers an update again when it did not get a 2xx answer in time, and may deliver it while
the first delivery is still being handled. An update's work writes its row in the same transaction
(:func:`record_update`): the row commits with the work or not at all, and a concurrent second
delivery waits on the first's row, then finds it and does nothing.
"""

from __future__ import annotations

import asyncpg

from ..db.transactions import Connection

_RECORD = """
INSERT INTO telegram_updates (bot_id, update_id, kind) VALUES ($1, $2, $3)
ON CONFLICT (bot_id, update_id) DO NOTHING
RETURNING update_id
"""

_RECORD_MANY = """
INSERT INTO telegram_updates (bot_id, update_id, kind)
SELECT $1, u.update_id, $3 FROM unnest($2::bigint[]) AS u(update_id)
ON CONFLICT (bot_id, update_id) DO NOTHING
RETURNING update_id
"""

_SEEN = "SELECT 1 FROM telegram_updates WHERE bot_id = $1 AND update_id = $2"


class UpdateAlreadyHandled(Exception):
    """Raised inside an update's transaction when its row exists: roll back, answer 200, do nothing."""


async def record_update(conn: Connection | asyncpg.Pool, bot_id: int, update_id: int, kind: str) -> bool:
    """Record update ``update_id`` of ``bot_id`` as handled; False if it was recorded before."""
    return await conn.fetchval(_RECORD, bot_id, update_id, kind) is not None


async def record_updates(conn: Connection, bot_id: int, update_ids: list[int], kind: str) -> set[int]:
    """Record updates ``update_ids`` of ``bot_id`` as handled (in ascending order, the lock order of
    concurrent batches); the ids recorded now, without those recorded before."""
    rows = await conn.fetch(_RECORD_MANY, bot_id, sorted(set(update_ids)), kind)
    return {row["update_id"] for row in rows}


async def handled(conn: Connection | asyncpg.Pool, bot_id: int, update_id: int) -> bool:
    """Whether update ``update_id`` of ``bot_id`` was handled already (committed)."""
    return await conn.fetchval(_SEEN, bot_id, update_id) is not None
