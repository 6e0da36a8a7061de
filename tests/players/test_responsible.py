"""Responsible gaming against PostgreSQL: limits checked in the bet's own transaction (two ledgers racing
never overshoot), payouts giving loss room back, a limit set mid-day starting from the day's bets, and
exclusions that cannot be shortened."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from protocol import ErrorCode
from server.ledger import BetRequest, Ledger, LedgerError, audit
from server.players import Calendar, InvalidLimit, ResponsibleGaming
from tests.ledger.conftest import NewUser, create_open_round, next_user_id, sign_up

pytestmark = pytest.mark.integration

TOMORROW = dt.datetime.combine(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1), dt.time(), dt.UTC)


@pytest.fixture
def limits(pool: asyncpg.Pool) -> ResponsibleGaming:
    return ResponsibleGaming(pool, Calendar())


@pytest.fixture
async def open_round(pool: asyncpg.Pool) -> int:
    """A dice round taking bets (no engine runs here)."""
    return await create_open_round(pool, "dice")


@pytest.fixture
def new_user(ledger: Ledger) -> NewUser:
    """A new user whose wallet holds ``balance``."""

    async def create(balance: int = 0) -> int:
        user_id = next_user_id()
        await sign_up(ledger, user_id)
        await ledger.deposit(user_id, balance, ref=f"limits-{user_id}")
        return user_id

    return create


def bet(user_id: int, round_id: int, amount: int, key: str) -> BetRequest:
    return BetRequest(user_id, "dice", round_id, amount, {"target": 5000, "side": "over"}, key)


async def test_a_loss_limit_refuses_the_bet_that_would_pass_it_and_payouts_give_room_back(
    ledger: Ledger, pool: asyncpg.Pool, limits: ResponsibleGaming, new_user: NewUser, open_round: int
) -> None:
    user = await new_user(1_000)
    reply = await limits.set_limit(user, "loss", "day", 100)
    assert [(v.kind, v.period, v.amount, v.used) for v in reply.limits] == [("loss", "day", 100, 0)]
    first = await ledger.place_bet(bet(user, open_round, 60, "a"))
    with pytest.raises(LedgerError) as refused:
        await ledger.place_bet(bet(user, open_round, 41, "b"))
    assert refused.value.code is ErrorCode.LIMIT_REACHED and refused.value.resets_at == TOMORROW
    assert "40 left" in str(refused.value)
    await ledger.place_bet(bet(user, open_round, 40, "c"))  # exactly to the limit
    assert (await limits.state(user)).limits[0].used == 100
    # The first bet wins 120: the day's loss is 100 - 120 < 0, so 100 more may be staked (not 120: the
    # limit bounds what can be lost from here, and the win already paid is the player's).
    await ledger.settle([(first.bet_id, 120)])
    assert (await limits.state(user)).limits[0].used == -20
    await ledger.place_bet(bet(user, open_round, 120, "d"))
    with pytest.raises(LedgerError):
        await ledger.place_bet(bet(user, open_round, 1, "e"))
    # A refused bet was never charged; the books balance.
    assert (await ledger.balance(user)).balance == 1_000 - 60 - 40 + 120 - 120
    async with pool.acquire() as conn:
        report = await audit(conn)
    assert report.ok, report


async def test_two_ledgers_racing_a_loss_limit_never_overshoot_it(
    database_url: str, limits: ResponsibleGaming, new_user: NewUser, open_round: int
) -> None:
    """Two nodes' ledgers (each its own pool and batches) take 40 concurrent bets of 10 from one player with
    a day's loss limit of 150: exactly 15 commit, whichever node they went through."""
    user = await new_user(10_000)
    await limits.set_limit(user, "loss", "day", 150)
    pools = [await asyncpg.create_pool(database_url, min_size=2, max_size=4) for _ in range(2)]
    ledgers = [Ledger(pool) for pool in pools]
    try:
        for ledger in ledgers:
            await ledger.start()

        async def place(n: int) -> bool:
            try:
                await ledgers[n % 2].place_bet(bet(user, open_round, 10, f"race-{n}"))
            except LedgerError as exc:
                assert exc.code is ErrorCode.LIMIT_REACHED, exc
                return False
            return True

        placed = await asyncio.gather(*(place(n) for n in range(40)))
        assert sum(placed) == 15
        assert (await ledgers[0].balance(user)).balance == 10_000 - 150
        assert (await limits.state(user)).limits[0].used == 150
    finally:
        for ledger in ledgers:
            await ledger.close()
        for pool in pools:
            await pool.close()


async def test_a_limit_set_mid_day_counts_the_bets_placed_before_it(
    ledger: Ledger, limits: ResponsibleGaming, new_user: NewUser, open_round: int
) -> None:
    user = await new_user(1_000)
    await ledger.place_bet(bet(user, open_round, 70, "before"))
    reply = await limits.set_limit(user, "wager", "week", 100)
    assert reply.limits[0].used == 70
    with pytest.raises(LedgerError):
        await ledger.place_bet(bet(user, open_round, 31, "over"))
    await ledger.place_bet(bet(user, open_round, 30, "to-the-limit"))


async def test_raising_a_limit_waits_lowering_does_not(
    ledger: Ledger, pool: asyncpg.Pool, new_user: NewUser, open_round: int
) -> None:
    now = dt.datetime.now(dt.UTC)
    clock = [now]
    limits = ResponsibleGaming(pool, Calendar(), clock=lambda: clock[0])
    user = await new_user(1_000)
    await limits.set_limit(user, "wager", "month", 50)
    raised = await limits.set_limit(user, "wager", "month", 500)
    (view,) = raised.limits
    assert (view.amount, view.pending_amount) == (50, 500)
    assert view.pending_from == int((now + dt.timedelta(hours=24)).timestamp() * 1000)
    with pytest.raises(LedgerError):  # the bet batch applies the amount in force: still 50
        await ledger.place_bet(bet(user, open_round, 60, "too-soon"))
    lowered = await limits.set_limit(user, "wager", "month", 20)
    assert [(v.amount, v.pending_amount) for v in lowered.limits] == [(20, None)]
    removed = await limits.set_limit(user, "wager", "month", None)
    assert [(v.amount, v.pending_from is not None) for v in removed.limits] == [(20, True)]
    clock[0] = now + dt.timedelta(hours=24, seconds=1)
    assert (await limits.state(user)).limits == []  # the removal is due: no limit shown


async def test_a_cool_off_refuses_bets_and_cannot_be_shortened(
    ledger: Ledger, limits: ResponsibleGaming, new_user: NewUser, open_round: int
) -> None:
    user = await new_user(1_000)
    reply = await limits.exclude(user, "cool_off", 2)
    assert reply.exclusion is not None and reply.exclusion.kind == "cool_off"
    with pytest.raises(LedgerError) as refused:
        await ledger.place_bet(bet(user, open_round, 10, "cooling"))
    assert refused.value.code is ErrorCode.EXCLUDED
    assert refused.value.resets_at is not None
    assert int(refused.value.resets_at.timestamp() * 1000) == reply.exclusion.until
    with pytest.raises(InvalidLimit):
        await limits.exclude(user, "cool_off", 1)
    longer = await limits.exclude(user, "self_exclusion", None)
    assert longer.exclusion is not None and longer.exclusion.until is None
    with pytest.raises(InvalidLimit):
        await limits.exclude(user, "self_exclusion", 3_650)  # nothing outlasts a permanent one
    assert (await ledger.balance(user)).balance == 1_000
