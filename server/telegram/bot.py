"""The Bot API client: an aiogram :class:`~aiogram.Bot` for the node's token and configured server.

Every Bot API call Croupier makes goes through it (typed methods, typed answers and errors). The base
URL is ``CROUPIER_TELEGRAM_API_URL`` (Telegram's own server by default, else a self-hosted Bot API
server or the test suite's); with ``CROUPIER_TELEGRAM_ENV=test`` the calls go to Telegram's test
environment, whose methods live under ``/bot<token>/test/<method>`` (aiogram's ``TEST`` server builds
the same paths, on api.telegram.org only). Nothing is sent until the first call: building a bot makes
no request. The token is part of every method's URL: it is never logged (see :func:`redacted`).
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

API_TIMEOUT = 10.0
"""Seconds a Bot API call may take before it fails as a network error."""


def api_server(base_url: str, env: str = "production") -> TelegramAPIServer:
    """Where the Bot API methods of ``base_url`` live: ``/bot<token>/<method>``, or in Telegram's test
    environment (``env == "test"``) ``/bot<token>/test/<method>``."""
    if env != "test":
        return TelegramAPIServer.from_base(base_url, is_local=False)
    base = base_url.rstrip("/")
    return TelegramAPIServer(
        base=f"{base}/bot{{token}}/test/{{method}}",
        file=f"{base}/file/bot{{token}}/test/{{path}}",
        is_local=False,
    )


def create_bot(token: str, *, api_url: str, env: str = "production", timeout: float = API_TIMEOUT) -> Bot:
    """A bot for ``token`` calling the Bot API at ``api_url`` (in ``env``). Close ``bot.session`` after use."""
    return Bot(token, session=AiohttpSession(api=api_server(api_url, env), timeout=timeout))


def redacted(text: str, token: str) -> str:
    """``text`` (an error message, a URL) with the bot token, and its secret half alone, replaced by ``<token>``."""
    secret = token.partition(":")[2]
    text = text.replace(token, "<token>")
    return text.replace(secret, "<token>") if secret else text
