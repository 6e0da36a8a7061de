"""The ``users`` table: Telegram users as last seen at authentication."""

from __future__ import annotations

import asyncpg

from ..auth import TelegramUser

_UPSERT = """
INSERT INTO users (id, first_name, last_name, username, language_code, is_premium)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE SET
    first_name = EXCLUDED.first_name,
    last_name = EXCLUDED.last_name,
    username = EXCLUDED.username,
    language_code = EXCLUDED.language_code,
    is_premium = EXCLUDED.is_premium,
    last_seen_at = now()
"""


class UserStore:
    """Reads and writes users; one parameterized statement per call."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def upsert(self, user: TelegramUser) -> None:
        """Record ``user`` as seen now, creating it on first sight."""
        await self._pool.execute(
            _UPSERT, user.id, user.first_name, user.last_name, user.username, user.language_code, user.is_premium
        )
