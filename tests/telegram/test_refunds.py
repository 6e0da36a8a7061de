"""Refunds end to end: a real node, PostgreSQL and the Bot API test server.

A refund from Telegram's side arrives as ``message.refunded_payment`` on the node's real webhook; an operator's
refund is ``croupier stars refund`` (run in-process: :func:`server.cli.main`, the code the console script runs).
Either way the deposit is reversed once, a wallet that played the chips is taken to zero with the shortfall
recorded and the account flagged, and ``croupier audit``'s checks pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import ClientConnection

from server.cli import main
from server.ledger import InsufficientFunds, Ledger, UnknownDeposit, audit
from server.telegram.cashier import RESTRICTED_DEPOSIT
from server.telegram.restrictions import REFUSAL
from tests.conftest import TEST_BOT_TOKEN, StartNode
from tests.edge.client import authed
from tests.ledger.conftest import sign_up
from tests.services import migrated_pool
from tests.telegram.botapi import BotApiServer
from tests.telegram.test_cashier import answer_of, balance, cashier_node, delivered, deposit, order_row, push

pytestmark = pytest.mark.integration
JSON = dict[str, Any]


async def paid(botapi: BotApiServer, ws: ClientConnection, user: int, stars: int) -> JSON:
    """A deposit of ``stars`` paid and credited (its ``balance`` push seen); the test server's outcome."""
    invoice = await deposit(ws, stars)
    assert invoice["t"] == "invoice", invoice
    outcome = await botapi.pay(invoice["url"], user)
    assert outcome["status"] == "paid", outcome
    await push(ws, lambda m: m["t"] == "balance" and m.get("ref") == outcome["charge_id"])
    return {**outcome, "order": invoice["order"]}


async def refund_row(db: asyncpg.Connection, charge_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM star_refunds WHERE telegram_payment_charge_id = $1", charge_id)


async def restriction(db: asyncpg.Connection, user: int) -> str | None:
    kind: str | None = await db.fetchval("SELECT kind FROM account_restrictions WHERE user_id = $1", user)
    return kind


async def reversals(db: asyncpg.Connection, charge_id: str) -> list[int]:
    """The wallet legs of the ``reversal`` transactions of ``charge_id``."""
    rows = await db.fetch(
        "SELECT l.amount FROM ledger_txns t JOIN ledger_legs l ON l.txn_id = t.id "
        "JOIN accounts a ON a.id = l.account_id WHERE t.kind = 'reversal' AND t.ref = $1 AND a.kind = 'wallet'",
        charge_id)  # fmt: skip
    return [row["amount"] for row in rows]


async def audited(db: asyncpg.Connection) -> None:
    report = await audit(db)
    assert report.ok, report.summary()


# ------------------------------------------------------------------------------------------ from Telegram


async def test_a_refund_from_telegram_reverses_the_deposit_once(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    user = 7_200_001
    async with cashier_node(start_node, botapi, chips_per_star=3) as node:
        ws, _ = await authed(node, user)
        outcome = await paid(botapi, ws, user, 10)
        assert await balance(db, user) == 30

        refunded = await botapi.refund_from_telegram(outcome["charge_id"])
        reversed_push = await push(ws, lambda m: m["t"] == "balance" and m.get("reason") == "reversal")
        assert (reversed_push["delta"], reversed_push["balance"]) == (-30, 0)
        assert reversed_push["ref"] == outcome["charge_id"]
        await delivered(botapi)
        assert await balance(db, user) == 0
        assert await reversals(db, outcome["charge_id"]) == [-30]
        row = await refund_row(db, outcome["charge_id"])
        assert row is not None
        assert (row["credited"], row["taken"], row["shortfall"], row["source"], row["update_id"]) == (
            30, 30, 0, "telegram", refunded["update_id"],
        )  # fmt: skip
        order = await order_row(db, outcome["order"])
        assert order["status"] == "refunded" and order["refunded_at"] is not None
        assert await restriction(db, user) is None

        # Telegram delivers the update again, and the same refund in another update: nothing moves.
        await botapi.redeliver(refunded["update_id"])
        again = (await botapi.control("updates", method="GET"))["updates"]
        message = next(u["message"] for u in again if u["update_id"] == refunded["update_id"])
        await botapi.deliver({"message": {**message, "message_id": message["message_id"] + 1000}})
        deliveries = await delivered(botapi)
        assert {d["status"] for d in deliveries} == {200}
        assert await reversals(db, outcome["charge_id"]) == [-30]
        assert await db.fetchval("SELECT count(*) FROM star_refunds WHERE user_id = $1", user) == 1
        with pytest.raises(TimeoutError):
            await push(ws, lambda m: m["t"] == "balance", timeout=0.5)
        await ws.close()
    await audited(db)


async def test_a_refund_of_spent_chips_takes_the_wallet_to_zero_records_the_shortfall_and_flags_the_account(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection, bank: Ledger
) -> None:
    user = 7_200_002
    async with cashier_node(start_node, botapi) as node:
        ws, _ = await authed(node, user)
        outcome = await paid(botapi, ws, user, 10)
        invoice = await deposit(ws, 5)  # opened before the refund, paid after it
        assert invoice["t"] == "invoice"
        await bank.adjust(user, -7, reason="the player lost 7 chips")  # played: 3 left
        await botapi.refund_from_telegram(outcome["charge_id"])
        await delivered(botapi)
        assert await balance(db, user) == 0
        assert await reversals(db, outcome["charge_id"]) == [-3]
        shortfall = await db.fetchrow("SELECT * FROM refund_shortfalls WHERE telegram_payment_charge_id = $1",
                                      outcome["charge_id"])  # fmt: skip
        assert shortfall is not None
        assert (shortfall["credited"], shortfall["taken"], shortfall["shortfall"]) == (10, 3, 7)
        assert await restriction(db, user) == "flagged"

        # The flagged user gets no new invoice, and the checkout of one made before is refused.
        refused = await deposit(ws, 5, "again")
        assert (refused["t"], refused["code"]) == ("error", "deposit_refused")
        assert refused["message"] == RESTRICTED_DEPOSIT
        declined = await botapi.pay(invoice["url"], user)
        assert (declined["status"], declined["error_message"]) == ("declined", REFUSAL)
        assert answer_of((await botapi.calls("answerPreCheckoutQuery"))[-1]) == (False, REFUSAL)
        assert (await order_row(db, invoice["order"]))["status"] == "pending"
        assert await balance(db, user) == 0
        await ws.close()
    await audited(db)


async def test_a_refund_of_an_empty_wallet_moves_nothing_and_still_counts(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection, bank: Ledger
) -> None:
    user = 7_200_003
    async with cashier_node(start_node, botapi) as node:
        ws, _ = await authed(node, user)
        outcome = await paid(botapi, ws, user, 4)
        await bank.adjust(user, -4, reason="the player lost it all")
        refunded = await botapi.refund_from_telegram(outcome["charge_id"])
        await delivered(botapi)
        await botapi.redeliver(refunded["update_id"])
        await delivered(botapi)
        row = await refund_row(db, outcome["charge_id"])
        assert row is not None and (row["taken"], row["shortfall"]) == (0, 4)
        assert await reversals(db, outcome["charge_id"]) == []
        assert await restriction(db, user) == "flagged"
        assert await balance(db, user) == 0
        await ws.close()
    await audited(db)


async def test_a_refund_of_a_payment_never_credited_here_changes_nothing(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    async with cashier_node(start_node, botapi):
        txns = await db.fetchval("SELECT count(*) FROM ledger_txns")
        update_id = await botapi.deliver({"message": {
            "message_id": 1, "date": int(time.time()), "chat": {"id": 7_200_004, "type": "private", "first_name": "A"},
            "from": {"id": 7_200_004, "is_bot": False, "first_name": "A"},
            "refunded_payment": {"currency": "XTR", "total_amount": 5, "invoice_payload": "1",
                                 "telegram_payment_charge_id": "stxNEVER-CREDITED"}}})  # fmt: skip
        deliveries = await delivered(botapi)
        assert [d["status"] for d in deliveries if d["update_id"] == update_id] == [200]
        assert await db.fetchval("SELECT count(*) FROM ledger_txns") == txns
        assert await refund_row(db, "stxNEVER-CREDITED") is None
        kind = await db.fetchval("SELECT kind FROM telegram_updates WHERE update_id = $1", update_id)
        assert kind == "refunded_payment"


async def test_the_ledgers_reversal_refuses_a_shortfall_unless_allowed_and_reverses_once(
    ledger: Ledger, bank: Ledger, db: asyncpg.Connection
) -> None:
    user = 7_200_005
    await db.execute("INSERT INTO users (id, first_name) VALUES ($1, 'L') ON CONFLICT DO NOTHING", user)
    await db.execute("INSERT INTO accounts (kind, user_id) VALUES ('wallet', $1) ON CONFLICT DO NOTHING", user)
    ref = f"stxLEDGER-{random.randrange(10**9)}"
    with pytest.raises(UnknownDeposit):
        await ledger.reverse_deposit(ref, reason="refund")
    await ledger.deposit(user, 50, ref=ref)
    await bank.adjust(user, -20, reason="played")
    with pytest.raises(InsufficientFunds):
        await ledger.reverse_deposit(ref, reason="refund")
    assert (await ledger.balance(user)).balance == 30
    first, second = await asyncio.gather(*(ledger.reverse_deposit(ref, reason="refund", allow_shortfall=True)
                                           for _ in range(2)))  # fmt: skip
    assert sorted([first.reversed_before, second.reversed_before]) == [False, True]
    assert {(r.credited, r.taken, r.shortfall) for r in (first, second)} == {(50, 30, 20)}
    assert (await ledger.balance(user)).balance == 0
    found = await ledger.deposit_of(ref)
    assert found is not None and (found.amount, found.reversed) == (50, 30)
    await audited(db)


async def test_the_audit_catches_a_reversal_taking_more_than_its_deposit_credited(empty_database: str) -> None:
    async with migrated_pool(empty_database) as pool:
        ledger = Ledger(pool)
        await ledger.start()
        await sign_up(ledger, 1, "a")
        await ledger.deposit(1, 100, ref="stxA")
        await ledger.deposit(1, 50, ref="stxB")
        await ledger.reverse_deposit("stxA", reason="refund")
        await ledger.close()
        async with pool.acquire() as conn:
            assert (await audit(conn)).ok
            # A reversal moving more than its deposit (legs still balanced, balances still their legs' sums).
            txn = await conn.fetchval("SELECT id FROM ledger_txns WHERE kind = 'reversal'")
            await conn.execute("UPDATE ledger_legs SET amount = amount + sign(amount) * 10 WHERE txn_id = $1", txn)
            await conn.execute("UPDATE accounts SET balance = balance - 10 WHERE user_id = 1")
            await conn.execute("UPDATE accounts SET balance = balance + 10 WHERE kind = 'bank' AND shard = 0")
            report = await audit(conn)
            assert [*report.problems] == [
                "deposit reversals without a deposit of their ref, or taking back more than it credited"]  # fmt: skip


# ------------------------------------------------------------------------------------------ croupier stars refund


@contextlib.contextmanager
def croupier_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Iterator[None]:
    """The environment a ``croupier`` command reads, for :func:`server.cli.main` run in this process."""
    for name in [name for name in os.environ if name.startswith("CROUPIER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CROUPIER_DATA_DIR", str(tmp_path / "cli-state"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield


async def croupier(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``croupier ARGS`` (its ``asyncio.run`` in a thread of its own): status, stdout, stderr."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, botapi: BotApiServer) -> Iterator[None]:
    with croupier_env(monkeypatch, tmp_path, CROUPIER_BOT_TOKEN=TEST_BOT_TOKEN, DATABASE_URL=database_url,
                      CROUPIER_TELEGRAM_API_URL=botapi.base_url):  # fmt: skip
        yield


async def test_stars_refund_refunds_then_reverses_and_refuses_a_second_time(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    user = 7_200_011
    async with cashier_node(start_node, botapi, chips_per_star=2) as node:
        ws, _ = await authed(node, user)
        outcome = await paid(botapi, ws, user, 15)
        status, out, err = await croupier(capsys, "stars", "refund", outcome["charge_id"], "--reason", "asked twice")
        assert status == 0, err
        assert out.splitlines() == [f"payment {outcome['charge_id']} refunded: 15 Stars to user {user}; 30 chips "
                                    "taken back, balance 0"]  # fmt: skip
        (call,) = await botapi.calls("refundStarPayment")
        params = call["params"]
        assert (int(params["user_id"]), params["telegram_payment_charge_id"]) == (user, outcome["charge_id"])
        assert call["status"] == 200
        assert (await botapi.control("payments", method="GET"))["payments"][0]["refunded"] is True
        row = await refund_row(db, outcome["charge_id"])
        assert row is not None and (row["source"], row["reason"], row["taken"]) == ("operator", "asked twice", 30)
        assert (await order_row(db, outcome["order"]))["status"] == "refunded"
        pushed = await push(ws, lambda m: m["t"] == "balance" and m.get("reason") == "reversal", timeout=15)
        assert (pushed["delta"], pushed["balance"]) == (-30, 0)  # through the outbox: the node's sweeper relays it

        status, out, err = await croupier(capsys, "stars", "refund", outcome["charge_id"], "--reason", "again")
        assert status == 2 and out == ""
        assert "was refunded already" in err and "nothing done" in err and len(err.splitlines()) == 1
        assert len(await botapi.calls("refundStarPayment")) == 1
        assert await reversals(db, outcome["charge_id"]) == [-30]

        status, _, err = await croupier(capsys, "stars", "refund", "stxNO-SUCH-CHARGE", "--reason", "typo")
        assert status == 2 and "no payment with charge id 'stxNO-SUCH-CHARGE' was credited here" in err
        await ws.close()
    await audited(db)


async def test_stars_refund_is_refused_before_telegram_when_the_wallet_cannot_cover_it_unless_forced(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection, bank: Ledger, cli: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    user = 7_200_012
    async with cashier_node(start_node, botapi) as node:
        ws, _ = await authed(node, user)
        outcome = await paid(botapi, ws, user, 20)
        await bank.adjust(user, -15, reason="played")
        txns = await db.fetchval("SELECT count(*) FROM ledger_txns")

        status, out, err = await croupier(capsys, "stars", "refund", outcome["charge_id"], "--reason", "dispute")
        assert status == 2 and out == ""
        assert f"user {user}'s wallet holds 5 chips, less than the 20" in err and "--force-flag" in err
        assert await botapi.calls("refundStarPayment") == []
        assert await db.fetchval("SELECT count(*) FROM ledger_txns") == txns
        assert await refund_row(db, outcome["charge_id"]) is None and await restriction(db, user) is None

        status, out, err = await croupier(capsys, "stars", "refund", outcome["charge_id"], "--reason", "dispute",
                                          "--force-flag")  # fmt: skip
        assert status == 0, err
        assert out.splitlines() == [
            f"payment {outcome['charge_id']} refunded: 20 Stars to user {user}; 5 chips taken back, balance 0",
            f"shortfall: 15 chips had been played (see the refund_shortfalls view); user {user} flagged",
        ]
        assert len(await botapi.calls("refundStarPayment")) == 1
        row = await refund_row(db, outcome["charge_id"])
        assert row is not None and (row["taken"], row["shortfall"]) == (5, 15)
        assert await restriction(db, user) == "flagged" and await balance(db, user) == 0
        await ws.close()
    await audited(db)


async def test_stars_refund_when_telegram_fails_changes_nothing(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    user = 7_200_013
    async with cashier_node(start_node, botapi) as node:
        ws, _ = await authed(node, user)
        outcome = await paid(botapi, ws, user, 3)
        await botapi.fail_next("refundStarPayment", error_code=400, description="Bad Request: CHARGE_NOT_FOUND")
        status, _, err = await croupier(capsys, "stars", "refund", outcome["charge_id"], "--reason", "x")
        assert status == 1 and "Telegram refused the refund" in err and "nothing changed" in err
        assert TEST_BOT_TOKEN.split(":")[1] not in err
        assert await balance(db, user) == 3 and await refund_row(db, outcome["charge_id"]) is None
        await ws.close()


async def test_stars_refund_needs_a_real_bot_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with croupier_env(monkeypatch, tmp_path, CROUPIER_DEV="1"):
        status, _, err = await croupier(capsys, "stars", "refund", "stx1", "--reason", "x")
    assert status == 2 and "CROUPIER_BOT_TOKEN" in err and len(err.splitlines()) == 1
