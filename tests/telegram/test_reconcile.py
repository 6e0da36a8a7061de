"""``croupier stars reconcile`` against the Bot API test server's Star transactions and a real ledger.

Each test runs a node on a database of its own (so the ledger holds this test's deposits only) behind the
test server, and runs the command in-process (:func:`server.cli.main`). Mismatches are planted the way they
happen: a payment whose ``successful_payment`` never reached the node (the pre-checkout answered, the update
left waiting), a refund from Telegram's side while no webhook was set, a deposit no payment backs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from server.ledger import Ledger, audit
from tests.conftest import TEST_BOT_TOKEN, RunningNode, make_settings, serve
from tests.edge.client import authed
from tests.telegram.botapi import BotApiServer
from tests.telegram.test_cashier import SECRET, WEBHOOK, balance, delivered, deposit, order_row
from tests.telegram.test_refunds import croupier, croupier_env, paid

pytestmark = pytest.mark.integration
JSON = dict[str, Any]


@contextlib.asynccontextmanager
async def own_node(database: str, tmp_path: Path, botapi: BotApiServer) -> AsyncIterator[RunningNode]:
    """A node on ``database`` whose Bot API is the test server, which delivers to its webhook."""
    settings = make_settings(database, tmp_path, telegram_api_url=botapi.base_url, webhook_secret=SECRET)
    async with serve(settings) as node:
        await set_webhook(botapi, node)
        yield node


async def set_webhook(botapi: BotApiServer, node: RunningNode) -> None:
    reply = await botapi.call("setWebhook", {"url": node.url + WEBHOOK, "secret_token": SECRET})
    assert reply.ok, reply.body


async def paid_behind_the_nodes_back(botapi: BotApiServer, url: str, user: int, *, confirm: bool) -> JSON:
    """A payment of invoice ``url`` whose pre-checkout the test answers itself (no webhook is set): its
    ``successful_payment`` waits in getUpdates (confirmed there, and so dropped, with ``confirm``)."""
    paying = asyncio.create_task(botapi.pay(url, user))
    query: JSON | None = None
    while query is None:
        updates = (await botapi.call("getUpdates", {"timeout": 1})).result
        query = next((u for u in updates if "pre_checkout_query" in u), None)
    answered = await botapi.call("answerPreCheckoutQuery", {"pre_checkout_query_id": query["pre_checkout_query"]["id"],
                                                            "ok": True})  # fmt: skip
    assert answered.ok, answered.body
    outcome: JSON = await paying
    assert outcome["status"] == "paid", outcome
    if confirm:
        assert (await botapi.call("getUpdates", {"offset": outcome["message_update_id"] + 1})).ok
    return outcome


async def foreign_payments(botapi: BotApiServer, user: int, count: int) -> list[str]:
    """``count`` payments by ``user`` of invoices no order of ours names, made on the test server alone (no
    webhook: the test answers the pre-checkout queries, and confirms every update); their charge ids."""
    charges: list[str] = []
    # A connection per call: on a kept-alive one httpx's small writes wait ~40 ms each for the server's
    # delayed ACK (Nagle), which made this loop ten times slower.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(trust_env=False, timeout=30, limits=fresh) as client:

        async def api(method: str, params: JSON) -> Any:
            body = (await client.post(botapi.method_url(method), json=params)).json()
            assert body["ok"], body
            return body["result"]

        for n in range(count):
            invoice = {"title": "Chips", "description": "elsewhere", "payload": f"other-{n}", "currency": "XTR",
                       "prices": [{"label": "Chips", "amount": 1}]}  # fmt: skip
            url = await api("createInvoiceLink", invoice)
            pay = client.post(f"{botapi.base_url}/_control/pay", json={"invoice": url, "user": user})
            paying = asyncio.create_task(pay)
            (update,) = await api("getUpdates", {"timeout": 5})
            query_id = update["pre_checkout_query"]["id"]
            await api("answerPreCheckoutQuery", {"pre_checkout_query_id": query_id, "ok": True})
            outcome = (await paying).json()
            assert outcome["status"] == "paid", outcome
            await api("getUpdates", {"offset": outcome["message_update_id"] + 1})
            charges.append(outcome["charge_id"])
    return charges


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, empty_database: str, botapi: BotApiServer) -> Iterator[None]:
    with croupier_env(monkeypatch, tmp_path, CROUPIER_BOT_TOKEN=TEST_BOT_TOKEN, DATABASE_URL=empty_database,
                      CROUPIER_TELEGRAM_API_URL=botapi.base_url):  # fmt: skip
        yield


async def test_reconcile_is_clean_then_finds_planted_mismatches_and_fix_puts_them_right(
    empty_database: str, tmp_path: Path, botapi: BotApiServer, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    user = 7_300_001
    async with own_node(empty_database, tmp_path, botapi) as node:
        db = await asyncpg.connect(empty_database)
        ws, _ = await authed(node, user)
        first = await paid(botapi, ws, user, 5)
        await paid(botapi, ws, user, 6)

        status, out, err = await croupier(capsys, "stars", "reconcile")
        assert (status, err) == (0, "")
        assert out.splitlines() == ["2 payments and 0 refunds in Telegram's transactions, 2 deposits in the ledger: "
                                    "0 mismatches"]  # fmt: skip
        (pages,) = await botapi.calls("getStarTransactions")
        assert (int(pages["params"]["offset"]), int(pages["params"]["limit"])) == (0, 100)

        # No webhook for a while: a refund from Telegram's side and a payment wait in getUpdates.
        assert (await botapi.call("deleteWebhook")).ok
        await botapi.refund_from_telegram(first["charge_id"])
        invoice = await deposit(ws, 7)
        missed = await paid_behind_the_nodes_back(botapi, invoice["url"], user, confirm=False)
        assert await balance(db, user) == 11

        status, out, err = await croupier(capsys, "stars", "reconcile")
        assert status == 1 and err == ""
        lines = out.splitlines()
        assert len(lines) == 3, out
        assert lines[0].startswith(f"missing credit: payment {missed['charge_id']}: 7 Stars by user {user} on ")
        assert lines[0].endswith(f"for order {invoice['order']} was not credited (7 chips owed)")
        assert lines[1].startswith(
            f"refund not reversed: payment {first['charge_id']}: 5 Stars refunded to user {user}"
        )
        assert lines[1].endswith("the 5 chips it credited were not taken back")
        assert lines[2].endswith(": 2 mismatches")

        status, out, err = await croupier(capsys, "stars", "reconcile", "--fix")
        assert (status, err) == (0, ""), out
        lines = out.splitlines()
        assert lines[0].endswith(f"(fixed, credited: 7 chips to user {user} (balance 18))")
        assert lines[1].endswith(f"(fixed, reversed: 5 chips taken back from user {user})")
        assert lines[2].endswith(": 2 mismatches, 2 fixed")
        assert await balance(db, user) == 13
        assert (await order_row(db, invoice["order"]))["status"] == "paid"
        assert (await order_row(db, first["order"]))["status"] == "refunded"
        assert await db.fetchval("SELECT source FROM star_refunds WHERE telegram_payment_charge_id = $1",
                                 first["charge_id"]) == "reconcile"  # fmt: skip

        status, out, _ = await croupier(capsys, "stars", "reconcile")
        assert status == 0 and out.splitlines()[-1].endswith(": 0 mismatches"), out

        # The webhook again: the updates that waited (the refund, the payment's pre-checkout query and
        # successful_payment) arrive and find everything done.
        before = len(await botapi.deliveries())
        await set_webhook(botapi, node)
        deliveries = (await delivered(botapi))[before:]
        assert [d["status"] for d in deliveries] == [200] * 3
        assert await balance(db, user) == 13
        assert await db.fetchval("SELECT count(*) FROM ledger_txns WHERE kind IN ('deposit', 'reversal')") == 4
        report = await audit(db)
        assert report.ok, report.summary()
        await ws.close()
        await db.close()


async def test_reconcile_pages_every_transaction_reports_what_it_cannot_fix_and_honours_since(
    empty_database: str, tmp_path: Path, botapi: BotApiServer, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    user = 7_300_002
    async with own_node(empty_database, tmp_path, botapi) as node:
        ws, _ = await authed(node, user)
        invoice = await deposit(ws, 9)
        assert (await botapi.call("deleteWebhook")).ok
        # 51 payments of invoices no order of ours names, 50 of them refunded, and one of ours the ledger credits
        # wrongly: 102 transactions, two pages.
        others = await foreign_payments(botapi, user, 51)
        first_other = others[0]
        async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for charge in others[1:]:
                (await client.post(f"{botapi.base_url}/_control/refund", json={"charge_id": charge})).raise_for_status()
        ours = await paid_behind_the_nodes_back(botapi, invoice["url"], user, confirm=True)
        pool = await asyncpg.create_pool(empty_database, min_size=1, max_size=2)
        ledger = Ledger(pool)
        await ledger.start()
        try:
            await ledger.deposit(user, 90, ref=ours["charge_id"])  # the order is worth 9 chips
            await ledger.deposit(user, 5, ref="stxNO-SUCH-PAYMENT")
        finally:
            await ledger.close()
            await pool.close()

        status, out, _ = await croupier(capsys, "stars", "reconcile", "--fix")
        assert status == 1
        lines = out.splitlines()
        assert len(lines) == 4, out
        assert lines[0].startswith(f"missing credit: payment {first_other}: 1 Stars by user {user} on ")
        assert lines[0].endswith(" names no order of ours (payload 'other-0'): not credited; refund it")
        assert lines[1] == (f"amount differs: payment {ours['charge_id']}: 9 Stars by user {user} on "
                            f"{lines[1].split(' on ', 1)[1].split(' for ')[0]} for order {invoice['order']} owes "
                            "9 chips, the ledger credited 90")  # fmt: skip
        assert lines[2].startswith(f"credit without a transaction: payment stxNO-SUCH-PAYMENT: 5 chips credited to "
                                   f"user {user} on ")  # fmt: skip
        assert lines[3] == ("52 payments and 50 refunds in Telegram's transactions, 2 deposits in the ledger: "
                            "3 mismatches, 0 fixed")  # fmt: skip
        pages = await botapi.calls("getStarTransactions")
        assert [int(call["params"]["offset"]) for call in pages] == [0, 100]

        tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
        status, out, _ = await croupier(capsys, "stars", "reconcile", "--since", tomorrow)
        assert status == 0 and out.splitlines() == [
            f"0 payments and 0 refunds in Telegram's transactions, 0 deposits in the ledger since {tomorrow} "
            "00:00:00 UTC: 0 mismatches"]  # fmt: skip

        status, out, err = await croupier(capsys, "stars", "reconcile", "--since", "last tuesday")
        assert status == 2 and out == "" and "--since must be a date" in err
        await ws.close()
