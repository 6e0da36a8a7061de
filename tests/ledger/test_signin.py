"""Sign-ins, group-committed: users recorded, wallets opened with their welcome credit once,
returning users only read, and a connect storm of new users in a few commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from server.auth import TelegramUser
from server.ledger import Ledger, LedgerError, audit
from server.ledger.events import UserEvent
from tests.ledger.conftest import next_user_id


@pytest.fixture
async def generous(pool: asyncpg.Pool) -> AsyncIterator[tuple[Ledger, list[UserEvent]]]:
    """A ledger with a welcome credit of 100, and the events it announced."""
    announced: list[UserEvent] = []
    ledger = Ledger(pool, welcome_credit=100, announce=announced.extend)
    await ledger.start()
    yield ledger, announced
    await ledger.close()


async def row_version(pool: asyncpg.Pool, user_id: int) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT xmin::text AS version, last_seen_at, first_name, is_premium FROM users "
                              "WHERE id = $1", user_id)  # fmt: skip
    assert row is not None
    return row


async def test_a_storm_of_new_users_commits_in_a_few_batches_crediting_each_once(
    pool: asyncpg.Pool, generous: tuple[Ledger, list[UserEvent]]
) -> None:
    ledger, announced = generous
    users = [TelegramUser(id=next_user_id(), first_name=f"n{i}") for i in range(300)]
    batches_before = ledger.sign_ins.batches
    states = await asyncio.gather(*(ledger.sign_in(user) for user in users))
    assert all((s.balance, s.version, s.credited) == (100, 1, 100) for s in states)
    assert ledger.sign_ins.batches - batches_before < 30  # 300 sign-ins, far fewer commits
    ids = [u.id for u in users]
    assert await pool.fetchval("SELECT count(*) FROM users WHERE id = ANY($1)", ids) == 300
    assert await pool.fetchval(
        "SELECT count(*) FROM user_events WHERE user_id = ANY($1) AND \"offset\" = 1", ids) == 300  # fmt: skip
    assert sorted(e.user_id for e in announced) == sorted(ids)  # announced after the commit, once each
    event = orjson.loads(next(e for e in announced if e.user_id == ids[0]).payload)
    assert (event["t"], event["balance"], event["delta"], event["reason"], event["offset"]) == (
        "balance", 100, 100, "deposit", 1)  # fmt: skip
    # Signing in again (every user returning at once) credits nobody twice and writes nothing.
    again = await asyncio.gather(*(ledger.sign_in(user) for user in users))
    assert all((s.balance, s.version, s.credited) == (100, 1, 0) for s in again)
    assert len(announced) == 300
    async with pool.acquire() as conn:
        assert (await audit(conn)).ok


async def test_one_user_on_two_sockets_at_once_gets_one_wallet_and_one_credit(
    pool: asyncpg.Pool, generous: tuple[Ledger, list[UserEvent]]
) -> None:
    ledger, announced = generous
    user_id = next_user_id()
    old, new = TelegramUser(id=user_id, first_name="Old"), TelegramUser(id=user_id, first_name="New")
    first, second = await asyncio.gather(ledger.sign_in(old), ledger.sign_in(new))
    assert first == second and first.balance == 100
    assert [e.user_id for e in announced] == [user_id]
    assert (await row_version(pool, user_id))["first_name"] == "New"  # the later profile wins


async def test_a_returning_user_with_the_same_profile_is_only_read(
    pool: asyncpg.Pool, generous: tuple[Ledger, list[UserEvent]]
) -> None:
    ledger, _ = generous
    user = TelegramUser(id=next_user_id(), first_name="Ann", username="ann")
    await ledger.sign_in(user)
    first = await row_version(pool, user.id)
    await ledger.sign_in(user)  # same profile, seen just now: no write
    assert await row_version(pool, user.id) == first

    renamed = TelegramUser(id=user.id, first_name="Anna", username="ann", is_premium=True)
    await ledger.sign_in(renamed)  # a changed profile is written
    row = await row_version(pool, user.id)
    assert (row["first_name"], row["is_premium"]) == ("Anna", True) and row["version"] != first["version"]

    await pool.execute("UPDATE users SET last_seen_at = now() - interval '1 hour' WHERE id = $1", user.id)
    state = await ledger.sign_in(renamed)  # seen long ago: last_seen_at moves on
    assert await pool.fetchval("SELECT last_seen_at > now() - interval '1 minute' FROM users WHERE id = $1", user.id)
    assert (state.balance, state.credited) == (100, 0)


async def test_a_wallet_opened_elsewhere_is_not_credited_again(
    pool: asyncpg.Pool, generous: tuple[Ledger, list[UserEvent]]
) -> None:
    """A user whose wallet another node opened (between this batch's read and its write) is read, not credited."""
    ledger, _ = generous
    user = TelegramUser(id=next_user_id(), first_name="Raced")
    other_node = Ledger(pool, welcome_credit=100)
    await other_node.start()
    try:
        await asyncio.gather(other_node.sign_in(user), ledger.sign_in(user))
    finally:
        await other_node.close()
    assert await pool.fetchval("SELECT balance FROM accounts WHERE user_id = $1", user.id) == 100
    assert await pool.fetchval("SELECT count(*) FROM ledger_legs l JOIN accounts a ON a.id = l.account_id "
                               "WHERE a.user_id = $1", user.id) == 1  # fmt: skip
    async with pool.acquire() as conn:
        assert (await audit(conn)).ok


async def test_sign_in_with_the_database_gone_is_a_ledger_error(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    ledger = Ledger(pool, welcome_credit=100)
    await ledger.start()
    try:
        await pool.close()  # as if PostgreSQL went away
        with pytest.raises((LedgerError, asyncpg.InterfaceError)):
            await ledger.sign_in(TelegramUser(id=next_user_id(), first_name="x"))
    finally:
        await ledger.close()


async def test_a_profile_postgresql_cannot_store_fails_only_its_own_sign_in(
    pool: asyncpg.Pool, generous: tuple[Ledger, list[UserEvent]]
) -> None:
    # initData sanitising strips NUL from names; this is the batch's own defence if one slips through.
    ledger, _ = generous
    users = [TelegramUser(id=next_user_id(), first_name=f"n{i}") for i in range(10)]
    users[3] = TelegramUser(id=users[3].id, first_name="bad\x00name")
    outcomes = await asyncio.gather(*(ledger.sign_in(u) for u in users), return_exceptions=True)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)] == [3]
    assert all(o.balance == 100 for i, o in enumerate(outcomes) if i != 3 and not isinstance(o, BaseException))
