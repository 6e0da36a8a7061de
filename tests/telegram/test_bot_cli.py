"""``croupier bot …`` against the Bot API test server: the calls it records, what the commands print, and the
one-line refusals (exit 2) when a setting is missing. The commands run in-process (:func:`server.cli.main`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_BOT_TOKEN
from tests.telegram.botapi import BotApiServer
from tests.telegram.test_refunds import croupier, croupier_env

SECRET = "croupier-cli-webhook-secret_0123"
PUBLIC = "http://127.0.0.1:8443/casino"  # the test server delivers only to loopback; Telegram wants https


@pytest.fixture
def bot_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, botapi: BotApiServer) -> Iterator[None]:
    with croupier_env(monkeypatch, tmp_path, CROUPIER_BOT_TOKEN=TEST_BOT_TOKEN, CROUPIER_PUBLIC_URL=PUBLIC + "/",
                      CROUPIER_TELEGRAM_API_URL=botapi.base_url, CROUPIER_WEBHOOK_SECRET=SECRET):  # fmt: skip
        yield


async def test_set_webhook_info_and_delete_webhook(
    botapi: BotApiServer, bot_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await croupier(capsys, "bot", "set-webhook")
    assert (status, err) == (0, "")
    assert out == f"webhook set: {PUBLIC}/telegram/webhook (updates: message, pre_checkout_query)\n"
    (call,) = await botapi.calls("setWebhook")
    params = call["params"]
    assert (params["url"], params["secret_token"]) == (f"{PUBLIC}/telegram/webhook", SECRET)
    assert json.loads(params["allowed_updates"]) == ["message", "pre_checkout_query"]
    state = await botapi.state()
    assert state["webhook"]["url"] == f"{PUBLIC}/telegram/webhook" and state["webhook"]["secret_token"] == SECRET

    status, out, err = await croupier(capsys, "bot", "info")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "bot: @croupier_test_bot (Croupier Test Bot, id 123456789)",
        f"Bot API: {botapi.base_url} (production)",
        f"webhook: {PUBLIC}/telegram/webhook",
        "pending updates: 0",
        "allowed updates: message, pre_checkout_query",
        "max connections: 40",
    ]
    assert [c["method"] for c in await botapi.calls()][1:] == ["getMe", "getWebhookInfo"]

    status, out, err = await croupier(capsys, "bot", "delete-webhook", "--drop-pending")
    assert (status, err) == (0, "")
    assert out == "webhook deleted: updates wait for long polling (getUpdates); pending updates dropped\n"
    (call,) = await botapi.calls("deleteWebhook")
    assert call["params"]["drop_pending_updates"] in (True, "true")
    assert (await botapi.state())["webhook"] is None
    status, out, _ = await croupier(capsys, "bot", "info")
    assert "webhook: none (updates wait for getUpdates: long polling)" in out.splitlines()
    assert f"note: CROUPIER_PUBLIC_URL makes the webhook {PUBLIC}/telegram/webhook (croupier bot set-webhook)" in out
    assert TEST_BOT_TOKEN.split(":")[1] not in out


async def test_set_menu_button(botapi: BotApiServer, bot_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = await croupier(capsys, "bot", "set-menu-button", "https://casino.example.com/app",
                                      "--text", "Open the tables")  # fmt: skip
    assert (status, err) == (0, "")
    assert out == "menu button set: 'Open the tables' opens https://casino.example.com/app\n"
    (call,) = await botapi.calls("setChatMenuButton")
    assert json.loads(call["params"]["menu_button"]) == {
        "type": "web_app", "text": "Open the tables", "web_app": {"url": "https://casino.example.com/app"},
    }  # fmt: skip
    assert "chat_id" not in call["params"]  # the default button, for every chat
    assert (await botapi.call("getChatMenuButton")).result["web_app"]["url"] == "https://casino.example.com/app"

    status, out, err = await croupier(capsys, "bot", "set-menu-button", "http://casino.example.com/app")
    assert status == 2 and out == "" and "https://" in err and len(err.splitlines()) == 1
    assert len(await botapi.calls("setChatMenuButton")) == 1


@pytest.mark.parametrize(
    ("env", "args", "names"),
    [
        ({"CROUPIER_WEBHOOK_SECRET": SECRET}, ("bot", "set-webhook"), "CROUPIER_PUBLIC_URL"),
        ({"CROUPIER_PUBLIC_URL": PUBLIC}, ("bot", "set-webhook"), "CROUPIER_WEBHOOK_SECRET"),
        ({"CROUPIER_PUBLIC_URL": "ftp://x", "CROUPIER_WEBHOOK_SECRET": SECRET}, ("bot", "info"), "CROUPIER_PUBLIC_URL"),
        ({"CROUPIER_BOT_TOKEN": "", "CROUPIER_DEV": "1"}, ("bot", "info"), "CROUPIER_BOT_TOKEN"),
        ({"CROUPIER_BOT_TOKEN": "", "CROUPIER_BOT_ID": "42"}, ("bot", "delete-webhook"), "CROUPIER_BOT_TOKEN"),
    ],
)
async def test_a_missing_setting_is_refused_in_one_line_before_any_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, botapi: BotApiServer, capsys: pytest.CaptureFixture[str],
    env: dict[str, str], args: tuple[str, ...], names: str,
) -> None:  # fmt: skip
    settings = {"CROUPIER_BOT_TOKEN": TEST_BOT_TOKEN, "CROUPIER_TELEGRAM_API_URL": botapi.base_url, **env}
    with croupier_env(monkeypatch, tmp_path, **{k: v for k, v in settings.items() if v}):
        status, out, err = await croupier(capsys, *args)
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and names in err, err
    assert await botapi.calls() == []


async def test_a_bot_api_error_is_reported_without_the_token(
    botapi: BotApiServer, bot_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = "Bad Request: bad webhook: HTTPS url must be provided"
    await botapi.fail_next("setWebhook", error_code=400, description=refusal)
    status, out, err = await croupier(capsys, "bot", "set-webhook")
    assert status == 1 and out == ""
    assert "setWebhook failed" in err and "HTTPS url must be provided" in err
    assert TEST_BOT_TOKEN.split(":")[1] not in err
