"""Tests of the Telegram Bot API test server (tests/telegram/botapi.py) itself, over real connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import TEST_BOT_TOKEN
from tests.services import alive, free_port
from tests.telegram.botapi import (
    INVOICE_LINK_PREFIX,
    REPO_ROOT,
    WEBHOOK_CONFLICT,
    WEBHOOK_SECRET_HEADER,
    ApiReply,
    BotApiServer,
    RateLimits,
)

JSON = dict[str, Any]
BOT_ID = int(TEST_BOT_TOKEN.split(":")[0])
USER: JSON = {"id": 5001, "is_bot": False, "first_name": "Alice", "username": "alice", "language_code": "en"}


# ------------------------------------------------------------------------------------------ helpers


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "the condition") -> None:
    """Wait until ``check()`` holds (polling), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def invoice_link(api: BotApiServer, amount: int = 50, payload: str = "deposit:42") -> str:
    """A Stars invoice link created through the Bot API."""
    reply = await api.call(
        "createInvoiceLink",
        {"title": "Chips", "description": "50 chips", "payload": payload, "currency": "XTR",
         "prices": [{"label": "Chips", "amount": amount}]},
    )  # fmt: skip
    assert reply.ok, reply.body
    link: str = reply.result
    return link


def statuses(replies: list[ApiReply]) -> dict[int, int]:
    """How many replies had each HTTP status."""
    counts: dict[int, int] = {}
    for reply in replies:
        counts[reply.status] = counts.get(reply.status, 0) + 1
    return counts


def multipart_reply(**fields: str) -> Response:
    """A webhook answer naming a method, as multipart/form-data (what aiogram's webhook handler sends)."""
    boundary = "webhookBoundaryTESTxyz"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    return Response(body + f"--{boundary}--\r\n".encode(), media_type=f"multipart/form-data; boundary={boundary}")


@dataclass
class Receiver:
    """A bot's webhook endpoint on loopback: records what arrives and answers pre-checkout queries
    (``ok``; ``decline``; ``late``: after ``late_by`` seconds; ``reply``: in the webhook answer; ``none``)."""

    api: BotApiServer
    answer: Literal["ok", "decline", "late", "reply", "none"] = "ok"
    late_by: float = 0.0
    fail_first: int = 0
    url: str = ""
    got: list[tuple[JSON, str | None]] = field(default_factory=list)
    answers: list[ApiReply] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def updates(self) -> list[JSON]:
        """The updates received, failed deliveries included."""
        return [update for update, _ in self.got]

    async def handle(self, request: Request) -> Response:
        update: JSON = await request.json()
        self.got.append((update, request.headers.get(WEBHOOK_SECRET_HEADER)))
        if self.fail_first > 0:
            self.fail_first -= 1
            return JSONResponse({"error": "not now"}, status_code=500)
        query = update.get("pre_checkout_query")
        if query and self.answer == "reply":
            return multipart_reply(method="answerPreCheckoutQuery", pre_checkout_query_id=query["id"], ok="true")
        if query and self.answer != "none":
            task = asyncio.create_task(self._answer(query["id"]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return JSONResponse({})

    async def _answer(self, query_id: str) -> None:
        if self.answer == "late":
            await asyncio.sleep(self.late_by)
        params: JSON = {"pre_checkout_query_id": query_id, "ok": self.answer != "decline"}
        if self.answer == "decline":
            params["error_message"] = "Sold out"
        self.answers.append(await self.api.call("answerPreCheckoutQuery", params))


@contextlib.asynccontextmanager
async def receiver(api: BotApiServer, **settings: Any) -> AsyncIterator[Receiver]:
    """A :class:`Receiver` served by uvicorn on a free loopback port for the block."""
    hook = Receiver(api, **settings)
    port = free_port()
    hook.url = f"http://127.0.0.1:{port}/hook"
    app = Starlette(routes=[Route("/hook", hook.handle, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the webhook receiver did not start")
        await asyncio.sleep(0.01)
    try:
        yield hook
    finally:
        for pending in list(hook.tasks):
            pending.cancel()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


# ------------------------------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def shop_server() -> Iterator[BotApiServer]:
    """A server with a short checkout timeout (0.5 s) for the payment tests."""
    with BotApiServer.start(TEST_BOT_TOKEN, checkout_timeout=0.5) as server:
        yield server


@pytest.fixture
async def shop(shop_server: BotApiServer) -> BotApiServer:
    await shop_server.reset()
    return shop_server


LIMITS = RateLimits(
    global_limit=5, global_window=30.0, private_limit=1, private_window=1.0, group_limit=3, group_window=30.0
)


@pytest.fixture(scope="module")
def limited_server() -> Iterator[BotApiServer]:
    """A server with small flood-control limits (see :data:`LIMITS`)."""
    with BotApiServer.start(TEST_BOT_TOKEN, rate_limits=LIMITS) as server:
        yield server


@pytest.fixture
async def limited(limited_server: BotApiServer) -> BotApiServer:
    await limited_server.reset()
    return limited_server


# ---------------------------------------------------------------------------------------- lifecycle


def test_the_process_starts_listens_and_stops() -> None:
    api = BotApiServer.start()
    try:
        assert alive(api.pid)
        assert api.base_url == f"http://127.0.0.1:{api.port}"
        me = httpx.get(api.method_url("getMe"), trust_env=False).json()
        assert me["ok"] is True and me["result"]["is_bot"] is True
    finally:
        api.stop()
    assert not alive(api.pid)
    api.stop()  # a second stop is harmless


def test_the_process_does_not_outlive_its_parent() -> None:
    script = (
        "import os; from tests.telegram.botapi import BotApiServer\n"
        "api = BotApiServer.start()\nprint(api.pid, api.workdir, flush=True)\nos._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=30, check=True)
    printed, workdir = out.stdout.decode().split()
    pid = int(printed)
    try:
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)  # the parent left without stop(), which removes it


# ------------------------------------------------------------------------------- envelope and format


async def test_envelope_token_and_unknown_method(botapi: BotApiServer) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        wrong = await client.post(botapi.method_url("getMe", token="123456789:not-the-token"))
        unknown = await client.post(botapi.method_url("sendDiceOfDoom"))
        me = await client.get(botapi.method_url("getme"))  # method names are case-insensitive
        elsewhere = await client.get(f"{botapi.base_url}/favicon.ico")
        no_chat = await client.post(botapi.method_url("sendMessage"), json={"text": "hi"})
        no_text = await client.post(botapi.method_url("sendMessage"), json={"chat_id": 1})
        bad_json = await client.post(
            botapi.method_url("sendMessage"), content=b"{nope", headers={"Content-Type": "application/json"}
        )
    assert (wrong.status_code, wrong.json()) == (401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
    )
    assert elsewhere.status_code == 404 and elsewhere.json()["ok"] is False
    assert me.status_code == 200 and me.json()["ok"] is True
    assert me.json()["result"]["id"] == BOT_ID and me.json()["result"]["is_bot"] is True
    assert (no_chat.status_code, no_chat.json()["description"]) == (400, "Bad Request: chat_id is empty")
    assert (no_text.status_code, no_text.json()["description"]) == (400, "Bad Request: message text is empty")
    assert bad_json.status_code == 400 and bad_json.json()["description"].startswith("Bad Request:")
    assert set(no_text.json()) == {"ok", "error_code", "description"}  # parameters only with a 429

    calls = await botapi.calls()
    assert [(c["method"], c["status"]) for c in calls] == [
        ("getMe", 401), ("sendDiceOfDoom", 404), ("getMe", 200),
        ("sendMessage", 400), ("sendMessage", 400), ("sendMessage", 400),
    ]  # fmt: skip


async def test_parameters_in_every_encoding(botapi: BotApiServer) -> None:
    url = botapi.method_url("sendMessage")
    markup = '{"inline_keyboard": [[{"text": "Play", "callback_data": "play"}]]}'
    async with httpx.AsyncClient(trust_env=False) as client:
        replies = [
            await client.post(url, json={"chat_id": 11, "text": "json"}),
            await client.post(url, data={"chat_id": "12", "text": "form"}),
            await client.post(url, files={"chat_id": (None, "13"), "text": (None, "multipart ♠"),
                                          "reply_markup": (None, markup)}),
            await client.get(url, params={"chat_id": "14", "text": "query"}),
            await client.post(url, params={"chat_id": "15"}, data={"text": "query and form"}),
        ]  # fmt: skip
    results = [reply.json()["result"] for reply in replies]
    assert [(r["chat"]["id"], r["text"]) for r in results] == [
        (11, "json"), (12, "form"), (13, "multipart ♠"), (14, "query"), (15, "query and form"),
    ]  # fmt: skip
    for result in results:
        assert result["message_id"] >= 1 and isinstance(result["date"], int)
        assert result["chat"]["type"] == "private" and result["from"]["id"] == BOT_ID
    assert results[2]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "play"

    calls = await botapi.calls("sendMessage")
    assert [c["params"] for c in calls][:3] == [
        {"chat_id": 11, "text": "json"},
        {"chat_id": "12", "text": "form"},
        {"chat_id": "13", "text": "multipart ♠", "reply_markup": markup},
    ]
    assert [c["http_method"] for c in calls] == ["POST", "POST", "POST", "GET", "POST"]
    assert all(c["status"] == 200 and c["time"] > 0 for c in calls)


async def test_calls_are_recorded_filtered_and_cleared(botapi: BotApiServer) -> None:
    await botapi.call("getMe")
    await botapi.call("sendMessage", {"chat_id": -100500, "text": "to a group"})
    everything = await botapi.calls()
    assert [c["method"] for c in everything] == ["getMe", "sendMessage"]
    sent = await botapi.calls("sendmessage")
    assert len(sent) == 1 and sent[0]["response"]["result"]["chat"]["type"] == "supergroup"
    later = await botapi.calls(since=everything[-1]["seq"] + 1)
    assert later == []
    assert await botapi.clear_calls() == 2
    assert await botapi.calls() == []


async def test_aiogram_drives_the_server(botapi: BotApiServer) -> None:
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import LabeledPrice

    bot = Bot(TEST_BOT_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(botapi.base_url)))
    try:
        me = await bot.get_me()
        link = await bot.create_invoice_link(
            title="Chips", description="100 chips for the tables", payload="deposit:7", currency="XTR",
            prices=[LabeledPrice(label="100 chips", amount=100)],
        )  # fmt: skip
        message = await bot.send_message(chat_id=USER["id"], text="Your chips are ready")
    finally:
        await bot.session.close()
    assert me.id == BOT_ID and me.is_bot and me.username == "croupier_test_bot"
    assert link.startswith(INVOICE_LINK_PREFIX)
    assert message.chat.id == USER["id"] and message.text == "Your chips are ready" and message.message_id >= 1
    (invoice,) = await botapi.invoices()
    assert (invoice["url"], invoice["amount"], invoice["payload"], invoice["title"]) == (
        link,
        100,
        "deposit:7",
        "Chips",
    )
    calls = await botapi.calls()
    assert [(c["method"], c["status"]) for c in calls] == [
        ("getMe", 200), ("createInvoiceLink", 200), ("sendMessage", 200),
    ]  # fmt: skip
    # aiogram posts forms with non-string values JSON-encoded: the prices arrived as a JSON string.
    assert calls[1]["content_type"].startswith(("multipart/form-data", "application/x-www-form-urlencoded"))
    assert json.loads(calls[1]["params"]["prices"]) == [{"label": "100 chips", "amount": 100}]


async def test_invoice_links_are_for_stars_only(botapi: BotApiServer) -> None:
    base: JSON = {"title": "Chips", "description": "Chips", "payload": "p", "currency": "XTR",
                  "prices": [{"label": "Chips", "amount": 10}]}  # fmt: skip
    cases: list[tuple[JSON, str]] = [
        ({"currency": "USD"}, "Bad Request: PAYMENT_PROVIDER_INVALID"),
        ({"provider_token": "284685063:TEST:abc"}, "Bad Request: PAYMENT_PROVIDER_INVALID"),
        ({"prices": [{"label": "a", "amount": 5}, {"label": "b", "amount": 5}]}, "Bad Request: STARS_INVOICE_INVALID"),
        ({"prices": [{"label": "a", "amount": 0}]}, "Bad Request: STARS_INVOICE_INVALID"),
        ({"prices": [{"label": "a", "amount": 1.5}]}, 'Bad Request: field "amount" must be a valid Number'),
        ({"prices": "not json"}, "Bad Request: can't parse prices JSON object"),
        ({"title": ""}, 'Bad Request: parameter "title" is required'),
        ({"payload": "x" * 129}, "Bad Request: INVOICE_PAYLOAD_INVALID"),
    ]
    for change, description in cases:
        reply = await botapi.call("createInvoiceLink", {**base, **change})
        assert (reply.status, reply.description) == (400, description), change
    ok = await botapi.call("createInvoiceLink", {**base, "provider_token": ""})
    assert ok.ok and ok.result.startswith("https://t.me/$")
    assert len(await botapi.invoices()) == 1


# ------------------------------------------------------------------------------------------ payments


async def test_pay_ok_through_the_webhook(shop: BotApiServer) -> None:
    link = await invoice_link(shop, amount=50, payload="deposit:42")
    async with receiver(shop, answer="ok") as hook:
        assert (await shop.call("setWebhook", {"url": hook.url, "secret_token": "s3cret-Token_1"})).ok
        outcome = await shop.pay(link, USER, timeout=5)  # not the server's 0.5 s: a slow machine must pass too
        await eventually(lambda: len(hook.got) == 2 and len(hook.answers) == 1, what="the successful_payment message")
    assert outcome["status"] == "paid" and outcome["charge_id"].startswith("stx")
    query_update, payment_update = hook.updates
    assert [secret for _, secret in hook.got] == ["s3cret-Token_1"] * 2
    assert payment_update["update_id"] > query_update["update_id"]
    query = query_update["pre_checkout_query"]
    assert query["id"] == outcome["pre_checkout_query_id"] and query["from"] == USER
    assert (query["currency"], query["total_amount"], query["invoice_payload"]) == ("XTR", 50, "deposit:42")
    message = payment_update["message"]
    assert message["from"] == USER and message["chat"]["id"] == USER["id"]
    assert message["successful_payment"] == {
        "currency": "XTR",
        "total_amount": 50,
        "invoice_payload": "deposit:42",
        "telegram_payment_charge_id": outcome["charge_id"],
        "provider_payment_charge_id": outcome["provider_charge_id"],
    }
    assert [a.result for a in hook.answers] == [True]
    (transaction,) = (await shop.call("getStarTransactions")).result["transactions"]
    assert transaction["id"] == outcome["charge_id"] and transaction["amount"] == 50
    assert transaction["source"]["type"] == "user" and transaction["source"]["user"] == USER
    assert "receiver" not in transaction


async def test_pay_declined(shop: BotApiServer) -> None:
    link = await invoice_link(shop)
    async with receiver(shop, answer="decline") as hook:
        assert (await shop.call("setWebhook", {"url": hook.url})).ok
        outcome = await shop.pay(link, USER["id"], timeout=5)
    assert outcome["status"] == "declined" and outcome["error_message"] == "Sold out"
    assert [list(update)[1] for update in hook.updates] == ["pre_checkout_query"]
    assert (await shop.call("getStarTransactions")).result == {"transactions": []}


async def test_pay_answered_late_expires(shop: BotApiServer) -> None:
    link = await invoice_link(shop)
    async with receiver(shop, answer="late", late_by=0.8) as hook:  # the server waits 0.5 s
        assert (await shop.call("setWebhook", {"url": hook.url})).ok
        outcome = await shop.pay(link, USER)  # the server's --checkout-timeout
        assert outcome["status"] == "expired"
        late = await shop.calls("answerPreCheckoutQuery", wait=5)
    assert (late[0]["status"], late[0]["response"]["description"]) == (400, "Bad Request: QUERY_ID_INVALID")
    assert [list(update)[1] for update in hook.updates] == ["pre_checkout_query"]
    assert (await shop.call("getStarTransactions")).result == {"transactions": []}


async def test_pay_answered_in_the_webhook_reply(shop: BotApiServer) -> None:
    link = await invoice_link(shop, amount=7)
    async with receiver(shop, answer="reply") as hook:
        assert (await shop.call("setWebhook", {"url": hook.url})).ok
        outcome = await shop.pay(link, USER, timeout=5)
        await eventually(lambda: len(hook.got) == 2, what="the successful_payment message")
    assert outcome["status"] == "paid"
    (answer,) = await shop.calls("answerPreCheckoutQuery")
    assert answer["via"] == "webhook_reply" and answer["status"] == 200
    assert answer["content_type"].startswith("multipart/form-data")
    assert answer["params"] == {"pre_checkout_query_id": outcome["pre_checkout_query_id"], "ok": "true"}


async def test_polling_checkout_refunds_and_transactions(shop: BotApiServer) -> None:
    link = await invoice_link(shop, amount=30, payload="deposit:1")

    async def buy() -> JSON:
        pay = asyncio.create_task(shop.pay(link, USER, timeout=10))
        updates = (await shop.call("getUpdates", {"timeout": 10})).result
        query = updates[0]["pre_checkout_query"]
        answered = await shop.call("answerPreCheckoutQuery", {"pre_checkout_query_id": query["id"], "ok": True})
        assert answered.result is True
        again = await shop.call("answerPreCheckoutQuery", {"pre_checkout_query_id": query["id"], "ok": True})
        assert again.description == "Bad Request: QUERY_ID_INVALID"
        outcome = await pay
        updates = (await shop.call("getUpdates", {"offset": updates[0]["update_id"] + 1, "timeout": 10})).result
        assert updates[0]["message"]["successful_payment"]["telegram_payment_charge_id"] == outcome["charge_id"]
        await shop.call("getUpdates", {"offset": updates[0]["update_id"] + 1})  # confirm
        return outcome

    first, second = await buy(), await buy()
    assert first["status"] == second["status"] == "paid" and first["charge_id"] != second["charge_id"]

    refund = {"user_id": USER["id"], "telegram_payment_charge_id": first["charge_id"]}
    assert (await shop.call("refundStarPayment", refund)).result is True
    twice = await shop.call("refundStarPayment", refund)
    assert (twice.status, twice.description) == (400, "Bad Request: CHARGE_ALREADY_REFUNDED")
    unknown = await shop.call("refundStarPayment", {**refund, "telegram_payment_charge_id": "stxNOPE"})
    assert unknown.description == "Bad Request: CHARGE_NOT_FOUND"
    stranger = await shop.call("refundStarPayment", {"user_id": 999, "telegram_payment_charge_id": second["charge_id"]})
    assert stranger.description == "Bad Request: CHARGE_NOT_FOUND"
    # A refund by the bot itself sends the bot no refunded_payment message (by default).
    assert (await shop.call("getUpdates")).result == []

    from_telegram = await shop.refund_from_telegram(second["charge_id"])
    (update,) = (await shop.call("getUpdates", {"timeout": 10})).result
    assert update["update_id"] == from_telegram["update_id"]
    assert update["message"]["refunded_payment"] == {
        "currency": "XTR",
        "total_amount": 30,
        "invoice_payload": "deposit:1",
        "telegram_payment_charge_id": second["charge_id"],
        "provider_payment_charge_id": second["provider_charge_id"],
    }

    transactions = (await shop.call("getStarTransactions")).result["transactions"]
    assert [(t["id"], "source" in t, "receiver" in t) for t in transactions] == [
        (first["charge_id"], True, False),
        (second["charge_id"], True, False),
        (first["charge_id"], False, True),
        (second["charge_id"], False, True),
    ]
    assert all(t["amount"] == 30 and isinstance(t["date"], int) for t in transactions)
    assert transactions[2]["receiver"]["user"]["id"] == USER["id"]
    page = (await shop.call("getStarTransactions", {"offset": 1, "limit": 2})).result["transactions"]
    assert page == transactions[1:3]
    assert (await shop.call("getStarTransactions", {"limit": 1000})).result["transactions"] == transactions
    assert (await shop.call("getMyStarBalance")).result == {"amount": 0}


# -------------------------------------------------------------------------------------- rate limits


async def burst(api: BotApiServer, chats: list[int]) -> list[ApiReply]:
    """sendMessage to each of ``chats`` at once."""
    return list(await asyncio.gather(*(api.call("sendMessage", {"chat_id": c, "text": "hi"}) for c in chats)))


def assert_flood_errors(replies: list[ApiReply], most: int) -> None:
    for reply in replies:
        if reply.status == 429:
            assert isinstance(reply.retry_after, int) and 1 <= reply.retry_after <= most
            assert reply.description == f"Too Many Requests: retry after {reply.retry_after}"
            assert reply.body["error_code"] == 429 and reply.body["ok"] is False


async def test_one_message_a_window_per_private_chat(limited: BotApiServer) -> None:
    replies = await burst(limited, [42, 42, 42, 42])
    assert statuses(replies) == {200: 1, 429: 3}
    assert_flood_errors(replies, most=1)
    assert statuses(await burst(limited, [43])) == {200: 1}  # another chat is not limited by 42's
    await asyncio.sleep(LIMITS.private_window + 0.1)
    assert statuses(await burst(limited, [42])) == {200: 1}


async def test_messages_per_group(limited: BotApiServer) -> None:
    replies = await burst(limited, [-100777] * 5)
    assert statuses(replies) == {200: 3, 429: 2}
    assert_flood_errors(replies, most=30)


async def test_messages_per_bot(limited: BotApiServer) -> None:
    replies = await burst(limited, list(range(1000, 1008)))
    assert statuses(replies) == {200: 5, 429: 3}
    assert_flood_errors(replies, most=30)
    calls = await limited.calls("sendMessage")
    assert sorted(c["status"] for c in calls) == [200] * 5 + [429] * 3


async def test_forced_errors(botapi: BotApiServer) -> None:
    await botapi.fail_next("sendMessage", 2, retry_after=3)
    await botapi.fail_next("getMe", error_code=500)
    replies = [await botapi.call("sendMessage", {"chat_id": 1 + i, "text": "hi"}) for i in range(3)]
    assert [(r.status, r.retry_after) for r in replies] == [(429, 3), (429, 3), (200, None)]
    assert replies[0].body == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    broken = await botapi.call("getMe")
    assert (broken.status, broken.description) == (500, "Internal Server Error")
    assert (await botapi.call("getMe")).ok


async def test_blocked_deactivated_and_missing_chats(botapi: BotApiServer) -> None:
    await botapi.set_chat(77, "blocked")
    await botapi.set_chat(78, "deactivated")
    await botapi.set_chat(79, "not_found")
    replies = [await botapi.call("sendMessage", {"chat_id": chat, "text": "hi"}) for chat in (77, 78, 79)]
    assert [(r.status, r.description) for r in replies] == [
        (403, "Forbidden: bot was blocked by the user"),
        (403, "Forbidden: user is deactivated"),
        (400, "Bad Request: chat not found"),
    ]
    await botapi.set_chat(77, "active")
    assert (await botapi.call("sendMessage", {"chat_id": 77, "text": "hi again"})).ok


# ------------------------------------------------------------------------------------------- updates


async def test_get_updates_queue_offsets_and_long_polling(botapi: BotApiServer) -> None:
    ids = [await botapi.user_says(USER, f"/bet {n}") for n in range(3)]
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    updates = (await botapi.call("getUpdates")).result
    assert [u["update_id"] for u in updates] == ids
    message = updates[0]["message"]
    assert message["text"] == "/bet 0" and message["from"] == USER and message["chat"]["type"] == "private"
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 4}]
    assert [u["update_id"] for u in (await botapi.call("getUpdates", {"offset": ids[1]})).result] == ids[1:]
    assert [u["update_id"] for u in (await botapi.call("getUpdates", {"limit": 1})).result] == ids[1:2]
    assert (await botapi.call("getUpdates", {"offset": ids[2] + 1})).result == []

    started = time.monotonic()
    poll = asyncio.create_task(botapi.call("getUpdates", {"offset": ids[2] + 1, "timeout": 20}))
    new = await botapi.user_says(USER, "hello")
    assert [u["update_id"] for u in (await poll).result] == [new]
    assert time.monotonic() - started < 10

    started = time.monotonic()
    assert (await botapi.call("getUpdates", {"offset": new + 1, "timeout": 1})).result == []
    assert time.monotonic() - started >= 0.9

    more = [await botapi.user_says(USER, text) for text in ("a", "b")]
    assert [u["update_id"] for u in (await botapi.call("getUpdates", {"offset": -1})).result] == more[1:]


async def test_a_newer_get_updates_ends_the_older(botapi: BotApiServer) -> None:
    older = asyncio.create_task(botapi.call("getUpdates", {"timeout": 20}))
    deadline = time.monotonic() + 5
    while (await botapi.state())["long_polls"] != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    newer = await botapi.call("getUpdates")
    ended = await older
    assert newer.ok and newer.result == []
    assert (ended.status, ended.description) == (
        409,
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    )


async def test_get_updates_conflicts_with_a_webhook(botapi: BotApiServer) -> None:
    set_ = await botapi.call("setWebhook", {"url": "http://127.0.0.1:9/hook"})
    assert set_.ok and set_.body["description"] == "Webhook was set"
    conflict = await botapi.call("getUpdates")
    assert conflict.body == {"ok": False, "error_code": 409, "description": WEBHOOK_CONFLICT}
    deleted = await botapi.call("deleteWebhook")
    assert deleted.ok and deleted.body["description"] == "Webhook was deleted"
    assert (await botapi.call("getUpdates")).ok


async def test_webhook_delivery_with_the_secret_header(botapi: BotApiServer) -> None:
    early = await botapi.user_says(USER, "/start")  # queued before the webhook: delivered once it is set
    async with receiver(botapi) as hook:
        params = {"url": hook.url, "secret_token": "Sec_ret-42", "allowed_updates": ["message", "pre_checkout_query"]}
        assert (await botapi.call("setWebhook", params)).ok
        later = await botapi.deliver({"message": {"message_id": 9, "date": 1, "chat": {"id": 1, "type": "private"}}})
        await eventually(lambda: len(hook.got) == 2, what="two deliveries")
        info = (await botapi.call("getWebhookInfo")).result
        assert await botapi.deliver({"callback_query": {"id": "1"}}) is None  # not in allowed_updates
    assert [u["update_id"] for u in hook.updates] == [early, later]
    assert [secret for _, secret in hook.got] == ["Sec_ret-42", "Sec_ret-42"]
    assert info["url"] == hook.url and info["pending_update_count"] == 0
    assert info["allowed_updates"] == ["message", "pre_checkout_query"] and "last_error_message" not in info
    assert [(d["update_id"], d["status"]) for d in await botapi.deliveries()] == [(early, 200), (later, 200)]

    refused = await botapi.call("setWebhook", {"url": "https://example.com/hook"})
    assert refused.status == 400 and refused.description and refused.description.startswith("Bad Request: bad webhook")
    bad_secret = await botapi.call("setWebhook", {"url": hook.url, "secret_token": "no spaces"})
    assert bad_secret.description == "Bad Request: secret token contains unallowed characters"


async def test_webhook_retries_and_redelivery(botapi: BotApiServer) -> None:
    async with receiver(botapi, fail_first=2) as hook:
        assert (await botapi.call("setWebhook", {"url": hook.url})).ok
        update_id = await botapi.user_says(USER, "hi")
        await eventually(lambda: len(hook.got) == 3, what="two retries")
        info = (await botapi.call("getWebhookInfo")).result
        assert update_id is not None
        await botapi.redeliver(update_id)
        await eventually(lambda: len(hook.got) == 4, what="the re-delivery")
    assert [u["update_id"] for u in hook.updates] == [update_id] * 4
    assert hook.updates[3] == hook.updates[0]
    assert [(d["attempt"], d["status"]) for d in await botapi.deliveries()] == [(1, 500), (2, 500), (3, 200), (1, 200)]
    assert info["last_error_message"] == "Wrong response from the webhook: 500 Internal Server Error"
    assert isinstance(info["last_error_date"], int)


async def test_webhook_that_is_down_gets_retried_then_given_up(botapi: BotApiServer) -> None:
    assert (await botapi.call("setWebhook", {"url": f"http://127.0.0.1:{free_port()}/hook"})).ok
    update_id = await botapi.user_says(USER, "anyone there?")
    deadline = time.monotonic() + 5
    while len(attempts := await botapi.deliveries()) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert [(d["update_id"], d["status"], d["dropped"]) for d in attempts] == [
        (update_id, None, False), (update_id, None, False), (update_id, None, True),
    ]  # fmt: skip
    assert all(d["error"].startswith("Connection error") for d in attempts)
    assert (await botapi.call("getWebhookInfo")).result["pending_update_count"] == 0


async def test_menu_button_and_commands(botapi: BotApiServer) -> None:
    button = {"type": "web_app", "text": "Play", "web_app": {"url": "https://casino.example/app"}}
    assert (await botapi.call("setChatMenuButton", {"menu_button": button})).result is True
    assert (await botapi.call("getChatMenuButton", {"chat_id": 5})).result == button
    insecure = {**button, "web_app": {"url": "http://casino.example/app"}}
    assert (await botapi.call("setChatMenuButton", {"menu_button": insecure})).status == 400
    commands = [{"command": "start", "description": "Open the casino"}, {"command": "balance", "description": "Chips"}]
    assert (await botapi.call("setMyCommands", {"commands": commands})).result is True
    assert (await botapi.call("getMyCommands")).result == commands
    assert (await botapi.call("getMyCommands", {"language_code": "ru"})).result == []
    bad = await botapi.call("setMyCommands", {"commands": [{"command": "Bad-Name", "description": "x"}]})
    assert (bad.status, bad.description) == (400, "Bad Request: BOT_COMMAND_INVALID")
