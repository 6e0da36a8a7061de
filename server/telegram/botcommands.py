"""The bot's commands in its private chats: ``/start``, ``/balance``, ``/paysupport``, ``/terms``.

- ``/start``: a button opening the Mini App (an inline keyboard ``web_app`` button to
  ``CROUPIER_WEBAPP_URL``), and the user becomes reachable for notifications
  (:func:`.recipients.mark_reachable`: pressing /start allows the bot to message them);
- ``/balance``: the wallet's balance;
- ``/paysupport``: Telegram requires bots that take payments to answer it (``CROUPIER_PAYSUPPORT_TEXT``);
- ``/terms``: the terms (``CROUPIER_TERMS_TEXT``), which say that chips bought with Stars are not withdrawable.

Answers are sent with ``sendMessage`` (aiogram), not as a method in the webhook's HTTP answer: long
polling (:mod:`.polling`) has no HTTP answer to carry one, and a call of our own shows its errors
(a 429, a blocked bot) where an answer inside the webhook reply would fail unseen. The update is
recorded after the answer is sent, with the user's reachability in the same transaction: a
re-delivered update is not answered twice; one whose answer could not be sent (the Bot API did not
answer) is not recorded, and Telegram's re-delivery answers it. An answer Telegram refuses (flood
control's 429 for a user repeating commands, a 403 from a user who blocked the bot) is dropped: the
user may type the command again. Commands in groups, other bots' commands and plain text are left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
from aiogram import Bot
from aiogram.exceptions import AiogramError, TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message, WebAppInfo

from ..db import UNAVAILABLE_ERRORS
from ..db.transactions import Connection, in_transaction
from ..ledger import Ledger
from .bot import redacted
from .errors import BotApiUnavailable, CashierUnavailable
from .recipients import Source, mark_reachable
from .updates import handled, record_update

log = logging.getLogger(__name__)

COMMANDS = ("start", "balance", "paysupport", "terms")
"""The commands the bot answers, in the order of its menu."""
START_TEXT = "Welcome to the tables! Tap the button below to open the app."
NO_APP_TEXT = "Welcome! The app is not open yet: its address has not been configured."
BUTTON_TEXT = "Play"


@dataclass(frozen=True, slots=True)
class BotTexts:
    """What the commands answer with (see :class:`server.settings.Settings`)."""

    webapp_url: str | None
    """The Mini App's HTTPS URL for ``/start``'s button; None: ``/start`` answers without one."""
    paysupport: str
    terms: str


def command_of(message: Message) -> str | None:
    """The command a message in a private chat starts with (``/balance``, ``/balance@bot extra``) if it
    is one the bot answers, lowercased and without the ``/``; else None."""
    text = message.text
    if message.chat.type != "private" or message.from_user is None or not text or not text.startswith("/"):
        return None
    name = text[1:].split(maxsplit=1)[0].split("@", 1)[0].lower() if len(text) > 1 else ""
    return name if name in COMMANDS else None


class BotCommands:
    """Answers the bot's commands for one bot, over one pool and ledger."""

    def __init__(self, pool: asyncpg.Pool, ledger: Ledger, bot: Bot, texts: BotTexts, *, bot_id: int) -> None:
        self._pool = pool
        self._ledger = ledger
        self._bot = bot
        self._texts = texts
        self._bot_id = bot_id

    async def answer(self, update_id: int, message: Message, command: str) -> None:
        """Answer ``command`` (from :func:`command_of`) in the message's chat, once per update: see the
        module's docstring. Raises :class:`~.errors.BotApiUnavailable` (the answer was not sent: the update
        is not recorded) or :class:`~.errors.CashierUnavailable` (PostgreSQL)."""
        user = message.from_user
        assert user is not None, "command_of() takes private messages from a user only"
        seen = await in_transaction(self._pool, lambda conn: handled(conn, self._bot_id, update_id),
                                    unavailable=CashierUnavailable)  # fmt: skip
        if seen:
            return
        text, markup = await self._reply(command, user.id)
        blocked = False
        try:
            await self._bot.send_message(chat_id=message.chat.id, text=text, reply_markup=markup)
        except (TelegramRetryAfter, TelegramForbiddenError, TelegramBadRequest) as exc:
            blocked = isinstance(exc, TelegramForbiddenError)
            log.info("/%s in chat %d not answered: %s", command, message.chat.id, self._describe(exc))
        except AiogramError as exc:
            log.warning("/%s in chat %d: sendMessage failed: %s", command, message.chat.id, self._describe(exc))
            raise BotApiUnavailable("sendMessage failed") from None

        async def record(conn: Connection) -> None:
            if await record_update(conn, self._bot_id, update_id, "command") and command == "start" and not blocked:
                await mark_reachable(conn, user.id, source=Source.START, language_code=user.language_code)

        await in_transaction(self._pool, record, unavailable=CashierUnavailable)

    async def _reply(self, command: str, user_id: int) -> tuple[str, InlineKeyboardMarkup | None]:
        """The text (and keyboard) answering ``command`` from ``user_id``."""
        texts = self._texts
        if command == "start":
            if texts.webapp_url is None:
                return NO_APP_TEXT, None
            button = InlineKeyboardButton(text=BUTTON_TEXT, web_app=WebAppInfo(url=texts.webapp_url))
            return START_TEXT, InlineKeyboardMarkup(inline_keyboard=[[button]])
        if command == "balance":
            try:
                wallet = await self._ledger.balance(user_id)
            except UNAVAILABLE_ERRORS as exc:
                raise CashierUnavailable(f"database unavailable: {type(exc).__name__}") from exc
            return f"Your balance: {wallet.balance:,} chips.", None
        if command == "paysupport":
            return texts.paysupport, None
        return texts.terms, None

    def _describe(self, exc: AiogramError) -> str:
        """A Bot API error for the log, without the token."""
        return redacted(f"{type(exc).__name__}: {exc}".replace("\n", " "), self._bot.token)
