"""PostgreSQL access: the embedded server, schema migrations and the non-money tables."""

from __future__ import annotations

import asyncpg

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)
"""Errors that mean "PostgreSQL is not answering": reported as ``unavailable``, never as a bug."""
