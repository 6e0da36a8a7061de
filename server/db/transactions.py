"""Running work in PostgreSQL transactions: retries for serialization failures and deadlocks,
and one clear error when the database is not there.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

from . import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

Connection: TypeAlias = "PoolConnectionProxy[Any] | asyncpg.Connection[Any]"
"""A connection from the pool or a direct one: functions that run in the caller's transaction take either."""
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
MAX_ATTEMPTS = 6


class DatabaseUnavailable(Exception):
    """PostgreSQL did not answer (down, starting, shutting down, unreachable): the transaction did not commit.

    Packages that answer players subclass it with their own protocol code (the ledger's
    ``LedgerUnavailable``) and pass the subclass to :func:`in_transaction`."""


async def in_transaction(
    pool: asyncpg.Pool,
    work: Callable[[Connection], Awaitable[T]],
    *,
    retry_sqlstates: frozenset[str] = RETRYABLE_SQLSTATES,
    unavailable: type[DatabaseUnavailable] = DatabaseUnavailable,
) -> T:
    """Run ``work`` in one transaction; retry it on serialization failures and deadlocks (up to
    :data:`MAX_ATTEMPTS` attempts, with jitter), and on any other SQLSTATE in ``retry_sqlstates``.

    ``work`` may run more than once, so it must only touch the database (and local state it
    resets). Raises ``unavailable`` (a :class:`DatabaseUnavailable`) if PostgreSQL does not
    answer; in that case the transaction did not commit. Any other error of ``work`` is raised
    as it is, after the rollback.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await work(conn)
        except UNAVAILABLE_ERRORS as exc:  # first: some are PostgresErrors too (the server shutting down)
            raise unavailable(f"database unavailable: {type(exc).__name__}") from exc
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) not in retry_sqlstates or attempt == MAX_ATTEMPTS:
                raise
            log.info("transaction retried after %s (attempt %d)", type(exc).__name__, attempt)
            await asyncio.sleep(random.uniform(0, 0.002 * attempt))  # noqa: S311 - jitter, not crypto
    raise AssertionError("unreachable")
