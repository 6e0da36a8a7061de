"""Users as last seen: created on first sight, updated when the profile changes, not rewritten otherwise."""

from __future__ import annotations

import asyncpg

from server.auth import TelegramUser
from server.db.users import UserStore
from tests.ledger.conftest import next_user_id


async def test_a_returning_user_with_the_same_profile_is_only_read(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        store = UserStore(pool)
        user = TelegramUser(id=next_user_id(), first_name="Ann", username="ann")
        await store.record(user)
        first = await pool.fetchrow("SELECT xmin::text AS version, last_seen_at FROM users WHERE id = $1", user.id)
        assert first is not None
        await store.record(user)  # same profile, seen just now: no write
        again = await pool.fetchrow("SELECT xmin::text AS version, last_seen_at FROM users WHERE id = $1", user.id)
        assert again == first

        renamed = TelegramUser(id=user.id, first_name="Anna", username="ann", is_premium=True)
        await store.record(renamed)  # a changed profile is written
        row = await pool.fetchrow("SELECT first_name, is_premium, xmin::text AS version FROM users WHERE id = $1",
                                  user.id)  # fmt: skip
        assert row is not None and (row["first_name"], row["is_premium"]) == ("Anna", True)
        assert row["version"] != first["version"]

        await pool.execute("UPDATE users SET last_seen_at = now() - interval '1 hour' WHERE id = $1", user.id)
        await store.record(renamed)  # seen long ago: last_seen_at moves on
        assert await pool.fetchval("SELECT last_seen_at > now() - interval '1 minute' FROM users WHERE id = $1",
                                   user.id)  # fmt: skip
    finally:
        await pool.close()
