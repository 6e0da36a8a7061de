"""The ``users`` table: Telegram users as last seen at authentication (written at sign-in by
:mod:`server.ledger.signin`, many at a time)."""

from __future__ import annotations

UPSERT_USERS = """
INSERT INTO users (id, first_name, last_name, username, language_code, is_premium, allows_write_to_pm)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::boolean[])
ON CONFLICT (id) DO UPDATE SET
    first_name = EXCLUDED.first_name,
    last_name = EXCLUDED.last_name,
    username = EXCLUDED.username,
    language_code = EXCLUDED.language_code,
    is_premium = EXCLUDED.is_premium,
    allows_write_to_pm = EXCLUDED.allows_write_to_pm,
    last_seen_at = now()
"""
"""Record users as seen now, creating them on first sight: one array per column (id, first_name,
last_name, username, language_code, is_premium, allows_write_to_pm), sorted by id when several (row
locks in id order)."""


SEEN_PRECISION = 600.0
"""Seconds ``last_seen_at`` may lag: a returning user with an unchanged profile is not written again
sooner (authentication is then a read, with no commit to wait for; see :mod:`server.ledger.signin`)."""
