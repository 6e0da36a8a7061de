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

_SEEN = "SELECT 1 FROM telegram_updates WHERE bot_id = $1 AND update_id = $2"


class UpdateAlreadyHandled(Exception):
    """Raised inside an update's transaction when its row exists: roll back, answer 200, do nothing."""


async def record_update(conn: Connection | asyncpg.Pool, bot_id: int, update_id: int, kind: str) -> bool:
    """Record update ``update_id`` of ``bot_id`` as handled; False if it was recorded before."""
    return await conn.fetchval(_RECORD, bot_id, update_id, kind) is not None


async def handled(conn: Connection | asyncpg.Pool, bot_id: int, update_id: int) -> bool:
    """Whether update ``update_id`` of ``bot_id`` was handled already (committed)."""
    return await conn.fetchval(_SEEN, bot_id, update_id) is not None
