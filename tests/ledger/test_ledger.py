"""The ledger on real PostgreSQL: money is never lost, duplicated or overdrawn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from server.db.migrations import migrate
from server.db.transactions import DatabaseUnavailable, in_transaction
from server.ledger import (
    BatchOptions,
    BetRequest,
    BettingClosed,
    CreditedDeposit,
    DepositCredit,
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    LedgerUnavailable,
    PlacedBet,
    UnknownAccount,
    WalletState,
    audit,
)
from server.ledger import bets as bets_module
from server.ledger.postings import Legs, Posting, Transfers, transfer, transfers_sql
from tests.ledger.conftest import NewUser, next_user_id, sign_up

OPEN_ROUND = {"id": 0}


@pytest.fixture(autouse=True)
def _bets_land_in_an_open_round(open_round: int) -> None:
    OPEN_ROUND["id"] = open_round


def bet(user_id: int, amount: int = 10, key: str | None = None, **params: object) -> BetRequest:
    return BetRequest(user_id, "dice", OPEN_ROUND["id"], amount, dict(params), key)


@contextlib.asynccontextmanager
async def three_nodes(ledger: Ledger, database_url: str) -> AsyncIterator[list[Ledger]]:
    """``ledger`` and two more ledgers on pools of their own, as three nodes would have."""
    pools = [await asyncpg.create_pool(database_url, min_size=1, max_size=5) for _ in range(2)]
    nodes = [ledger]
    try:
        for extra in pools:
            node = Ledger(extra, batches=BatchOptions(max_wait=0.001))
            await node.start()
            nodes.append(node)
        yield nodes
    finally:
        for node in nodes[1:]:
            await node.close()
        for extra in pools:
            await extra.close()


async def assert_audit_ok(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        report = await audit(conn)
    assert report.ok, report.summary()


async def test_bet_takes_the_stake_and_records_balanced_legs(
    ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool
) -> None:
    user = await new_user(100)
    placed = await ledger.place_bet(bet(user, 30, target=5000))
    assert (placed.amount, placed.balance, placed.status, placed.replayed) == (30, 70, "accepted", False)
    assert (await ledger.balance(user)).balance == 70
    row = await pool.fetchrow("SELECT amount, params, status, stake_txn FROM bets WHERE id = $1", placed.bet_id)
    assert row["amount"] == 30 and row["status"] == "accepted" and '"target": 5000' in row["params"]
    legs = await pool.fetch("SELECT amount FROM ledger_legs WHERE txn_id = $1 ORDER BY amount", row["stake_txn"])
    assert [leg["amount"] for leg in legs] == [-30, 30]
    await assert_audit_ok(pool)


async def test_insufficient_funds_charges_nothing_and_spares_neighbours(ledger: Ledger, new_user: NewUser) -> None:
    rich, poor = await new_user(1000), await new_user(5)
    outcomes = await asyncio.gather(
        *(ledger.place_bet(bet(u, 10)) for u in [rich, poor, rich, poor, rich]), return_exceptions=True
    )
    assert [type(o).__name__ for o in outcomes] == [
        "PlacedBet", "InsufficientFunds", "PlacedBet", "InsufficientFunds", "PlacedBet"
    ]  # fmt: skip
    assert ledger.batcher.batches >= 1
    assert (await ledger.balance(rich)).balance == 970
    assert (await ledger.balance(poor)).balance == 5


async def test_balances_within_a_batch_are_sequential(ledger: Ledger, new_user: NewUser) -> None:
    user = await new_user(25)
    outcomes = await asyncio.gather(*(ledger.place_bet(bet(user, 10)) for _ in range(3)), return_exceptions=True)
    placed = [o for o in outcomes if isinstance(o, PlacedBet)]
    assert sorted(p.balance for p in placed) == [5, 15]
    assert len({p.version for p in placed}) == 2
    assert sum(isinstance(o, InsufficientFunds) for o in outcomes) == 1


async def test_same_key_returns_the_first_bet_and_charges_once(ledger: Ledger, new_user: NewUser) -> None:
    user = await new_user(100)
    first = await ledger.place_bet(bet(user, 10, key="k-1", side="over"))
    again = await ledger.place_bet(bet(user, 10, key="k-1", side="over"))
    assert again.replayed and again.bet_id == first.bet_id and again.balance == first.balance == 90
    assert (await ledger.balance(user)).balance == 90
    with pytest.raises(IdempotencyConflict):
        await ledger.place_bet(bet(user, 11, key="k-1", side="over"))
    with pytest.raises(IdempotencyConflict):
        await ledger.place_bet(bet(user, 10, key="k-1", side="under"))
    other = await new_user(100)  # keys are per user
    assert not (await ledger.place_bet(bet(other, 10, key="k-1", side="over"))).replayed


async def test_racing_retries_in_one_batch_and_across_nodes_charge_once(
    ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool, database_url: str
) -> None:
    user = await new_user(1000)
    other_pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    other_node = Ledger(other_pool)
    await other_node.start()
    try:
        tries = [node.place_bet(bet(user, 7, key="race")) for node in [ledger, other_node] * 10]
        outcomes = await asyncio.gather(*tries)
    finally:
        await other_node.close()
        await other_pool.close()
    assert len({o.bet_id for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    assert (await ledger.balance(user)).balance == 993
    await assert_audit_ok(pool)


async def test_hundreds_of_concurrent_bets_from_three_nodes_never_overdraw(
    ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool, database_url: str
) -> None:
    users = [await new_user(1000) for _ in range(3)]
    async with three_nodes(ledger, database_url) as nodes:
        requests = [
            nodes[i % 3].place_bet(bet(users[i % 3 if i % 5 else 0], 10, key=f"b{i % 350}")) for i in range(450)
        ]
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
    unexpected = [o for o in outcomes if not isinstance(o, PlacedBet | InsufficientFunds | IdempotencyConflict)]
    assert unexpected == []
    for user in users:
        charged = await pool.fetchval("SELECT coalesce(sum(amount), 0) FROM bets WHERE user_id = $1", user)
        balance = (await ledger.balance(user)).balance
        assert balance >= 0 and balance + charged == 1000
    await assert_audit_ok(pool)


async def test_group_commit_coalesces_concurrent_bets(ledger: Ledger, new_user: NewUser) -> None:
    users = [await new_user(100) for _ in range(50)]
    before = ledger.batcher.batches
    await asyncio.gather(*(ledger.place_bet(bet(u, 1)) for u in users))
    assert ledger.batcher.batches - before < 10


async def test_deposit_is_idempotent_by_reference(ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool) -> None:
    user = await new_user()
    assert (await ledger.deposit(user, 50, ref="charge-1")).balance == 50
    assert (await ledger.deposit(user, 50, ref="charge-1")).balance == 50
    assert (await ledger.deposit(user, 5, ref="charge-2")).balance == 55
    with pytest.raises(ValueError):
        await ledger.deposit(user, 0, ref="charge-3")
    with pytest.raises(UnknownAccount):
        await ledger.deposit(next_user_id(), 5, ref="charge-4")
    await assert_audit_ok(pool)


async def test_deposit_many_credits_each_ref_once_with_its_own_offset(ledger: Ledger, new_user: NewUser,
                                                                     pool: asyncpg.Pool) -> None:  # fmt: skip
    """One transaction, several deposits to one wallet: each ref once (a repeat in the batch or from before
    credits nothing), each credit's state and ``balance`` event at its own version, in order."""
    a, b = await new_user(), await new_user()
    tag = f"many-{a}"
    b_old = (await ledger.deposit(b, 9, ref=f"{tag}-old")).balance
    before = await ledger.balance(a)
    credits = [DepositCredit(a, 10, f"{tag}-1"), DepositCredit(b, 3, f"{tag}-old"), DepositCredit(a, 20, f"{tag}-2"),
               DepositCredit(a, 99, f"{tag}-1"), DepositCredit(b, 4, f"{tag}-3")]  # fmt: skip
    runs = 0

    async def plan(conn: object) -> list[DepositCredit]:
        nonlocal runs
        runs += 1
        return credits

    result = await ledger.deposit_many(plan)
    assert runs == 1
    assert result[f"{tag}-1"] == CreditedDeposit(a, WalletState(before.balance + 10, before.version + 1), credited=True)
    assert result[f"{tag}-2"] == CreditedDeposit(a, WalletState(before.balance + 30, before.version + 2), credited=True)
    assert result[f"{tag}-old"].credited is False
    assert result[f"{tag}-3"].credited is True and result[f"{tag}-3"].wallet.balance == b_old + 4
    assert (await ledger.balance(a)) == WalletState(before.balance + 30, before.version + 2)
    rows = await pool.fetch('SELECT "offset", payload FROM user_events WHERE user_id = $1 AND "offset" > $2 '
                            'ORDER BY "offset"', a, before.version)  # fmt: skip
    pushes = [orjson.loads(row["payload"]) for row in rows]
    assert [(p["offset"], p["delta"], p["ref"]) for p in pushes] == [
        (before.version + 1, 10, f"{tag}-1"), (before.version + 2, 20, f"{tag}-2")]  # fmt: skip
    assert await ledger.deposit_many(plan) == {
        f"{tag}-1": CreditedDeposit(a, WalletState(before.balance + 30, before.version + 2), credited=False),
        f"{tag}-2": CreditedDeposit(a, WalletState(before.balance + 30, before.version + 2), credited=False),
        f"{tag}-old": CreditedDeposit(b, WalletState(b_old + 4, result[f"{tag}-3"].wallet.version), credited=False),
        f"{tag}-3": CreditedDeposit(b, WalletState(b_old + 4, result[f"{tag}-3"].wallet.version), credited=False),
    }
    await assert_audit_ok(pool)


async def test_a_deposit_commits_with_what_also_writes_or_not_at_all(ledger: Ledger, new_user: NewUser,
                                                                     pool: asyncpg.Pool) -> None:  # fmt: skip
    """``also`` (the Telegram cashier records its update there) runs in the deposit's transaction."""
    user = await new_user()

    async def deposit(update_id: int, refuse: bool) -> None:
        async def also(conn: object) -> None:
            await conn.execute("INSERT INTO telegram_updates (bot_id, update_id, kind) "  # type: ignore[attr-defined]
                               "VALUES (0, $1, 'test')", update_id)  # fmt: skip
            if refuse:
                raise LookupError(update_id)

        await ledger.deposit(user, 7, ref=f"also-{update_id}", also=also)

    await deposit(user * 10, refuse=False)
    with pytest.raises(LookupError):
        await deposit(user * 10 + 1, refuse=True)
    assert (await ledger.balance(user)).balance == 7
    recorded = await pool.fetch("SELECT update_id FROM telegram_updates WHERE bot_id = 0 AND update_id = ANY($1)",
                                [user * 10, user * 10 + 1])  # fmt: skip
    assert [row["update_id"] for row in recorded] == [user * 10]
    assert await pool.fetchval("SELECT count(*) FROM ledger_txns WHERE ref = $1", f"also-{user * 10 + 1}") == 0
    await assert_audit_ok(pool)


async def test_a_batch_credit_credits_each_user_once_per_batch(ledger: Ledger, new_user: NewUser,
                                                               pool: asyncpg.Pool) -> None:  # fmt: skip
    """``croupier credit FIRST-LAST AMOUNT --batch REF``: users who never signed in get a wallet; running the
    batch again credits nobody; another batch credits everyone again."""
    known = await new_user(5)
    strangers = [next_user_id() for _ in range(3)]
    users = [known, *strangers, known]
    assert await ledger.credit_batch(users, 100, batch=f"load-{known}", reason="load test funds") == 4
    assert await ledger.credit_batch(users, 100, batch=f"load-{known}", reason="load test funds") == 0
    assert [(await ledger.balance(u)).balance for u in [known, *strangers]] == [105, 100, 100, 100]
    assert await ledger.credit_batch(strangers[:1], 7, batch=f"more-{known}", reason="again") == 1
    assert (await ledger.balance(strangers[0])) == WalletState(107, 2)
    with pytest.raises(ValueError):
        await ledger.credit_batch(users, 0, batch="x", reason="nothing")
    await assert_audit_ok(pool)


async def test_adjustments_credit_debit_and_never_overdraw(ledger: Ledger, new_user: NewUser) -> None:
    user = await new_user()
    assert (await ledger.adjust(user, 40, reason="support ticket 7")).balance == 40
    assert (await ledger.adjust(user, -15, reason="chargeback")).balance == 25
    with pytest.raises(InsufficientFunds):
        await ledger.adjust(user, -26, reason="too much")
    assert (await ledger.balance(user)).balance == 25
    with pytest.raises(ValueError):
        await ledger.adjust(user, 5, reason="  ")


async def test_welcome_credit_is_given_once(pool: asyncpg.Pool, new_user: NewUser) -> None:
    generous = Ledger(pool, welcome_credit=1000)
    await generous.start()
    try:
        user = await new_user()  # opened without credit by the default ledger
        assert (await sign_up(generous, user)).balance == 0
        fresh = next_user_id()
        assert (await sign_up(generous, fresh, "new")).balance == 1000
        assert (await sign_up(generous, fresh, "renamed")).balance == 1000  # a profile change: still credited once
    finally:
        await generous.close()


async def test_settle_pays_winners_once_and_refund_returns_stakes(
    ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool
) -> None:
    alice, bob = await new_user(100), await new_user(100)
    a = await ledger.place_bet(bet(alice, 10))
    b = await ledger.place_bet(bet(bob, 20))
    c = await ledger.place_bet(bet(bob, 30))
    closed = await ledger.settle([(a.bet_id, 25), (b.bet_id, 0)])
    assert {(x.bet_id, x.status, x.payout) for x in closed} == {(a.bet_id, "won", 25), (b.bet_id, "lost", 0)}
    assert (await ledger.balance(alice)).balance == 115
    assert await ledger.settle([(a.bet_id, 25), (b.bet_id, 0)]) == []  # settling twice pays once
    assert (await ledger.balance(alice)).balance == 115
    refunded = await ledger.refund([c.bet_id, a.bet_id])  # a is already settled: skipped
    assert [(x.bet_id, x.status, x.payout, x.balance) for x in refunded] == [(c.bet_id, "refunded", 30, 80)]
    assert await ledger.refund([c.bet_id]) == []
    assert (await ledger.balance(bob)).balance == 80
    with pytest.raises(ValueError):
        await ledger.settle([(c.bet_id, -1)])
    await assert_audit_ok(pool)


async def test_wallet_cannot_go_negative_even_by_hand(pool: asyncpg.Pool, new_user: NewUser) -> None:
    user = await new_user(5)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE accounts SET balance = -1 WHERE user_id = $1", user)


async def test_bets_on_a_round_that_stopped_betting_are_refused(
    ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool
) -> None:
    user = await new_user(100)
    await pool.execute("UPDATE rounds SET phase = 'running' WHERE id = $1", OPEN_ROUND["id"])
    with pytest.raises(BettingClosed):
        await ledger.place_bet(bet(user, 10))
    with pytest.raises(BettingClosed):
        await ledger.place_bet(BetRequest(user, "dice", 10**12, 10))  # no such round
    assert (await ledger.balance(user)).balance == 100


async def test_cashouts_are_recorded_once(ledger: Ledger, new_user: NewUser) -> None:
    user = await new_user(100)
    placed = await ledger.place_bet(bet(user, 10))
    assert await ledger.record_cashout([placed.bet_id], 150) == [placed.bet_id]
    assert await ledger.record_cashout([placed.bet_id], 170) == []


async def test_a_settlement_records_the_cash_out_it_paid_when_the_cash_outs_own_write_had_not_landed(
    ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool
) -> None:
    """A cash-out is in the round's state before its write commits; a round settling in between pays it and
    stores it (the soak found a crash bet closed as won by a cash-out its row did not show). A cash-out
    already recorded stays as it was; the late write then changes nothing."""
    user = await new_user(100)
    late, recorded, plain = [await ledger.place_bet(bet(user, 10)) for _ in range(3)]
    assert await ledger.record_cashout([recorded.bet_id], 150) == [recorded.bet_id]
    await ledger.settle([(late.bet_id, 22), (recorded.bet_id, 15), (plain.bet_id, 0)],
                        cashouts={late.bet_id: 223, recorded.bet_id: 999})  # fmt: skip
    assert await ledger.record_cashout([late.bet_id], 223) == []  # the cash-out's own write, after: a no-op
    stored = await pool.fetch("SELECT id, status, payout, cashout FROM bets WHERE user_id = $1", user)
    rows = {r["id"]: (r["status"], r["payout"], r["cashout"]) for r in stored}
    assert rows == {late.bet_id: ("won", 22, 223), recorded.bet_id: ("won", 15, 150), plain.bet_id: ("lost", 0, None)}
    await assert_audit_ok(pool)


async def test_a_crowd_cashing_out_at_once_shares_commits_and_each_gets_its_own_bets(
    ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool
) -> None:
    users = [await new_user(100) for _ in range(40)]
    placed = await asyncio.gather(*(ledger.place_bet(bet(user, 10)) for user in users))
    already = placed[0].bet_id
    await ledger.record_cashout([already], 120)
    assert ledger._cashouts is not None
    before = ledger._cashouts.batches
    answers = await asyncio.gather(*(ledger.record_cashout([p.bet_id], 150 + i % 3) for i, p in enumerate(placed)))
    assert answers[0] == []  # cashed out before: not again
    assert answers[1:] == [[p.bet_id] for p in placed[1:]]
    assert ledger._cashouts.batches - before < 10
    stored = dict(await pool.fetch("SELECT id, cashout FROM bets WHERE id = ANY($1)", [p.bet_id for p in placed]))
    assert stored[already] == 120
    assert all(stored[p.bet_id] == 150 + i % 3 for i, p in enumerate(placed) if i)


def test_postings_refuse_unbalanced_legs() -> None:
    with pytest.raises(ValueError):
        Posting("adjust", ((1, -5), (2, 4)))
    with pytest.raises(ValueError):
        Posting("adjust", ((1, -5),))
    with pytest.raises(ValueError):
        Posting("adjust", ((1, 0), (2, 0)))
    with pytest.raises(ValueError):
        Posting("mint", ((1, -5), (2, 5)))
    with pytest.raises(ValueError):
        transfer("adjust", 1, 2, 0)
    assert transfer("adjust", 1, 2, 5).legs == ((1, -5), (2, 5))


def test_transfers_refuse_what_would_not_balance() -> None:
    Transfers("bet", 1, [10, 11], [5, 6], [3, 4])
    with pytest.raises(ValueError):
        Transfers("bet", 1, [10], [5], [0])  # nothing moves
    with pytest.raises(ValueError):
        Transfers("bet", 1, [10], [5], [-3])
    with pytest.raises(ValueError):
        Transfers("bet", 1, [10, 11], [5], [3, 4])  # a transfer without a source
    with pytest.raises(ValueError):
        Transfers("bet", 5, [10], [5], [3])  # from the target to itself
    with pytest.raises(ValueError):
        Transfers("mint", 1, [10], [5], [3])


def test_legs_of_postings_net_each_account_in_id_order() -> None:
    legs = Legs()
    legs.add(10, transfer("payout", 1, 5, 3))
    legs.add(11, transfer("payout", 1, 6, 4))
    legs.add(12, Posting("adjust", ((5, -7), (1, 7))))
    assert list(zip(legs.txn_ids, legs.accounts, legs.amounts, strict=True)) == [
        (10, 1, -3), (10, 5, 3), (11, 1, -4), (11, 6, 4), (12, 5, -7), (12, 1, 7)
    ]  # fmt: skip
    assert legs.changes() == ([1, 5, 6], [0, -4, 4], [3, 2, 1])


_TRANSFERS = f"WITH {transfers_sql('$1', '$2', '$3', '$4')} SELECT"


async def _accounts(conn: asyncpg.Connection, ids: list[int]) -> dict[int, tuple[int, int]]:
    rows = await conn.fetch("SELECT id, balance, version FROM accounts WHERE id = ANY($1::bigint[])", ids)
    return {row["id"]: (row["balance"], row["version"]) for row in rows}


async def test_transfers_write_two_balanced_legs_each_and_move_accounts_by_exactly_them(
    pool: asyncpg.Pool, new_user: NewUser
) -> None:
    users = [await new_user(100) for _ in range(3)]
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT user_id, id FROM accounts WHERE user_id = ANY($1::bigint[])", users)
        a, b, target = (next(row["id"] for row in rows if row["user_id"] == user) for user in users)
        before = await _accounts(conn, [a, b, target])
        txns = await conn.fetchval("SELECT array_agg(nextval('ledger_txns_id_seq')) FROM generate_series(1, 3)")
        moves = Transfers("adjust", target, txns, [a, b, a], [3, 4, 7])
        async with conn.transaction():
            await conn.execute("INSERT INTO ledger_txns (id, kind, ref) "
                               "SELECT t, 'adjust', 'test-' || t FROM unnest($1::bigint[]) t", txns)  # fmt: skip
            await conn.execute(_TRANSFERS, moves.txn_ids, moves.sources, moves.amounts, moves.target)
            await conn.execute(_TRANSFERS, [], [], [], moves.target)  # no transfers: nothing moves
        legs = await conn.fetch("SELECT txn_id, account_id, amount FROM ledger_legs WHERE txn_id = ANY($1::bigint[]) "
                                "ORDER BY txn_id, amount", txns)  # fmt: skip
        after = await _accounts(conn, [a, b, target])
    assert [tuple(leg) for leg in legs] == [
        (txns[0], a, -3), (txns[0], target, 3), (txns[1], b, -4), (txns[1], target, 4),
        (txns[2], a, -7), (txns[2], target, 7),
    ]  # fmt: skip
    assert after[a] == (before[a][0] - 10, before[a][1] + 2)
    assert after[b] == (before[b][0] - 4, before[b][1] + 1)
    assert after[target] == (before[target][0] + 14, before[target][1] + 3)
    await assert_audit_ok(pool)


async def test_a_batch_moves_each_account_once_per_leg(ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool) -> None:
    alice, bob = await new_user(100), await new_user(100)
    houses = "SELECT sum(balance), sum(version) FROM accounts WHERE kind = 'house'"
    before = await pool.fetchrow(houses)
    placed = await asyncio.gather(*(ledger.place_bet(bet(user, 10)) for user in (alice, bob, alice)))
    after = await pool.fetchrow(houses)
    assert (after[0] - before[0], after[1] - before[1]) == (30, 3)  # one leg, one version, per stake
    assert sorted((p.user_id == alice, p.balance, p.version) for p in placed) == [
        (False, 90, 2), (True, 80, 3), (True, 90, 2)
    ]  # fmt: skip
    assert (await ledger.balance(alice)).version == 3
    await assert_audit_ok(pool)


async def test_closing_betting_waits_for_bet_batches_in_flight(pool: asyncpg.Pool, new_user: NewUser) -> None:
    """The round engine's switch to `running` waits for a batch holding the round; later batches see it closed."""
    from server.ledger.bets import commit_bets
    from server.rounds.store import RoundStore

    user = await new_user(100)
    house = await pool.fetchval("SELECT id FROM accounts WHERE kind = 'house' AND shard = 0")
    store = RoundStore(pool, chain_length=10)
    token = await store.take_lease("dice", "ledger-test")
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        outcomes = await commit_bets(conn, [bet(user, 10)], house, "test")  # in flight: not committed yet
        assert isinstance(outcomes[0], PlacedBet)
        closing = asyncio.create_task(store.start_running(OPEN_ROUND["id"], token))
        await asyncio.sleep(0.3)
        assert not closing.done()  # waits for the batch
        await transaction.commit()
    assert await asyncio.wait_for(closing, 5) is not None
    async with pool.acquire() as conn, conn.transaction():
        late = await commit_bets(conn, [bet(user, 10)], house, "test")
    assert isinstance(late[0], BettingClosed)
    assert await pool.fetchval("SELECT count(*) FROM bets WHERE user_id = $1", user) == 1


async def test_a_bet_postgresql_cannot_store_fails_alone(ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool) -> None:
    # The protocol edge refuses such keys; this is the ledger's own defence if anything slips through.
    users = [await new_user(100) for _ in range(12)]
    requests = [bet(u, 5, key=f"k{i}") for i, u in enumerate(users)]
    requests[5] = bet(users[5], 5, key="nul\x00key")
    outcomes = await asyncio.gather(*(ledger.place_bet(r) for r in requests), return_exceptions=True)
    failed = [i for i, o in enumerate(outcomes) if not isinstance(o, PlacedBet)]
    assert failed == [5]
    assert isinstance(outcomes[5], asyncpg.PostgresError)
    for i, user in enumerate(users):
        assert (await ledger.balance(user)).balance == (100 if i == 5 else 95)
    await assert_audit_ok(pool)


@pytest.mark.parametrize("error", [asyncpg.exceptions.AdminShutdownError, asyncpg.CannotConnectNowError])
async def test_a_server_shutting_down_is_unavailable_not_a_bug(pool: asyncpg.Pool, error: type[Exception]) -> None:
    async def work(conn: object) -> None:
        raise error("the database system is shutting down")

    with pytest.raises(DatabaseUnavailable) as neutral:
        await in_transaction(pool, work)
    assert not isinstance(neutral.value, LedgerUnavailable)  # rounds and others get the database's own error
    with pytest.raises(LedgerUnavailable) as raised:  # the ledger's: protocol code `unavailable`
        await in_transaction(pool, work, unavailable=LedgerUnavailable)
    assert raised.value.code.value == "unavailable" and isinstance(raised.value, DatabaseUnavailable)


async def test_bets_from_three_nodes_never_pass_a_rounds_exposure_cap(
    ledger: Ledger, new_user: NewUser, pool: asyncpg.Pool, database_url: str
) -> None:
    # Each node reserves shares of the cap (server/ledger/exposure.py); together they never pass it.
    from server.ledger import ExposureCapReached

    users = [await new_user(10_000) for _ in range(6)]
    capped = [BetRequest(users[i % 6], "dice", OPEN_ROUND["id"], 10, {}, f"x{i}", exposure=19, exposure_cap=1000)
              for i in range(120)]  # fmt: skip
    async with three_nodes(ledger, database_url) as nodes:
        outcomes = await asyncio.gather(*(nodes[i % 3].place_bet(r) for i, r in enumerate(capped)),
                                        return_exceptions=True)  # fmt: skip
    placed = [o for o in outcomes if isinstance(o, PlacedBet)]
    assert all(isinstance(o, PlacedBet | ExposureCapReached) for o in outcomes), outcomes
    assert 19 * len(placed) <= 1000  # never past the cap: at most 52 bets that could each pay 19
    assert len(placed) >= 40  # and most of it used: shares left unused on a node are the only slack
    assert await pool.fetchval("SELECT exposure FROM rounds WHERE id = $1", OPEN_ROUND["id"]) <= 1000
    for user in users:
        stakes = await pool.fetchval("SELECT coalesce(sum(amount), 0) FROM bets WHERE user_id = $1", user)
        assert (await ledger.balance(user)).balance == 10_000 - stakes
    await assert_audit_ok(pool)


def _scans(plan: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(node type, relation, index) of every node of an EXPLAIN (FORMAT JSON) plan tree."""
    node = (plan["Node Type"], plan.get("Relation Name"), plan.get("Index Name"))
    return [node, *(scan for child in plan.get("Plans", ()) for scan in _scans(child))]


@pytest.mark.parametrize("statement", ["_READ", "_PRIOR"])
async def test_idempotency_keys_are_index_probes_in_a_plan_cached_on_an_empty_table(
    empty_database: str, statement: str
) -> None:
    """A batch's lookup of earlier bets by key probes the unique (user, key) index, in the generic plan a
    connection caches while `bets` is empty (a fresh deployment, the benchmark): as a join, that plan hashed
    the keys and read the whole table on every batch after, however large it grew."""
    query = getattr(bets_module, statement)
    nulls = "NULL, NULL, NULL, NULL" if statement == "_READ" else "NULL, NULL"
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn)
        await conn.execute(f"PREPARE lookup AS {query}")
        await conn.execute("SET plan_cache_mode = force_generic_plan")  # the plan a connection keeps
        (plan,) = orjson.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE lookup({nulls})"))
    finally:
        await conn.close()
    on_bets = [scan for scan in _scans(plan["Plan"]) if scan[1] == "bets"]
    assert on_bets == [("Index Scan", "bets", "bets_user_key")], on_bets
