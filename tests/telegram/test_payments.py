"""The payment batch (server/telegram/payments.py) against PostgreSQL: what one transaction does with
re-deliveries, repeated charges and foreign payloads landing in the same batch as their first delivery."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from server.ledger import BatchOptions, Ledger, audit
from server.telegram.orders import STARS, DepositLimits, open_order
from server.telegram.payments import Payment, PaymentIntake, PaymentOutcome, PaymentResult
from tests.ledger.conftest import next_user_id, sign_up

pytestmark = pytest.mark.integration

BOT_ID = 4_000_000 + secrets.randbelow(10**6)
_update_ids = itertools.count(secrets.randbelow(10**9) * 1000)
LIMITS = DepositLimits(min_stars=1, max_stars=10_000, daily_stars=1_000_000)


async def new_order(pool: asyncpg.Pool, ledger: Ledger, stars: int) -> tuple[int, int]:
    """A signed-in user and a pending order of ``stars`` of theirs (3 chips a Star): (user id, order id)."""
    user_id = next_user_id()
    await sign_up(ledger, user_id)
    async with pool.acquire() as conn, conn.transaction():
        order = await open_order(conn, user_id, stars, 3, LIMITS)
    assert not isinstance(order, str)
    return user_id, order.id


def payment(user_id: int, order_id: int | None, stars: int, charge: str, update_id: int | None = None,
            currency: str = STARS) -> Payment:  # fmt: skip
    return Payment(next(_update_ids) if update_id is None else update_id, charge, user_id, order_id, stars, currency)


@pytest.fixture
async def intake(ledger: Ledger) -> AsyncIterator[PaymentIntake]:
    # A long wait: every payment submitted at once lands in one batch.
    payments = PaymentIntake(ledger, bot_id=BOT_ID, batches=BatchOptions(max_batch=100, max_wait=0.05, concurrency=1))
    payments.start()
    yield payments
    await payments.close()


async def all_at_once(intake: PaymentIntake, payments: list[Payment]) -> list[PaymentResult]:
    return list(await asyncio.gather(*(intake.credit(p) for p in payments)))


async def test_one_batch_credits_each_charge_once_whatever_it_holds(intake: PaymentIntake, ledger: Ledger,
                                                                    pool: asyncpg.Pool) -> None:  # fmt: skip
    (a, order_a), (b, order_b), (c, order_c) = [await new_order(pool, ledger, stars) for stars in (10, 20, 30)]
    tag = secrets.token_hex(4)
    first = payment(a, order_a, 10, f"{tag}-a")
    again = payment(a, order_a, 10, f"{tag}-a", update_id=first.update_id)  # a re-delivery in the same batch
    same_charge = payment(a, order_a, 10, f"{tag}-a")  # the same charge in another update
    second_charge = payment(a, order_a, 10, f"{tag}-a2")  # the order paid twice: each payment credited
    other = payment(b, order_b, 20, f"{tag}-b")
    foreign = payment(c, None, 30, f"{tag}-x")
    not_stars = payment(c, order_c, 30, f"{tag}-usd", currency="USD")
    batches_before = intake._commits.batches
    results = await all_at_once(intake, [first, again, same_charge, second_charge, other, foreign, not_stars])
    assert intake._commits.batches == batches_before + 1
    assert [r.outcome for r in results] == [
        PaymentOutcome.CREDITED, PaymentOutcome.HANDLED_BEFORE, PaymentOutcome.CREDITED_BEFORE,
        PaymentOutcome.CREDITED, PaymentOutcome.CREDITED, PaymentOutcome.NOT_OURS, PaymentOutcome.NOT_OURS]  # fmt: skip
    assert [r.marked for r in results] == [True, False, False, False, True, False, False]
    assert (results[0].chips, results[0].balance) == (30, 30)
    assert (results[3].chips, results[3].balance) == (30, 60)
    assert (await ledger.balance(a)).balance == 60
    assert (await ledger.balance(b)).balance == 60
    assert (await ledger.balance(c)).balance == 0
    rows = await pool.fetch("SELECT id, status, telegram_payment_charge_id FROM star_orders WHERE id = ANY($1) "
                            "ORDER BY id", [order_a, order_b, order_c])  # fmt: skip
    assert [(r["status"], r["telegram_payment_charge_id"]) for r in rows] == [
        ("paid", f"{tag}-a"), ("paid", f"{tag}-b"), ("pending", None)]  # fmt: skip
    receipts = await pool.fetchval("SELECT count(*) FROM notifications WHERE dedupe_key LIKE $1", f"deposit:{tag}-%")
    assert receipts == 3  # one per charge credited
    # Every update of the batch is recorded: delivered again, each does nothing.
    replay = await all_at_once(intake, [first, same_charge, second_charge, other, foreign, not_stars])
    assert {r.outcome for r in replay} == {PaymentOutcome.HANDLED_BEFORE}
    assert (await ledger.balance(a)).balance == 60
    async with pool.acquire() as conn:
        report = await audit(conn)
    assert report.ok, report.summary()


async def test_a_payment_that_breaks_its_batch_fails_alone(intake: PaymentIntake, ledger: Ledger,
                                                           pool: asyncpg.Pool) -> None:  # fmt: skip
    """A charge id PostgreSQL cannot store fails its own payment; the others of the batch are credited."""
    (a, order_a), (b, order_b) = [await new_order(pool, ledger, 5) for _ in range(2)]
    tag = secrets.token_hex(4)
    good, bad = payment(a, order_a, 5, f"{tag}-good"), payment(b, order_b, 5, f"{tag}-bad\x00")
    results = await asyncio.gather(intake.credit(good), intake.credit(bad), return_exceptions=True)
    assert isinstance(results[0], PaymentResult) and results[0].outcome is PaymentOutcome.CREDITED
    assert isinstance(results[1], asyncpg.PostgresError | ValueError)
    assert (await ledger.balance(a)).balance == 15
    assert (await ledger.balance(b)).balance == 0
