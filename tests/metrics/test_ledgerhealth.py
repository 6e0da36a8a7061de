"""The incremental ledger audit: its window (no I/O), its verdicts (no I/O), and passes on a real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from server.ledger import Ledger
from server.metrics.ledgerhealth import (
    LOCK_CLASS,
    AuditWindow,
    IncrementalAudit,
    LedgerAuditor,
    LegSums,
    TouchedAccount,
    judge,
)
from tests.ledger.conftest import sign_up
from tests.services import migrated_pool


def test_the_first_settled_mark_only_sets_where_checking_starts() -> None:
    window = AuditWindow()
    window.mark(100, at=10.0)
    assert window.next(oldest_open=None) is None
    assert window.checked == 100
    window.mark(100, at=11.0)
    assert window.next(oldest_open=None) is None  # nothing new


def test_a_mark_settles_once_every_transaction_open_at_its_time_has_ended() -> None:
    window = AuditWindow()
    window.mark(10, at=1.0)
    window.next(oldest_open=None)
    window.mark(20, at=2.0)
    # A transaction that started at 1.5 is still open: ids up to 20 may still be committing.
    assert window.next(oldest_open=1.5) is None
    window.mark(30, at=3.0)
    assert window.next(oldest_open=1.5) is None
    # It ended; the oldest open one started at 2.5: the mark of 2.0 settled, the one of 3.0 not yet.
    assert window.next(oldest_open=2.5) == (10, 20)
    window.advance(20)
    assert window.next(oldest_open=None) == (20, 30)
    window.advance(30)
    assert window.next(oldest_open=None) is None


def test_a_window_is_checked_once() -> None:
    window = AuditWindow()
    window.mark(5, at=1.0)
    window.next(oldest_open=None)
    window.mark(9, at=2.0)
    span = window.next(oldest_open=None)
    assert span == (5, 9)
    window.advance(9)
    window.mark(9, at=3.0)
    assert window.next(oldest_open=None) is None


def test_leg_sums_forget_the_least_recently_moved_accounts() -> None:
    sums = LegSums(limit=2)
    sums.set(1, 10)
    sums.set(2, 20)
    sums.set(1, 11)  # moved again: now the most recent
    sums.set(3, 30)
    assert (sums.get(1), sums.get(2), sums.get(3)) == (11, None, 30)
    assert len(sums) == 2


def test_judge_names_each_violation() -> None:
    fine = TouchedAccount(1, wallet=True, balance=50, window=-10, later=0, before=60)
    behind = TouchedAccount(2, wallet=False, balance=7, window=5, later=1, before=0)
    negative = TouchedAccount(3, wallet=True, balance=-1, window=-1, later=0, before=0)
    assert judge([], [fine], 0, checked=4).ok
    findings = judge([12, 11], [fine, behind, negative], 5, checked=4, orphaned=[14, 13, 14])
    assert not findings.ok
    assert findings.problems == {
        "unbalanced_transactions": [11, 12],
        "orphan_legs": [13, 14],
        "balance_mismatch": [2],
        "negative_wallets": [3],
        "not_conserved": [5],
    }


@pytest.fixture
async def scratch(empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own: the test corrupts it on purpose."""
    async with migrated_pool(empty_database) as pool:
        yield pool


async def passes_until_checked(audit: IncrementalAudit, pool: asyncpg.Pool) -> list[str]:
    """Run passes until one checks a window (the test's transactions are over: the next mark settles)."""
    async with pool.acquire() as conn:
        for _ in range(5):
            findings = await audit.run(conn)
            if findings is not None:
                return sorted(findings.problems)
    raise AssertionError("no window settled")


async def test_passes_check_what_changed_and_find_a_planted_leg_and_a_drifted_balance(scratch: asyncpg.Pool) -> None:
    ledger = Ledger(scratch)
    await ledger.start()
    audit = IncrementalAudit()
    try:
        await sign_up(ledger, 1, "a")
        async with scratch.acquire() as conn:
            assert await audit.run(conn) is None  # the first pass only sets where checking starts
        await ledger.deposit(1, 100, ref="d1")
        await ledger.adjust(1, -30, reason="test")
        assert await passes_until_checked(audit, scratch) == []
        # A transaction with a single leg, its wallet moved to match: money from nowhere.
        wallet = await scratch.fetchval("SELECT id FROM accounts WHERE user_id = 1")
        async with scratch.acquire() as conn, conn.transaction():
            txn = await conn.fetchval("INSERT INTO ledger_txns (kind, reason) VALUES ('adjust', 'x') RETURNING id")
            await conn.execute("INSERT INTO ledger_legs VALUES ($1, $2, 5)", txn, wallet)
            await conn.execute("UPDATE accounts SET balance = balance + 5 WHERE id = $1", wallet)
        assert await passes_until_checked(audit, scratch) == ["not_conserved", "unbalanced_transactions"]
        # A balance changed without a leg (the total is zero again): found when the account next moves.
        await scratch.execute("UPDATE accounts SET balance = balance - 5 WHERE id = $1", wallet)
        await ledger.deposit(1, 10, ref="d2")
        assert await passes_until_checked(audit, scratch) == ["balance_mismatch"]
        # Balanced legs, accounts moved to match, of a transaction id drawn but never written: no key stops
        # them (migration 0021), the pass does. (Two house shards: the wallet above still holds its drift.)
        houses = await scratch.fetch("SELECT id FROM accounts WHERE kind = 'house' AND shard < 2 ORDER BY shard")
        one, two = (row["id"] for row in houses)
        async with scratch.acquire() as conn, conn.transaction():
            txn = await conn.fetchval("SELECT nextval('ledger_txns_id_seq')")
            await conn.execute("INSERT INTO ledger_legs VALUES ($1, $2, 5), ($1, $3, -5)", txn, one, two)
            await conn.execute("UPDATE accounts SET balance = balance + 5 WHERE id = $1", one)
            await conn.execute("UPDATE accounts SET balance = balance - 5 WHERE id = $1", two)
        assert await passes_until_checked(audit, scratch) == ["orphan_legs"]
        assert audit.window.checked == await scratch.fetchval("SELECT last_value FROM ledger_txns_id_seq")
    finally:
        await ledger.close()


_AUDIT_LOCK_HOLDERS = """
SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
  AND l.objsubid = 2 AND l.classid = $1 AND l.objid = 1
"""


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


async def test_one_auditor_of_two_holds_the_lock_on_a_session_of_its_own_and_the_other_takes_over(
    scratch: asyncpg.Pool, empty_database: str
) -> None:
    first = LedgerAuditor(empty_database, interval=0.05, name="node-1")
    second = LedgerAuditor(empty_database, interval=0.05, name="node-2")
    first.start()
    try:
        await until(lambda: first.passes >= 2)
        second.start()
        await asyncio.sleep(0.5)  # ten tries of the standby
        assert first.holding and not second.holding and second.passes == 0
        holders = [row[0] for row in await scratch.fetch(_AUDIT_LOCK_HOLDERS, LOCK_CLASS)]
        assert holders == ["croupier audit node-1"]
        await first.close()
        await until(lambda: second.passes >= 1)
        assert second.holding
        assert [row[0] for row in await scratch.fetch(_AUDIT_LOCK_HOLDERS, LOCK_CLASS)] == ["croupier audit node-2"]
    finally:
        await first.close()
        await second.close()
    # the standby's tries leave no session behind, nor does a closed auditor (a backend ends a moment after)
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'croupier audit %'"
    deadline = time.monotonic() + 5
    while await scratch.fetchval(sessions) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await scratch.fetchval(sessions) == 0
    assert not await scratch.fetch(_AUDIT_LOCK_HOLDERS, LOCK_CLASS)
