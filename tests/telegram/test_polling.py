"""Long polling: nodes without a webhook get the bot's updates with ``getUpdates`` from the Bot API test server,
one node at a time (a PostgreSQL advisory lock), and hand them to the same handlers as the webhook."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from server.settings import Settings, SettingsError
from server.telegram.botcommands import NO_APP_TEXT
from server.telegram.polling import LOCK_CLASS
from tests.conftest import TEST_BOT_TOKEN, StartNode
from tests.edge.client import authed
from tests.telegram.botapi import BotApiServer
from tests.telegram.test_cashier import answer_of, balance, deposit, is_deposit, push

pytestmark = pytest.mark.integration
BOT_ID = int(TEST_BOT_TOKEN.split(":")[0])


async def pollers(db: asyncpg.Connection) -> int:
    """Nodes holding the polling lease of the suite's bot."""
    held: int = await db.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = $1 "
        "AND objid::bigint = $2 AND objsubid = 2", LOCK_CLASS, BOT_ID)  # fmt: skip
    return held


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_one_node_polls_and_a_payment_goes_through_then_the_other_takes_over(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection, redis_url: str
) -> None:
    user = 7_500_001
    assert (await botapi.state())["webhook"] is None
    nodes = {"telegram_api_url": botapi.base_url, "polling": True, "redis_url": redis_url, "chips_per_star": 2}
    first = start_node(node_id="poll-a", **nodes)
    await first.__aenter__()
    first_open = True
    try:
        async with start_node(node_id="poll-b", **nodes) as second:
            await until(lambda: _long_polls(botapi, 1))
            assert await pollers(db) == 1

            ws, _ = await authed(second, user)  # the socket on the node that does not poll
            invoice = await deposit(ws, 12)
            outcome = await botapi.pay(invoice["url"], user)
            assert outcome["status"] == "paid", outcome
            (answer,) = await botapi.calls("answerPreCheckoutQuery")
            assert answer_of(answer) == (True, None)
            credited = await push(ws, is_deposit)
            assert credited["delta"] == 24 and await balance(db, user) == 24

            # Handled updates are confirmed by the next call's offset (a long poll is recorded when it ends: the
            # test server's queue shows the confirmation); no call ever met a second poller (a 409).
            await until(lambda: _nothing_pending(botapi))
            offsets = [int(call["params"].get("offset", 0)) for call in await botapi.calls("getUpdates")]
            assert offsets == sorted(offsets) and outcome["message_update_id"] in offsets
            assert {call["status"] for call in await botapi.calls("getUpdates")} == {200}
            assert (await botapi.state())["long_polls"] == 1 and await pollers(db) == 1

            # The polling node stops: it confirms what it handled, and the other node takes over.
            stopped_at = time.time()
            await first.__aexit__(None, None, None)
            first_open = False
            await until(lambda: _long_polls(botapi, 1))
            assert await pollers(db) == 1
            assert (await botapi.state())["pending_update_ids"] == []
            update_id = await botapi.user_says(user, "/start")
            (sent,) = await botapi.calls("sendMessage", wait=10)
            assert sent["params"]["text"] == NO_APP_TEXT and int(sent["params"]["chat_id"]) == user
            await until(lambda: _nothing_pending(botapi))
            calls = await botapi.calls("getUpdates")
            assert update_id in [int(call["params"].get("offset", 0)) for call in calls]
            # Only the long poll the stopped node walked away from ends with a 409, when the next call comes.
            assert all(call["status"] == 200 or call["time"] < stopped_at for call in calls)
            assert len([call for call in calls if call["status"] == 409]) <= 1
            await ws.close()
        assert await pollers(db) == 0
    finally:
        if first_open:
            with contextlib.suppress(Exception):
                await first.__aexit__(None, None, None)


async def test_a_poller_waits_while_a_webhook_is_set(start_node: StartNode, botapi: BotApiServer) -> None:
    async with start_node(telegram_api_url=botapi.base_url, polling=True):
        await until(lambda: _long_polls(botapi, 1))
        assert (await botapi.call("setWebhook", {"url": "http://127.0.0.1:9/telegram/webhook"})).ok
        await until(lambda: _long_polls(botapi, 0))
        calls = await botapi.calls("getUpdates")
        assert calls[-1]["status"] == 409 and "webhook" in calls[-1]["response"]["description"].lower()
        await asyncio.sleep(0.5)
        assert len(await botapi.calls("getUpdates")) == len(calls)  # it waits, and does not hammer the API


async def _long_polls(botapi: BotApiServer, count: int) -> bool:
    return bool((await botapi.state())["long_polls"] == count)


async def _nothing_pending(botapi: BotApiServer) -> bool:
    return not (await botapi.state())["pending_update_ids"]


@pytest.mark.parametrize(
    ("env", "polling"),
    [
        ({"CROUPIER_DEV": "1"}, True),  # make run with a real token: polls
        ({"CROUPIER_DEV": "1", "CROUPIER_PUBLIC_URL": "https://casino.example.com"}, False),
        ({}, False),  # a production node polls only when told to
        ({"CROUPIER_POLLING": "1", "CROUPIER_PUBLIC_URL": "https://casino.example.com"}, True),
        ({"CROUPIER_DEV": "1", "CROUPIER_POLLING": "0"}, False),
        ({"CROUPIER_DEV": "1", "CROUPIER_POLLING": "auto"}, True),
    ],
)
def test_who_polls(env: dict[str, str], polling: bool, tmp_path: Path) -> None:
    settings = Settings.from_env({"CROUPIER_BOT_TOKEN": TEST_BOT_TOKEN, "CROUPIER_DATA_DIR": str(tmp_path), **env})
    assert settings.polling is polling


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CROUPIER_DEV": "1", "CROUPIER_POLLING": "1"}, "CROUPIER_POLLING"),  # a generated token is no bot
        ({"CROUPIER_BOT_TOKEN": TEST_BOT_TOKEN, "CROUPIER_POLLING": "sometimes"}, "CROUPIER_POLLING"),
        (
            {"CROUPIER_BOT_TOKEN": TEST_BOT_TOKEN, "CROUPIER_WEBAPP_URL": "http://casino.example.com"},
            "CROUPIER_WEBAPP_URL",
        ),
        ({"CROUPIER_BOT_TOKEN": TEST_BOT_TOKEN, "CROUPIER_PUBLIC_URL": "casino.example.com"}, "CROUPIER_PUBLIC_URL"),
        ({"CROUPIER_BOT_TOKEN": TEST_BOT_TOKEN, "CROUPIER_TERMS_TEXT": "x" * 4097}, "CROUPIER_TERMS_TEXT"),
    ],
)
def test_bad_bot_settings_are_refused_naming_them(env: dict[str, str], name: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"CROUPIER_DATA_DIR": str(tmp_path), **env})
