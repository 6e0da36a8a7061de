"""`croupier audit` finds every kind of drift, and passes on a clean ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from server.ledger import Ledger, audit
from tests.ledger.conftest import create_open_round, sign_up
from tests.services import migrated_pool


@pytest.fixture
async def scratch(empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own: these tests corrupt it on purpose."""
    async with migrated_pool(empty_database) as pool:
        yield pool


async def run_audit(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        report = await audit(conn)
    return [*report.problems] + ([] if report.total == 0 else ["total"])


async def test_audit_catches_each_kind_of_drift(scratch: asyncpg.Pool) -> None:
    from server.ledger import BetRequest

    ledger = Ledger(scratch)
    await ledger.start()
    await sign_up(ledger, 1, "a")
    await ledger.deposit(1, 100, ref="d1")
    round_id = await create_open_round(scratch, "dice")
    placed = await ledger.place_bet(BetRequest(1, "dice", round_id, 10))
    await ledger.settle([(placed.bet_id, 20)])
    await ledger.close()
    assert await run_audit(scratch) == []

    await scratch.execute("UPDATE accounts SET balance = balance + 1 WHERE user_id = 1")
    problems = await run_audit(scratch)
    assert "accounts whose balance differs from the sum of their legs" in problems and "total" in problems
    await scratch.execute("UPDATE accounts SET balance = balance - 1 WHERE user_id = 1")

    txn = await scratch.fetchval("SELECT stake_txn FROM bets WHERE id = $1", placed.bet_id)
    await scratch.execute("UPDATE ledger_legs SET amount = amount - 1 WHERE txn_id = $1 AND amount > 0", txn)
    problems = await run_audit(scratch)
    assert "transactions whose legs do not sum to zero or have fewer than two legs" in problems
    await scratch.execute("UPDATE ledger_legs SET amount = amount + 1 WHERE txn_id = $1 AND amount > 0", txn)

    await scratch.execute("UPDATE bets SET amount = 11 WHERE id = $1", placed.bet_id)
    assert "bets whose stake transaction does not take the bet amount from the bettor's wallet" in await run_audit(
        scratch
    )
    await scratch.execute("UPDATE bets SET amount = 10, payout = 21 WHERE id = $1", placed.bet_id)
    assert "closed bets whose payout does not match their settlement transaction" in await run_audit(scratch)
    await scratch.execute("UPDATE bets SET payout = 20 WHERE id = $1", placed.bet_id)
    assert await run_audit(scratch) == []


async def test_audit_catches_legs_of_missing_transactions_and_accounts(scratch: asyncpg.Pool) -> None:
    """The legs table keeps no foreign keys (migration 0021): the audit is what proves its references."""
    ledger = Ledger(scratch)
    await ledger.start()
    await sign_up(ledger, 1, "a")
    await ledger.deposit(1, 100, ref="d1")
    await ledger.close()
    wallet, house = (
        await scratch.fetchval("SELECT id FROM accounts WHERE user_id = 1"),
        await scratch.fetchval("SELECT id FROM accounts WHERE kind = 'house' AND shard = 0"),
    )
    missing = await scratch.fetchval("SELECT max(id) + 1000 FROM ledger_txns")
    # A balanced pair of legs, the accounts moved by them: only the missing transaction is wrong.
    await scratch.execute(
        "INSERT INTO ledger_legs (txn_id, account_id, amount) VALUES ($1, $2, 5), ($1, $3, -5)", missing, wallet, house
    )
    await scratch.execute("UPDATE accounts SET balance = balance + 5 WHERE id = $1", wallet)
    await scratch.execute("UPDATE accounts SET balance = balance - 5 WHERE id = $1", house)
    assert await run_audit(scratch) == ["legs of a transaction or an account that does not exist"]
    await scratch.execute("DELETE FROM ledger_legs WHERE txn_id = $1", missing)
    await scratch.execute("UPDATE accounts SET balance = balance - 5 WHERE id = $1", wallet)
    await scratch.execute("UPDATE accounts SET balance = balance + 5 WHERE id = $1", house)
    assert await run_audit(scratch) == []

    # A leg moved onto an account that does not exist: the account it left no longer adds up either.
    deposit = await scratch.fetchval("SELECT id FROM ledger_txns WHERE kind = 'deposit'")
    await scratch.execute(
        "UPDATE ledger_legs SET account_id = (SELECT max(id) + 1000 FROM accounts) WHERE txn_id = $1 AND amount < 0",
        deposit,
    )
    assert await run_audit(scratch) == [
        "legs of a transaction or an account that does not exist",
        "accounts whose balance differs from the sum of their legs",
    ]


async def test_audit_catches_a_bet_left_open_in_a_finished_round(scratch: asyncpg.Pool) -> None:
    from server.ledger import BetRequest

    ledger = Ledger(scratch)
    await ledger.start()
    await sign_up(ledger, 2, "b")
    await ledger.deposit(2, 100, ref="d2")
    round_id = await create_open_round(scratch, "dice")
    await ledger.place_bet(BetRequest(2, "dice", round_id, 10))
    await ledger.close()
    assert await run_audit(scratch) == []  # open in a round that still takes bets: fine
    for phase in ("settled", "voided"):
        # The money balances (the stake sits in the house account), but the bet was never settled.
        await scratch.execute("UPDATE rounds SET phase = $2 WHERE id = $1", round_id, phase)
        assert await run_audit(scratch) == [
            "bets still open in a round that is settled or voided (a stake taken and never settled)"
        ]
