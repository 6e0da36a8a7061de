"""PostgreSQL access: the embedded server, schema migrations, transactions with retries
(:mod:`server.db.transactions`), group commit, the round betting lock and the ``users`` table."""

from __future__ import annotations

import asyncpg

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.exceptions.AdminShutdownError,  # 57P01: the server is stopping, our session was ended
    asyncpg.exceptions.CrashShutdownError,  # 57P02
)
"""Errors that mean "PostgreSQL is not answering": reported as ``unavailable``, never as a bug."""
