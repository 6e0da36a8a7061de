"""The Stars cashier end to end: real nodes (uvicorn, PostgreSQL, Redis), real sockets, and the Bot API test
server (tests/telegram/botapi.py) delivering updates to the node's real ``POST /telegram/webhook``.

Nothing is mocked: a deposit goes socket -> node -> createInvoiceLink on the test server; the test server's
``pay`` sends the pre-checkout query to the webhook, the node answers it through the Bot API, the test server
then delivers ``successful_payment`` and the node credits the wallet; the ``balance`` push reaches the user's
socket through the outbox and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from server.ledger import audit
from tests.conftest import TEST_BOT_TOKEN, RunningNode, StartNode
from tests.edge.client import authed, recv, request
from tests.services import free_port
from tests.telegram.botapi import WEBHOOK_SECRET_HEADER, BotApiServer

pytestmark = pytest.mark.integration
JSON = dict[str, Any]
SECRET = "croupier-suite-webhook-secret_01"
WEBHOOK = "/telegram/webhook"


# ------------------------------------------------------------------------------------------ helpers


@contextlib.asynccontextmanager
async def cashier_node(start_node: StartNode, botapi: BotApiServer, *, webhook: bool = True,
                       **overrides: object) -> AsyncIterator[RunningNode]:  # fmt: skip
    """A node whose Bot API is the test server; with ``webhook``, the test server delivers to it."""
    async with start_node(telegram_api_url=botapi.base_url, webhook_secret=SECRET, **overrides) as node:
        if webhook:
            reply = await botapi.call("setWebhook", {"url": node.url + WEBHOOK, "secret_token": SECRET,
                                                     "allowed_updates": ["message", "pre_checkout_query"]})  # fmt: skip
            assert reply.ok, reply.body
        yield node


async def deposit(ws: ClientConnection, stars: int, request_id: int | str = "d") -> JSON:
    return await request(ws, {"t": "deposit", "id": request_id, "stars": stars})


async def push(ws: ClientConnection, wanted: Callable[[JSON], bool], timeout: float = 10.0) -> JSON:
    """The next push on ``ws`` that ``wanted`` accepts (others are passed over)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await recv(ws, timeout=max(0.01, deadline - time.monotonic()))
        if "ch" in message and wanted(message):
            return message


def is_deposit(message: JSON) -> bool:
    return message["t"] == "balance" and message.get("reason") == "deposit"


async def delivered(botapi: BotApiServer, timeout: float = 30.0) -> list[JSON]:
    """Wait until the test server has no update left to deliver; its webhook deliveries so far."""
    deadline = time.monotonic() + timeout
    while (await botapi.state())["pending_update_ids"]:
        assert time.monotonic() < deadline, "updates still waiting for the webhook"
        await asyncio.sleep(0.05)
    return await botapi.deliveries()


def answer_of(call: JSON) -> tuple[bool, str | None]:
    """(ok, error_message) of a recorded answerPreCheckoutQuery call (aiogram sends a form: strings)."""
    params = call["params"]
    ok = params["ok"] if isinstance(params["ok"], bool) else json.loads(params["ok"])
    return ok, params.get("error_message")


async def order_row(db: asyncpg.Connection, order_id: int) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM star_orders WHERE id = $1", order_id)
    assert row is not None
    return row


async def balance(db: asyncpg.Connection, user_id: int) -> int:
    value: int = await db.fetchval("SELECT balance FROM accounts WHERE user_id = $1", user_id)
    return value


def payment_message(user_id: int, outcome: JSON) -> JSON:
    """A ``successful_payment`` message as Telegram sends it, for a payment the test server made."""
    return {
        "message_id": 900_000 + random.randrange(100_000),
        "from": {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"},
        "chat": {"id": user_id, "type": "private", "first_name": f"User {user_id}"},
        "date": int(time.time()),
        "successful_payment": {
            "currency": "XTR",
            "total_amount": outcome["amount"],
            "invoice_payload": outcome["payload"],
            "telegram_payment_charge_id": outcome["charge_id"],
            "provider_payment_charge_id": outcome["provider_charge_id"],
        },
    }


async def post_update(client: httpx.AsyncClient, node: RunningNode, update: JSON, secret: str | None = SECRET,
                      ) -> httpx.Response:  # fmt: skip
    headers = {} if secret is None else {WEBHOOK_SECRET_HEADER: secret}
    return await client.post(node.url + WEBHOOK, json=update, headers=headers)


# ------------------------------------------------------------------------------------------ a deposit


async def test_a_deposit_is_paid_and_pushed_to_the_users_socket_on_another_node(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection, redis_url: str
) -> None:
    user = 7_000_001
    async with cashier_node(start_node, botapi, webhook=False, redis_url=redis_url, node_id="cash-a",
                            chips_per_star=3) as sockets_node, \
            cashier_node(start_node, botapi, redis_url=redis_url, node_id="cash-b") as webhook_node:  # fmt: skip
        assert sockets_node.url != webhook_node.url
        ws, welcome = await authed(sockets_node, user)
        start = welcome["balance"]
        invoice = await deposit(ws, 25, request_id=41)
        assert invoice["t"] == "invoice" and invoice["id"] == 41, invoice
        assert (invoice["stars"], invoice["chips"]) == (25, 75) and invoice["url"].startswith("https://t.me/$")
        (made,) = await botapi.invoices()
        assert (made["url"], made["payload"], made["amount"], made["currency"]) == (
            invoice["url"], str(invoice["order"]), 25, "XTR",
        )  # fmt: skip
        (create,) = await botapi.calls("createInvoiceLink")
        assert not create["params"].get("provider_token")
        assert (await order_row(db, invoice["order"]))["status"] == "pending"

        outcome = await botapi.pay(invoice["url"], {"id": user, "first_name": "Ann"})
        assert outcome["status"] == "paid", outcome
        (answer,) = await botapi.calls("answerPreCheckoutQuery")
        assert answer_of(answer) == (True, None) and answer["status"] == 200

        credited = await push(ws, is_deposit)
        assert credited["delta"] == 75 and credited["balance"] == start + 75
        assert credited["ref"] == outcome["charge_id"]
        row = await order_row(db, invoice["order"])
        assert row["status"] == "paid" and row["telegram_payment_charge_id"] == outcome["charge_id"]
        assert row["paid_at"] is not None and await balance(db, user) == start + 75

        # Telegram delivers both updates again: nothing is answered or credited twice.
        await botapi.redeliver(outcome["pre_checkout_update_id"])
        await botapi.redeliver(outcome["message_update_id"])
        deliveries = await delivered(botapi)
        assert {d["status"] for d in deliveries} == {200}
        assert len(await botapi.calls("answerPreCheckoutQuery")) == 1
        assert await balance(db, user) == start + 75
        with pytest.raises(TimeoutError):
            await push(ws, is_deposit, timeout=0.5)
        await ws.close()


async def test_a_paid_order_cannot_be_paid_again(start_node: StartNode, botapi: BotApiServer) -> None:
    user = 7_000_002
    async with cashier_node(start_node, botapi) as node:
        ws, _ = await authed(node, user)
        invoice = await deposit(ws, 5)
        assert (await botapi.pay(invoice["url"], user))["status"] == "paid"
        again = await botapi.pay(invoice["url"], user)
        assert again["status"] == "declined" and again["error_message"] == "This order is already paid."
        await ws.close()


# ------------------------------------------------------------------------------------------ refusals


async def test_deposit_limits_are_refused_naming_stars(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    user = 7_000_003
    async with cashier_node(start_node, botapi, webhook=False, deposit_min_stars=5, deposit_max_stars=100,
                            deposit_daily_stars=160) as node:  # fmt: skip
        ws, _ = await authed(node, user)
        for stars, words in ((4, "at least 5 Stars"), (101, "at most 100 Stars")):
            refused = await deposit(ws, stars)
            assert (refused["t"], refused["code"], refused["field"]) == ("error", "deposit_refused", "stars"), refused
            assert words in refused["message"]
        assert (await deposit(ws, 100))["t"] == "invoice"
        assert (await deposit(ws, 50))["t"] == "invoice"
        over = await deposit(ws, 11)
        assert (over["code"], over["field"]) == ("deposit_refused", "stars")
        assert "limit of 160 Stars in 24 hours" in over["message"] and "10 left" in over["message"]
        assert (await deposit(ws, 10))["t"] == "invoice"
        zero = await deposit(ws, 0)
        assert (zero["code"], zero["field"]) == ("bad_request", "stars")
        assert await db.fetchval("SELECT count(*) FROM star_orders WHERE user_id = $1", user) == 3
        assert len(await botapi.calls("createInvoiceLink")) == 3
        await ws.close()


async def test_the_players_own_deposit_limit_and_cool_off_refuse_deposits_and_their_checkouts(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    """A deposit limit of the player's own refuses what would pass it (``limit_reached``, with the period's
    end); a cool-off refuses deposits (``excluded``), and the checkout of an invoice made before it."""
    user = 7_000_012
    async with cashier_node(start_node, botapi) as node:
        ws, _ = await authed(node, user)
        limit = {"t": "set_limit", "id": "l", "kind": "deposit", "period": "week", "amount": 100}
        assert (await request(ws, limit))["limits"][0]["used"] == 0
        before = await deposit(ws, 60)
        assert before["t"] == "invoice"
        over = await deposit(ws, 41)
        assert (over["code"], over["field"]) == ("limit_reached", "stars") and over["resets_at"] > 0, over
        assert "40 left" in over["message"]
        assert (await request(ws, {"t": "limits", "id": "s"}))["limits"][0]["used"] == 60
        cooling = await request(ws, {"t": "exclude", "id": "x", "kind": "cool_off", "days": 1})
        refused = await deposit(ws, 10)
        assert (refused["code"], refused["resets_at"]) == ("excluded", cooling["exclusion"]["until"])
        paid = await botapi.pay(before["url"], user)  # the invoice made before the cool-off
        await delivered(botapi)
        (answer,) = [answer_of(call) for call in await botapi.calls("answerPreCheckoutQuery")]
        await ws.close()
    assert paid["status"] == "declined" and answer[0] is False and "cool-off" in answer[1]
    assert await db.fetchval("SELECT count(*) FROM star_orders WHERE user_id = $1", user) == 1
    assert await balance(db, user) == 0


async def test_a_bot_api_failure_answers_unavailable_and_cancels_the_order(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    user = 7_000_004
    async with cashier_node(start_node, botapi, webhook=False) as node:
        ws, _ = await authed(node, user)
        await botapi.fail_next("createInvoiceLink", error_code=500)
        failed = await deposit(ws, 20)
        assert (failed["t"], failed["code"]) == ("error", "unavailable"), failed
        (status,) = await db.fetch("SELECT status FROM star_orders WHERE user_id = $1", user)
        assert status["status"] == "cancelled"
        assert (await deposit(ws, 20))["t"] == "invoice"  # the next one goes through
        await ws.close()


async def test_an_unreachable_bot_api_answers_unavailable_and_logs_no_token(
    start_node: StartNode, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    user = 7_000_009
    caplog.set_level(logging.DEBUG)
    async with start_node(telegram_api_url=f"http://127.0.0.1:{free_port()}") as node:  # nothing listens there
        ws, _ = await authed(node, user)
        failed = await deposit(ws, 20)
        assert (failed["code"], failed["field"]) == ("unavailable", None), failed
        await ws.close()
    assert await db.fetchval("SELECT status FROM star_orders WHERE user_id = $1", user) == "cancelled"
    assert "createInvoiceLink failed" in caplog.text
    assert TEST_BOT_TOKEN.split(":")[1] not in caplog.text


async def test_a_node_without_a_bot_of_its_own_refuses_deposits_and_has_no_webhook(
    start_node: StartNode, botapi: BotApiServer
) -> None:
    async with start_node(telegram_api_url=botapi.base_url, webhook_secret=SECRET, dev_token=True) as node:
        ws, _ = await authed(node, 7_000_005)
        refused = await deposit(ws, 10)
        assert (refused["code"], refused["field"]) == ("deposit_refused", None)
        assert "not enabled" in refused["message"]
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await post_update(client, node, {"update_id": 1})).status_code == 404
        await ws.close()
    assert await botapi.calls() == []
    async with start_node() as node, httpx.AsyncClient(trust_env=False) as client:  # no secret: no webhook
        assert (await post_update(client, node, {"update_id": 1})).status_code == 404


async def test_pre_checkout_refuses_a_tampered_amount_another_users_order_and_an_unknown_one(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    owner, other = 7_000_006, 7_000_007
    async with cashier_node(start_node, botapi) as node:
        ws, _ = await authed(node, owner)
        invoice = await deposit(ws, 30)
        # Another user opens the owner's (forwarded) link.
        theirs = await botapi.pay(invoice["url"], other)
        # An invoice made elsewhere that names the order with another amount.
        forged = await botapi.call("createInvoiceLink", {"title": "Chips", "description": "cheap chips",
                                                         "payload": str(invoice["order"]), "currency": "XTR",
                                                         "prices": [{"label": "Chips", "amount": 1}]})  # fmt: skip
        tampered = await botapi.pay(forged.result, owner)
        unknown = await botapi.call("createInvoiceLink", {"title": "Chips", "description": "no such order",
                                                          "payload": "999999999", "currency": "XTR",
                                                          "prices": [{"label": "Chips", "amount": 30}]})  # fmt: skip
        nowhere = await botapi.pay(unknown.result, owner)
        await delivered(botapi)
        answers = [answer_of(call) for call in await botapi.calls("answerPreCheckoutQuery")]
        await ws.close()
    assert theirs["status"] == tampered["status"] == nowhere["status"] == "declined"
    assert answers == [
        (False, "This invoice was made for another account. Please start a deposit from your own app."),
        (False, "The amount does not match the order. Please start a new deposit in the app."),
        (False, "This order is unknown. Please start a new deposit in the app."),
    ]
    assert [o["error_message"] for o in (theirs, tampered, nowhere)] == [message for _, message in answers]
    assert (await order_row(db, invoice["order"]))["status"] == "pending"
    assert await balance(db, owner) == 0
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE user_id = $1", other) == 0  # never signed in


async def test_a_forged_webhook_changes_nothing(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    user = 7_000_008
    async with cashier_node(start_node, botapi, webhook=False) as node:
        ws, _ = await authed(node, user)
        invoice = await deposit(ws, 40)
        forged = {
            "update_id": 555_000_001,
            "message": payment_message(user, {"amount": 40, "payload": str(invoice["order"]),
                                              "charge_id": "stxFORGED", "provider_charge_id": "p"}),
        }  # fmt: skip
        txns = await db.fetchval("SELECT count(*) FROM ledger_txns")
        async with httpx.AsyncClient(trust_env=False) as client:
            for secret in (None, "", "croupier-suite-webhook-secret_02", SECRET + "x", SECRET[:-1]):
                response = await post_update(client, node, forged, secret)
                assert response.status_code == 401, (secret, response.text)
            # The pre-checkout of a forged update is not answered either.
            query = {"update_id": 555_000_002, "pre_checkout_query": {
                "id": "1", "from": {"id": user, "is_bot": False, "first_name": "A"}, "currency": "XTR",
                "total_amount": 40, "invoice_payload": str(invoice["order"])}}  # fmt: skip
            assert (await post_update(client, node, query, "wrong-secret-of-the-right-size")).status_code == 401
        assert (await order_row(db, invoice["order"]))["status"] == "pending"
        assert await balance(db, user) == 0
        assert await db.fetchval("SELECT count(*) FROM ledger_txns") == txns
        forged_ids = [555_000_001, 555_000_002]
        assert (
            await db.fetchval("SELECT count(*) FROM telegram_updates WHERE update_id = ANY($1::bigint[])", forged_ids)
            == 0
        )
        assert await botapi.calls("answerPreCheckoutQuery") == []
        with pytest.raises(TimeoutError):
            await push(ws, is_deposit, timeout=0.3)
        await ws.close()


async def test_a_body_that_is_not_an_update_is_refused(start_node: StartNode, botapi: BotApiServer) -> None:
    async with cashier_node(start_node, botapi, webhook=False) as node, httpx.AsyncClient(trust_env=False) as c:
        headers = {WEBHOOK_SECRET_HEADER: SECRET}
        assert (await c.post(node.url + WEBHOOK, content=b"{not json", headers=headers)).status_code == 400
        assert (await c.post(node.url + WEBHOOK, json=[1, 2], headers=headers)).status_code == 400
        assert (await c.post(node.url + WEBHOOK, json={"no": "update_id"}, headers=headers)).status_code == 400
        big = b'{"update_id": 1, "x": "' + b"a" * (1 << 20) + b'"}'
        assert (await c.post(node.url + WEBHOOK, content=big, headers=headers)).status_code == 413
        assert (await post_update(c, node, {"update_id": 555_000_003})).status_code == 200  # nothing to do


# ------------------------------------------------------------------------------------------ exactly once


@pytest.mark.timeout(180)
@pytest.mark.timeout(240)
async def test_payments_with_duplicates_and_redeliveries_credit_each_charge_once(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    """1,000 payments by 125 users; 300 more deliveries of them (30 %): Telegram's re-deliveries (same
    update_id), the same charge in another update, and concurrent posts of one update. Each charge is
    credited once, each user's socket gets one push per payment, and the ledger audit passes."""
    users = list(range(7_100_001, 7_100_126))
    per_user = 8
    rng = random.Random(15)
    async with cashier_node(start_node, botapi, chips_per_star=2) as node, \
            httpx.AsyncClient(trust_env=False, timeout=30) as client:  # fmt: skip
        sockets = {user: (await authed(node, user))[0] for user in users}

        async def orders_of(user: int) -> list[JSON]:
            return [await deposit(sockets[user], rng.randint(1, 50), request_id=n) for n in range(per_user)]

        invoices = [(user, inv) for user, made in zip(users, await asyncio.gather(*map(orders_of, users)), strict=True)
                    for inv in made]  # fmt: skip
        assert all(inv["t"] == "invoice" for _, inv in invoices)
        picks = list(range(len(invoices)))
        rng.shuffle(picks)
        redeliver, reissue, concurrent = set(picks[:175]), set(picks[175:260]), set(picks[260:280])
        gate = asyncio.Semaphore(8)
        duplicates = 0

        async def pay(index: int) -> JSON:
            nonlocal duplicates
            user, invoice = invoices[index]
            async with gate:
                outcome = await botapi.pay(invoice["url"], user)
            assert outcome["status"] == "paid", outcome
            if index in redeliver:  # Telegram's re-delivery: the same update_id
                await botapi.redeliver(outcome["message_update_id"])
                duplicates += 1
            if index in reissue:  # the same charge in an update of its own
                assert await botapi.deliver({"message": payment_message(user, outcome)}) is not None
                duplicates += 1
            if index in concurrent:  # two more copies of the update at once, racing the test server's delivery
                update = {"update_id": outcome["message_update_id"], "message": payment_message(user, outcome)}
                answers = await asyncio.gather(*(post_update(client, node, update) for _ in range(2)))
                assert [a.status_code for a in answers] == [200, 200]
                duplicates += 2
            return outcome

        outcomes = await asyncio.gather(*map(pay, range(len(invoices))))
        deliveries = await delivered(botapi, timeout=150)
        assert {d["status"] for d in deliveries} == {200}, [d for d in deliveries if d["status"] != 200][:3]
        assert duplicates == 300 and len(outcomes) == 1000

        charges = [o["charge_id"] for o in outcomes]
        credits = await db.fetch("SELECT ref, count(*) AS n FROM ledger_txns WHERE kind = 'deposit' AND ref = ANY($1) "
                                 "GROUP BY ref", charges)  # fmt: skip
        assert len(credits) == len(charges) and {row["n"] for row in credits} == {1}
        orders = await db.fetch("SELECT id, user_id, stars, status, telegram_payment_charge_id FROM star_orders "
                                "WHERE id = ANY($1)", [inv["order"] for _, inv in invoices])  # fmt: skip
        assert {row["status"] for row in orders} == {"paid"}
        paid = {o["payload"]: o["charge_id"] for o in outcomes}
        assert all(paid[str(row["id"])] == row["telegram_payment_charge_id"] for row in orders)
        for user in users:
            owed = 2 * sum(row["stars"] for row in orders if row["user_id"] == user)
            assert await balance(db, user) == owed
            pushes = [await push(sockets[user], is_deposit) for _ in range(per_user)]
            assert sum(p["delta"] for p in pushes) == owed and pushes[-1]["balance"] == owed
            assert len({p["offset"] for p in pushes}) == per_user
        with pytest.raises(TimeoutError):
            await push(sockets[users[0]], is_deposit, timeout=0.5)
        assert len(await botapi.calls("answerPreCheckoutQuery")) == 1000
        report = await audit(db)
        assert report.ok, report.summary()
        for ws in sockets.values():
            await ws.close()
