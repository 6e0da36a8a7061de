"""A blocked account's sign-in is refused in the batch's one read; the others of its batch sign in."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from protocol import ErrorCode
from server.auth import TelegramUser
from server.ledger import Ledger
from server.ledger.signin import AccountBlocked
from tests.ledger.conftest import next_user_id


async def test_a_blocked_user_is_refused_and_its_batch_neighbours_are_not(
    ledger: Ledger, db: asyncpg.Connection
) -> None:
    blocked, returning, new = next_user_id(), next_user_id(), next_user_id()
    for user in (blocked, returning):
        await ledger.sign_in(TelegramUser(id=user, first_name="P"))
    await db.execute("INSERT INTO account_restrictions (user_id, kind, reason) VALUES ($1, 'blocked', 'x')", blocked)
    results = await asyncio.gather(*(ledger.sign_in(TelegramUser(id=user, first_name="Q")) for user in
                                     (blocked, returning, new)), return_exceptions=True)  # fmt: skip
    assert isinstance(results[0], AccountBlocked) and results[0].code is ErrorCode.FORBIDDEN
    assert not isinstance(results[1], BaseException) and not isinstance(results[2], BaseException)
    assert await db.fetchval("SELECT first_name FROM users WHERE id = $1", blocked) == "P"  # nothing written
    await db.execute("UPDATE account_restrictions SET kind = 'flagged' WHERE user_id = $1", blocked)
    await ledger.sign_in(TelegramUser(id=blocked, first_name="R"))  # other restrictions do not refuse a sign-in
    with pytest.raises(AccountBlocked):
        await db.execute("UPDATE account_restrictions SET kind = 'blocked' WHERE user_id = $1", blocked)
        await ledger.sign_in(TelegramUser(id=blocked, first_name="S"))
