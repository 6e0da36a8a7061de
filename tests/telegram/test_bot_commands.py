"""The bot's commands over the node's real webhook: /start, /balance, /paysupport, /terms.

The Bot API test server delivers each user's message to the webhook; the node answers with ``sendMessage``,
which the test server records (and flood-controls: one message a second per private chat, so each check
uses a user of its own).
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import pytest

from server.ledger import Ledger
from server.settings import TERMS_TEXT
from server.telegram.botcommands import NO_APP_TEXT, START_TEXT
from tests.conftest import StartNode
from tests.edge.client import authed
from tests.telegram.botapi import BotApiServer
from tests.telegram.test_cashier import cashier_node, delivered

pytestmark = pytest.mark.integration
JSON = dict[str, Any]
WEBAPP = "https://casino.example.com/app"
SUPPORT = "Payment problems? Write to @casino_support with the date and the amount."


async def answers(botapi: BotApiServer, chat_id: int) -> list[JSON]:
    """The messages the bot sent to ``chat_id``: text and reply_markup (aiogram sends it JSON-encoded)."""
    sent = []
    for call in await botapi.calls("sendMessage"):
        params = call["params"]
        if int(params["chat_id"]) == chat_id and call["status"] == 200:
            markup = params.get("reply_markup")
            sent.append({"text": params["text"], "reply_markup": json.loads(markup) if markup else None})
    return sent


async def reachable(db: asyncpg.Connection, user: int) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT reachable, source, language_code FROM notify_recipients WHERE user_id = $1", user)


async def test_start_answers_with_a_button_opening_the_mini_app_and_makes_the_user_reachable(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    user = 7_400_001
    async with cashier_node(start_node, botapi, webapp_url=WEBAPP):
        update_id = await botapi.user_says({"id": user, "first_name": "Ann", "language_code": "de"}, "/start")
        await delivered(botapi)
        assert await answers(botapi, user) == [{
            "text": START_TEXT,
            "reply_markup": {"inline_keyboard": [[{"text": "Play", "web_app": {"url": WEBAPP}}]]},
        }]  # fmt: skip
        row = await reachable(db, user)
        assert row is not None and (row["reachable"], row["source"], row["language_code"]) == (True, "start", "de")

        await botapi.redeliver(update_id)  # answered once
        await delivered(botapi)
        assert len(await answers(botapi, user)) == 1

        other = 7_400_002  # "/start@bot payload", as a deep link sends it
        await botapi.user_says(other, "/start@croupier_test_bot ref-42")
        await delivered(botapi)
        assert [a["text"] for a in await answers(botapi, other)] == [START_TEXT]


async def test_balance_paysupport_and_terms(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection, bank: Ledger
) -> None:
    rich, broke, support, terms = 7_400_011, 7_400_012, 7_400_013, 7_400_014
    async with cashier_node(start_node, botapi, paysupport_text=SUPPORT) as node:
        ws, _ = await authed(node, rich)
        await bank.adjust(rich, 1_234_567, reason="test funds")
        for user, text in ((rich, "/balance"), (broke, "/BALANCE"), (support, "/paysupport"), (terms, "/terms")):
            await botapi.user_says(user, text)
        deliveries = await delivered(botapi)
        assert {d["status"] for d in deliveries} == {200}
        assert [a["text"] for a in await answers(botapi, rich)] == ["Your balance: 1,234,567 chips."]
        assert [a["text"] for a in await answers(botapi, broke)] == ["Your balance: 0 chips."]
        assert [a["text"] for a in await answers(botapi, support)] == [SUPPORT]
        assert [a["text"] for a in await answers(botapi, terms)] == [TERMS_TEXT]
        assert "not withdrawable" in TERMS_TEXT
        assert await reachable(db, rich) is None  # only /start makes a user reachable
        await ws.close()


async def test_what_is_not_a_command_of_ours_is_left_alone_and_a_failed_answer_is_retried(
    start_node: StartNode, botapi: BotApiServer
) -> None:
    user = 7_400_021
    async with cashier_node(start_node, botapi):
        await botapi.user_says(user, "hello")
        await botapi.user_says(user, "/roulette")
        await botapi.deliver({"message": {
            "message_id": 1, "date": int(time.time()), "text": "/balance",
            "entities": [{"type": "bot_command", "offset": 0, "length": 8}],
            "chat": {"id": -1001234, "type": "supergroup", "title": "Players"},
            "from": {"id": user, "is_bot": False, "first_name": "A"}}})  # fmt: skip
        await delivered(botapi)
        assert await botapi.calls("sendMessage") == []

        # The Bot API fails once: the webhook answers 503, Telegram delivers again, the answer goes out once.
        await botapi.fail_next("sendMessage", error_code=500)
        update_id = await botapi.user_says(user, "/start")
        deliveries = [d for d in await delivered(botapi) if d["update_id"] == update_id]
        assert [d["status"] for d in deliveries] == [503, 200]
        assert [a["text"] for a in await answers(botapi, user)] == [NO_APP_TEXT]  # no CROUPIER_WEBAPP_URL
        assert (await answers(botapi, user))[0]["reply_markup"] is None

        # Flood control refuses an answer (a user repeating commands): it is dropped, not retried.
        await botapi.fail_next("sendMessage", error_code=429, retry_after=5)
        await botapi.user_says(user, "/terms")
        deliveries = await delivered(botapi)
        assert {d["status"] for d in deliveries if d["update_id"] > update_id} == {200}
        refused = [c for c in await botapi.calls("sendMessage") if c["status"] == 429]
        assert len(refused) == 1 and len(await answers(botapi, user)) == 1
