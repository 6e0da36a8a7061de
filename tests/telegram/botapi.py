"""A Telegram Bot API test server: a real HTTP server on loopback that answers like Telegram does.

The suite's Telegram tests point a real client (aiogram with
``TelegramAPIServer.from_base(api.base_url)``, or plain httpx) at this server and talk to it over real
connections; nothing is mocked in-process. It runs as its own process::

    python -m tests.telegram.botapi --token 123:ABC --port 0 --ready-file /tmp/ready.json

and writes ``{"port": N, "pid": P}`` to the ready file (and a ``BOTAPI_READY port=N`` line on stdout) once
it listens. :class:`BotApiServer` starts it, waits for that, and stops it by its PID.

What it implements (``/bot<token>/<method>``, GET or POST; parameters as a JSON body,
application/x-www-form-urlencoded, multipart/form-data and the query string; method names are
case-insensitive as in Telegram's own server):

- the envelope ``{"ok": true, "result": ...}`` / ``{"ok": false, "error_code": N, "description": "..."}``
  with ``parameters.retry_after`` on 429; 401 for a wrong token, 404 for an unknown method;
- getMe; sendMessage (a Message with message_id, from, chat, date, text); createInvoiceLink for Telegram
  Stars only (currency ``XTR``, no provider token, exactly one price of whole stars; the link is
  ``https://t.me/$<slug>``); answerPreCheckoutQuery; refundStarPayment; getStarTransactions (StarTransaction
  objects: ``source`` for payments, ``receiver`` for refunds; in chronological order as the documentation
  says, or newest first with ``--star-transactions-order newest-first``); getMyStarBalance;
  setWebhook / deleteWebhook / getWebhookInfo; getUpdates (offset confirmation, negative offsets, limit,
  long polling, allowed_updates, the two 409 conflicts); setChatMenuButton / getChatMenuButton;
  setMyCommands / getMyCommands / deleteMyCommands;
- flood control on sendMessage: per bot (30 a second), per private chat (1 a second) and per group
  (20 a minute), as sliding windows; over a limit, 429 ``Too Many Requests: retry after N``. The limits
  and windows are flags;
- updates with increasing ``update_id``\\ s: queued for getUpdates, or POSTed to a webhook (only a
  loopback one) with ``X-Telegram-Bot-Api-Secret-Token``, retried on a non-2xx answer or a connection error,
  in order; a webhook answer that names a ``method`` is executed, as Telegram does;
- a Stars checkout: ``pre_checkout_query`` → the bot's answer within ``--checkout-timeout`` seconds →
  ``message.successful_payment`` and a StarTransaction; refunds by the bot or from Telegram's side
  (``message.refunded_payment``);
- a record of every call (method, parameters as parsed, time, HTTP status, the answer) and a control API
  under ``/_control/`` (see :func:`control_routes`).

What it does not: files and media, inline mode, chats and members, editing or deleting messages,
payments in real currencies or with shipping, subscriptions beyond accepting ``subscription_period``,
HTML/Markdown entity parsing (only ``parse_mode`` is checked), webhook certificates and parallel
webhook connections (updates go one at a time), webhooks to any address that is not loopback (it never
sends a packet anywhere else; Telegram itself would insist on HTTPS), Telegram's undocumented
flood-control nuances (short bursts it tolerates, limits on other methods), persistence (all state is in
memory) and more than one bot per process.

Bot-initiated refunds: the Bot API documents ``Message.refunded_payment`` only as "a service message
about a refunded payment" and refundStarPayment only as "Returns True on success"; nothing says the bot
gets a ``refunded_payment`` update for a refund it made itself (the underlying MTProto service message,
messageActionPaymentRefunded, is "received by both users and bots", but for the bot it is its own
outgoing message). So by default only a refund from Telegram's side (``/_control/refund``) delivers a
``refunded_payment`` message; ``--refund-message-on-bot-refund`` makes a refundStarPayment deliver one
too, for bots that must cope with either.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.message
import email.utils
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JSON = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOKEN = "123456789:AAHtest-token-for-the-botapi-server_x"
WEBHOOK_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
INVOICE_LINK_PREFIX = "https://t.me/$"
STARS = "XTR"
# Without allowed_updates (or with an empty list) Telegram sends every kind but these.
NOT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
MESSAGE_MAX_LENGTH = 4096
PARSE_MODES = frozenset({"HTML", "Markdown", "MarkdownV2"})
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
BOT_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
SUBSCRIPTION_PERIOD = 2592000

WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
)
POLL_CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
POLL_TERMINATED_BY_WEBHOOK = "Conflict: terminated by setWebhook request"
CHAT_STATES = {
    "blocked": (403, "Forbidden: bot was blocked by the user"),
    "deactivated": (403, "Forbidden: user is deactivated"),
    "not_found": (400, "Bad Request: chat not found"),
}
DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


# ----------------------------------------------------------------------------------------- envelope


class ApiError(Exception):
    """A Bot API error answer: its HTTP status is its ``error_code``."""

    def __init__(self, code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JSON:
        """The ``{"ok": false, ...}`` envelope."""
        return error_body(self.code, self.description, self.retry_after)


def error_body(code: int, description: str, retry_after: int | None = None) -> JSON:
    """Telegram's error envelope; ``parameters.retry_after`` only with a 429."""
    body: JSON = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return body


def too_many_requests(retry_after: int) -> ApiError:
    """The flood-control error, as Telegram words it."""
    return ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)


@dataclass(frozen=True)
class Reply:
    """A successful result with the optional ``description`` some methods carry (setWebhook...)."""

    result: Any
    description: str | None = None


# ------------------------------------------------------------------------------------------ parsing


def _header_param(value: str, name: str) -> str | None:
    """Parameter ``name`` of a structured header value (``boundary`` of a Content-Type, ``name`` of a
    Content-Disposition), RFC 2231 encodings decoded."""
    header = email.message.Message()
    header["x"] = value
    param = header.get_param(name, header="x")
    if param is None:
        return None
    return email.utils.collapse_rfc2231_value(param)


def parse_multipart(body: bytes, content_type: str) -> JSON:
    """The fields of a multipart/form-data body: text fields as str, files as a short description."""
    boundary = _header_param(content_type, "boundary")
    if not boundary:
        raise ApiError(400, "Bad Request: can't parse multipart/form-data: no boundary")
    fields_: JSON = {}
    # Every delimiter but the first follows a CRLF; prepend one so that all of them do.
    for chunk in (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, value = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            key, _, text = line.decode("utf-8", "replace").partition(":")
            headers[key.strip().lower()] = text.strip()
        disposition = headers.get("content-disposition", "")
        name = _header_param(disposition, "name")
        if name is None:
            continue
        filename = _header_param(disposition, "filename")
        if filename is None:
            fields_[name] = value.decode("utf-8", "replace")
        else:
            fields_[name] = {"filename": filename, "size": len(value), "content_type": headers.get("content-type")}
    return fields_


def parse_body(content_type: str, body: bytes) -> JSON:
    """Parameters from a request (or webhook answer) body of the given Content-Type."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        if not body.strip():
            return {}
        try:
            parsed = json.loads(body)
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse JSON object") from None
        if not isinstance(parsed, dict):
            raise ApiError(400, "Bad Request: JSON object expected")
        return parsed
    if media == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if media == "multipart/form-data":
        return parse_multipart(body, content_type)
    return {}


class Params:
    """A method's parameters as received, read with Telegram's leniency: form fields are strings, and a
    non-string value may come JSON-encoded (aiogram sends numbers, booleans and objects so)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = dict(raw)

    def has(self, name: str) -> bool:
        """Whether ``name`` was given (an empty string counts as not given, as in Telegram)."""
        return self.raw.get(name) not in (None, "")

    def string(self, name: str, default: str = "") -> str:
        """A string parameter; numbers are accepted and turned into strings."""
        value = self.raw.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        raise ApiError(400, f'Bad Request: field "{name}" must be of type String')

    def integer(self, name: str, default: int | None = None) -> int | None:
        """An integer parameter, ``default`` when absent."""
        if not self.has(name):
            return default
        value = self.raw[name]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return int(value.strip())
        raise ApiError(400, f'Bad Request: field "{name}" must be a valid Number')

    def boolean(self, name: str, default: bool = False) -> bool:
        """A boolean parameter: true/false, 1/0, in any case."""
        if not self.has(name):
            return default
        value = self.raw[name]
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
            return value.strip().lower() in ("true", "1")
        raise ApiError(400, f'Bad Request: field "{name}" must be of type Boolean')

    def decoded(self, name: str) -> Any:
        """An object or array parameter, given natively (JSON body) or JSON-encoded (a form field)."""
        value = self.raw.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
        return value

    def chat_id(self) -> int | str:
        """``chat_id``: an integer, or ``@username`` of a public chat."""
        if not self.has("chat_id"):
            raise ApiError(400, "Bad Request: chat_id is empty")
        value = self.raw["chat_id"]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("@") and len(text) > 1:
                return text
            with contextlib.suppress(ValueError):
                return int(text)
        raise ApiError(400, "Bad Request: chat not found")


# --------------------------------------------------------------------------------------- flood control


@dataclass(frozen=True)
class RateLimits:
    """Flood-control limits: at most ``*_limit`` messages in any ``*_window`` seconds. The defaults are
    Telegram's: 30 a second per bot, 1 a second per private chat, 20 a minute per group."""

    global_limit: int = 30
    global_window: float = 1.0
    private_limit: int = 1
    private_window: float = 1.0
    group_limit: int = 20
    group_window: float = 60.0

    def args(self) -> list[str]:
        """These limits as the server's command-line flags."""
        out: list[str] = []
        for f in fields(self):
            out += [f"--rate-{f.name.replace('_', '-')}", str(getattr(self, f.name))]
        return out


class SlidingWindow:
    """The times of the messages let through in the last ``seconds``; full at ``limit``."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.stamps: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more message fits (0 when it fits now)."""
        while self.stamps and self.stamps[0] <= now - self.seconds:
            self.stamps.popleft()
        if len(self.stamps) < self.limit:
            return 0.0
        return self.stamps[len(self.stamps) - self.limit] + self.seconds - now


class FloodControl:
    """Telegram's limits on sending: one window for the bot, one per chat (private or group)."""

    def __init__(self, limits: RateLimits, enabled: bool = True) -> None:
        self.limits = limits
        self.enabled = enabled
        self.reset()

    def reset(self) -> None:
        """Forget every message sent so far."""
        self.everything = SlidingWindow(self.limits.global_limit, self.limits.global_window)
        self.chats: dict[int | str, SlidingWindow] = {}

    def take(self, chat: int | str) -> None:
        """Count one message to ``chat``, or raise 429 (counting nothing) if a limit is reached."""
        if not self.enabled:
            return
        window = self.chats.get(chat)
        if window is None:
            private = isinstance(chat, int) and chat > 0
            limit, seconds = (
                (self.limits.private_limit, self.limits.private_window)
                if private
                else (self.limits.group_limit, self.limits.group_window)
            )
            window = self.chats[chat] = SlidingWindow(limit, seconds)
        now = time.monotonic()
        wait = max(self.everything.wait(now), window.wait(now))
        if wait > 0:
            raise too_many_requests(max(1, math.ceil(wait)))
        self.everything.stamps.append(now)
        window.stamps.append(now)


# ------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    """The server's settings (its command-line flags)."""

    token: str = DEFAULT_TOKEN
    bot_username: str = "croupier_test_bot"
    bot_first_name: str = "Croupier Test Bot"
    checkout_timeout: float = 10.0
    rate_limits: RateLimits = field(default_factory=RateLimits)
    rate_limits_enabled: bool = True
    webhook_attempts: int = 3
    webhook_retry_delay: float = 0.1
    webhook_timeout: float = 10.0
    first_update_id: int = 100
    star_transactions_order: Literal["chronological", "newest-first"] = "chronological"
    refund_message_on_bot_refund: bool = False


# --------------------------------------------------------------------------------------------- state


@dataclass
class Invoice:
    """An invoice link made by createInvoiceLink."""

    slug: str
    url: str
    title: str
    description: str
    payload: str
    amount: int
    label: str
    created: int
    subscription_period: int | None = None
    payments: int = 0

    def as_json(self) -> JSON:
        """This invoice for the control API."""
        return {
            "slug": self.slug,
            "url": self.url,
            "title": self.title,
            "description": self.description,
            "payload": self.payload,
            "currency": STARS,
            "amount": self.amount,
            "label": self.label,
            "created": self.created,
            "subscription_period": self.subscription_period,
            "payments": self.payments,
        }


@dataclass
class Payment:
    """A successful Stars payment."""

    charge_id: str
    provider_charge_id: str
    user: JSON
    amount: int
    payload: str
    invoice_slug: str
    date: int
    refunded: bool = False

    def as_json(self) -> JSON:
        """This payment for the control API."""
        return {
            "charge_id": self.charge_id,
            "provider_charge_id": self.provider_charge_id,
            "user": self.user,
            "amount": self.amount,
            "payload": self.payload,
            "invoice_slug": self.invoice_slug,
            "date": self.date,
            "refunded": self.refunded,
        }


@dataclass(eq=False)
class Checkout:
    """A pre-checkout query waiting for the bot's answer: the future gets ``(ok, error_message)``, or None
    when the time to answer is over."""

    query_id: str
    invoice: Invoice
    user: JSON
    answer: asyncio.Future[tuple[bool, str | None] | None]


@dataclass
class Webhook:
    """The webhook set by setWebhook, and how its deliveries went."""

    url: str
    secret_token: str | None
    max_connections: int
    ip_address: str | None
    last_error_date: int | None = None
    last_error_message: str | None = None


@dataclass(eq=False)
class Queued:
    """An update not yet confirmed (getUpdates) or delivered (webhook). ``again`` marks a re-delivery that
    outlives the next offset confirmation once."""

    update: JSON
    again: bool = False

    @property
    def update_id(self) -> int:
        """The update's ``update_id``."""
        update_id: int = self.update["update_id"]
        return update_id


@dataclass
class ForcedError:
    """An error the next call of a method answers with (``/_control/fail``)."""

    code: int
    description: str
    retry_after: int | None


class Signal:
    """Wakes every waiter at each :meth:`fire` (an Event renewed on each firing)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        """Wake everyone waiting now."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None = None) -> None:
        """Wait for the next :meth:`fire`, at most ``timeout`` seconds."""
        event = self._event
        if timeout is None:
            await event.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


Handler = Callable[[Params], Awaitable[Any]]


class BotApi:
    """One bot's state and the methods it answers. Everything lives in memory, in one event loop."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.bot_id = int(options.token.split(":", 1)[0]) if options.token.split(":", 1)[0].isdigit() else 1
        self.bot_user: JSON = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": options.bot_first_name,
            "username": options.bot_username,
        }
        self.flood = FloodControl(options.rate_limits, options.rate_limits_enabled)
        self.http: httpx.AsyncClient | None = None
        self.next_update_id = options.first_update_id
        self.next_query_id = secrets.randbelow(10**12) * 1000 + 1
        self.calls_changed = Signal()
        self.updates_changed = Signal()
        self.long_polls = 0  # getUpdates calls in progress
        self.methods: dict[str, tuple[str, Handler]] = {
            name.lower(): (name, handler)
            for name, handler in {
                "getMe": self.get_me,
                "sendMessage": self.send_message,
                "createInvoiceLink": self.create_invoice_link,
                "answerPreCheckoutQuery": self.answer_pre_checkout_query,
                "refundStarPayment": self.refund_star_payment,
                "getStarTransactions": self.get_star_transactions,
                "getMyStarBalance": self.get_my_star_balance,
                "setWebhook": self.set_webhook,
                "deleteWebhook": self.delete_webhook,
                "getWebhookInfo": self.get_webhook_info,
                "getUpdates": self.get_updates,
                "setChatMenuButton": self.set_chat_menu_button,
                "getChatMenuButton": self.get_chat_menu_button,
                "setMyCommands": self.set_my_commands,
                "getMyCommands": self.get_my_commands,
                "deleteMyCommands": self.delete_my_commands,
            }.items()
        }
        self.reset()

    def reset(self) -> None:
        """Back to a fresh bot: no calls, invoices, payments, webhook, queued updates or chat states. The
        update_id counter goes on (as Telegram's does)."""
        for checkout in getattr(self, "checkouts", {}).values():
            if not checkout.answer.done():
                checkout.answer.set_result(None)
        self.calls: list[JSON] = []
        self.next_seq = 1
        self.users: dict[int, JSON] = {}
        self.chat_states: dict[int | str, str] = {}
        self.public_chats: dict[str, int] = {}
        self.forced: dict[str, deque[ForcedError]] = {}
        self.message_ids: dict[int | str, int] = {}
        self.invoices: dict[str, Invoice] = {}
        self.payments: dict[str, Payment] = {}
        self.transactions: list[JSON] = []
        self.checkouts: dict[str, Checkout] = {}
        self.webhook: Webhook | None = None
        self.allowed_updates: list[str] = []
        self.pending: list[Queued] = []
        self.history: dict[int, JSON] = {}
        self.filtered: list[JSON] = []
        self.deliveries: list[JSON] = []
        self.poll_generation = 0
        self.commands: dict[tuple[str, str], list[JSON]] = {}
        self.menu_buttons: dict[int | None, JSON] = {}
        self.flood.reset()
        self.updates_changed.fire()

    # ------------------------------------------------------------------------------------ dispatch

    async def dispatch(
        self, name: str, raw: Mapping[str, Any], *, http_method: str, via: str, content_type: str | None = None
    ) -> tuple[int, JSON]:
        """Run Bot API method ``name`` on ``raw`` parameters; record the call; return (status, envelope)."""
        started = time.time()
        entry = self.methods.get(name.lower())
        method = entry[0] if entry else name
        try:
            if entry is None:
                raise ApiError(404, "Not Found: method not found")
            forced = self._pop_forced(entry[0])
            if forced is not None:
                raise ApiError(forced.code, forced.description, retry_after=forced.retry_after)
            outcome = await entry[1](Params(raw))
            reply = outcome if isinstance(outcome, Reply) else Reply(outcome)
            body: JSON = {"ok": True, "result": reply.result}
            if reply.description is not None:
                body["description"] = reply.description
            status = 200
        except ApiError as exc:
            status, body = exc.code, exc.body()
        self.record(
            method, raw, started=started, status=status, response=body, http_method=http_method, via=via,
            content_type=content_type,
        )  # fmt: skip
        return status, body

    def record(
        self,
        method: str,
        raw: Mapping[str, Any],
        *,
        started: float,
        status: int,
        response: JSON,
        http_method: str,
        via: str,
        content_type: str | None = None,
    ) -> None:
        """Keep one call for the tests to read."""
        self.calls.append(
            {
                "seq": self.next_seq,
                "method": method,
                "params": dict(raw),
                "time": started,
                "duration": time.time() - started,
                "status": status,
                "response": response,
                "http_method": http_method,
                "content_type": content_type,
                "via": via,
            }
        )
        self.next_seq += 1
        self.calls_changed.fire()

    def _pop_forced(self, method: str) -> ForcedError | None:
        for key in (method.lower(), "*"):
            queue = self.forced.get(key)
            if queue:
                return queue.popleft()
        return None

    # ---------------------------------------------------------------------------- users and chats

    def user(self, spec: Any) -> JSON:
        """A User object from a control call's ``user`` (an id, or a partial User with ``id``), kept so
        later chats with that user show the same names."""
        if isinstance(spec, bool) or not isinstance(spec, int | dict):
            raise ValueError("user must be an id or an object with an id")
        given: JSON = {"id": spec} if isinstance(spec, int) else dict(spec)
        user_id = given.get("id")
        if not isinstance(user_id, int) or user_id <= 0:
            raise ValueError("user.id must be a positive integer")
        user = {"id": user_id, "is_bot": False, "first_name": f"User {user_id}", **self.users.get(user_id, {})}
        user.update(given)
        self.users[user_id] = user
        return user

    def chat(self, chat_id: int | str) -> JSON:
        """The Chat object of ``chat_id``: private for a positive id, a group or supergroup for a negative
        one, a channel for an @username."""
        if isinstance(chat_id, str):
            numeric = self.public_chats.setdefault(chat_id.lower(), -1000000000000 - len(self.public_chats) - 1)
            return {"id": numeric, "type": "channel", "title": chat_id[1:], "username": chat_id[1:]}
        if chat_id > 0:
            user = self.users.get(chat_id, {"first_name": f"User {chat_id}"})
            chat: JSON = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
            for key in ("last_name", "username"):
                if key in user:
                    chat[key] = user[key]
            return chat
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": f"Group {chat_id}"}

    def next_message_id(self, chat_id: int | str) -> int:
        """The next message id in ``chat_id`` (ids are per chat, shared by both sides of a dialog)."""
        self.message_ids[chat_id] = self.message_ids.get(chat_id, 0) + 1
        return self.message_ids[chat_id]

    def user_message(self, user: JSON, **content: Any) -> JSON:
        """A message from ``user`` in the private chat with the bot."""
        return {
            "message_id": self.next_message_id(user["id"]),
            "from": user,
            "chat": self.chat(user["id"]),
            "date": int(time.time()),
            **content,
        }

    # ---------------------------------------------------------------------------------- updates

    def enqueue(self, body: Mapping[str, Any]) -> int | None:
        """Give ``body`` (an update without its id) the next update_id and queue it; None if the bot's
        allowed_updates leave its kind out (Telegram does not make such updates)."""
        kinds = [key for key in body if key != "update_id"]
        if len(kinds) != 1:
            raise ValueError("an update has exactly one field besides update_id")
        if not self._allowed(kinds[0]):
            self.filtered.append(dict(body))
            return None
        update_id = self.next_update_id
        self.next_update_id += 1
        update: JSON = {"update_id": update_id, **body}
        self.history[update_id] = update
        self.pending.append(Queued(update))
        self.updates_changed.fire()
        return update_id

    def redeliver(self, update_id: int) -> None:
        """Send update ``update_id`` again, same id (as Telegram does when it thinks a delivery failed)."""
        self.pending.append(Queued(self.history[update_id], again=True))
        self.updates_changed.fire()

    def _allowed(self, kind: str) -> bool:
        if self.allowed_updates:
            return kind in self.allowed_updates
        return kind not in NOT_BY_DEFAULT

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            kept = [q for q in self.pending if q.update_id >= offset or q.again]
        elif offset < 0:
            kept = self.pending[offset:]
        else:
            return
        for queued in kept:
            queued.again = False
        self.pending = kept

    def _drop_pending(self) -> None:
        self.pending = []
        self.updates_changed.fire()

    async def webhook_worker(self) -> None:
        """Deliver queued updates to the webhook, in order, one at a time, while one is set."""
        while True:
            hook = self.webhook
            if hook is None or not self.pending:
                await self.updates_changed.wait()
                continue
            queued = self.pending[0]
            if await self._deliver(hook, queued.update):
                with contextlib.suppress(ValueError):
                    self.pending.remove(queued)

    async def _deliver(self, hook: Webhook, update: JSON) -> bool:
        """POST ``update`` to ``hook``, retrying; True once it is done with (delivered, or given up on after
        the last attempt), False if the webhook changed meanwhile (the update stays queued)."""
        assert self.http is not None
        headers = {"Content-Type": "application/json"}
        if hook.secret_token:
            headers[WEBHOOK_SECRET_HEADER] = hook.secret_token
        content = json.dumps(update, ensure_ascii=False).encode()
        for attempt in range(1, self.options.webhook_attempts + 1):
            if self.webhook is not hook:
                return False
            status: int | None = None
            error: str | None = None
            response: httpx.Response | None = None
            try:
                response = await self.http.post(hook.url, content=content, headers=headers)
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"Wrong response from the webhook: {status} {response.reason_phrase}".rstrip()
            except httpx.HTTPError as exc:
                error = f"Connection error: {type(exc).__name__}: {exc}".rstrip(": ")
            last = attempt == self.options.webhook_attempts
            self.deliveries.append(
                {
                    "update_id": update["update_id"],
                    "attempt": attempt,
                    "status": status,
                    "error": error,
                    "time": time.time(),
                    "url": hook.url,
                    "dropped": error is not None and last,
                }
            )
            self.calls_changed.fire()
            if error is None and response is not None:
                await self._webhook_answer(response)
                return True
            hook.last_error_date = int(time.time())
            hook.last_error_message = error
            if not last:
                await asyncio.sleep(self.options.webhook_retry_delay)
        return True

    async def _webhook_answer(self, response: httpx.Response) -> None:
        """Run the method a webhook answer names, if it names one (its result goes nowhere)."""
        try:
            params = parse_body(response.headers.get("content-type", ""), response.content)
        except ApiError:
            return
        method = params.pop("method", None)
        if isinstance(method, str) and method:
            content_type = response.headers.get("content-type")
            await self.dispatch(method, params, http_method="WEBHOOK", via="webhook_reply", content_type=content_type)

    # ----------------------------------------------------------------------------------- methods

    async def get_me(self, p: Params) -> JSON:
        """getMe: the bot's User."""
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _check_chat(self, chat_id: int | str) -> None:
        state = self.chat_states.get(chat_id)
        if state in CHAT_STATES:
            code, description = CHAT_STATES[state]
            raise ApiError(code, description)

    async def send_message(self, p: Params) -> JSON:
        """sendMessage: checked, flood-controlled, answered with the sent Message."""
        chat_id = p.chat_id()
        text = p.string("text")
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > MESSAGE_MAX_LENGTH:
            raise ApiError(400, "Bad Request: message is too long")
        parse_mode = p.string("parse_mode")
        if parse_mode and parse_mode not in PARSE_MODES:
            raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
        markup = p.decoded("reply_markup") if p.has("reply_markup") else None
        if markup is not None and not isinstance(markup, dict):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        self._check_chat(chat_id)
        self.flood.take(chat_id)
        message: JSON = {
            "message_id": self.next_message_id(chat_id),
            "from": self.bot_user,
            "chat": self.chat(chat_id),
            "date": int(time.time()),
            "text": text,
        }
        if markup and "inline_keyboard" in markup:
            message["reply_markup"] = {"inline_keyboard": markup["inline_keyboard"]}
        return message

    async def create_invoice_link(self, p: Params) -> str:
        """createInvoiceLink for Telegram Stars: one price of whole stars, no provider token."""
        title, description, payload = p.string("title"), p.string("description"), p.string("payload")
        for name, value, most in (("title", title, 32), ("description", description, 255)):
            if not value:
                raise ApiError(400, f'Bad Request: parameter "{name}" is required')
            if len(value) > most:
                raise ApiError(400, f"Bad Request: invoice {name} must be 1-{most} characters long")
        if not payload or len(payload.encode()) > 128:
            raise ApiError(400, "Bad Request: INVOICE_PAYLOAD_INVALID")
        currency = p.string("currency")
        if not currency:
            raise ApiError(400, 'Bad Request: parameter "currency" is required')
        if currency != STARS:
            # No provider token and not XTR is what Telegram answers this way; this server has no providers.
            raise ApiError(400, "Bad Request: PAYMENT_PROVIDER_INVALID")
        if p.string("provider_token"):
            raise ApiError(400, "Bad Request: PAYMENT_PROVIDER_INVALID")
        if not p.has("prices"):
            raise ApiError(400, 'Bad Request: parameter "prices" is required')
        prices = p.decoded("prices")
        if not isinstance(prices, list) or not all(isinstance(price, dict) for price in prices):
            raise ApiError(400, "Bad Request: can't parse prices JSON object")
        if len(prices) != 1:
            raise ApiError(400, "Bad Request: STARS_INVOICE_INVALID")
        label, amount = prices[0].get("label"), prices[0].get("amount")
        if not isinstance(label, str) or not label:
            raise ApiError(400, 'Bad Request: field "label" must be of type String')
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ApiError(400, 'Bad Request: field "amount" must be a valid Number')
        if amount <= 0:
            raise ApiError(400, "Bad Request: STARS_INVOICE_INVALID")
        if p.has("max_tip_amount") or p.has("suggested_tip_amounts"):
            raise ApiError(400, "Bad Request: tips are not supported in Telegram Stars invoices")
        period = p.integer("subscription_period")
        if period is not None and period != SUBSCRIPTION_PERIOD:
            raise ApiError(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID")
        slug = secrets.token_urlsafe(18)
        invoice = Invoice(
            slug=slug,
            url=INVOICE_LINK_PREFIX + slug,
            title=title,
            description=description,
            payload=payload,
            amount=amount,
            label=label,
            created=int(time.time()),
            subscription_period=period,
        )
        self.invoices[slug] = invoice
        return invoice.url

    async def answer_pre_checkout_query(self, p: Params) -> bool:
        """answerPreCheckoutQuery: settles a waiting checkout; a late, repeated or unknown id is invalid."""
        query_id = p.string("pre_checkout_query_id")
        if not p.has("ok"):
            raise ApiError(400, 'Bad Request: parameter "ok" is required')
        ok = p.boolean("ok")
        error_message = p.string("error_message") or None
        if not ok and not error_message:
            raise ApiError(400, 'Bad Request: parameter "error_message" is required if "ok" is false')
        checkout = self.checkouts.get(query_id)
        if checkout is None or checkout.answer.done():
            raise ApiError(400, "Bad Request: QUERY_ID_INVALID")
        checkout.answer.set_result((ok, None if ok else error_message))
        return True

    def _transaction(self, payment: Payment, *, refund: bool) -> JSON:
        partner = {
            "type": "user",
            "transaction_type": "invoice_payment",
            "user": payment.user,
            "invoice_payload": payment.payload,
        }
        return {
            "id": payment.charge_id,
            "amount": payment.amount,
            "date": int(time.time()) if refund else payment.date,
            "receiver" if refund else "source": partner,
        }

    def refund(self, payment: Payment, *, message: bool) -> int | None:
        """Refund ``payment``: a refund StarTransaction, and with ``message`` a ``refunded_payment`` message
        to the bot; returns that message's update_id."""
        payment.refunded = True
        self.transactions.append(self._transaction(payment, refund=True))
        if not message:
            return None
        refunded = {
            "currency": STARS,
            "total_amount": payment.amount,
            "invoice_payload": payment.payload,
            "telegram_payment_charge_id": payment.charge_id,
            "provider_payment_charge_id": payment.provider_charge_id,
        }
        return self.enqueue({"message": self.user_message(payment.user, refunded_payment=refunded)})

    async def refund_star_payment(self, p: Params) -> bool:
        """refundStarPayment: the payer's id and the charge id of a payment not yet refunded."""
        user_id = p.integer("user_id")
        if user_id is None or user_id <= 0:
            raise ApiError(400, "Bad Request: invalid user_id specified")
        charge_id = p.string("telegram_payment_charge_id")
        if not charge_id:
            raise ApiError(400, "Bad Request: CHARGE_ID_EMPTY")
        payment = self.payments.get(charge_id)
        if payment is None or payment.user["id"] != user_id:
            raise ApiError(400, "Bad Request: CHARGE_NOT_FOUND")
        if payment.refunded:
            raise ApiError(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        self.refund(payment, message=self.options.refund_message_on_bot_refund)
        return True

    async def get_star_transactions(self, p: Params) -> JSON:
        """getStarTransactions: offset and limit (clamped to 1-100, as Telegram's server does)."""
        offset = max(0, p.integer("offset", 0) or 0)
        limit = min(100, max(1, p.integer("limit", 100) or 100))
        ordered = (
            self.transactions if self.options.star_transactions_order == "chronological" else self.transactions[::-1]
        )
        return {"transactions": ordered[offset : offset + limit]}

    async def get_my_star_balance(self, p: Params) -> JSON:
        """getMyStarBalance: payments less refunds (a StarAmount)."""
        balance = sum(t["amount"] if "source" in t else -t["amount"] for t in self.transactions)
        return {"amount": balance}

    async def set_webhook(self, p: Params) -> Reply:
        """setWebhook: loopback URLs only; an empty url removes the webhook."""
        url = p.string("url")
        allowed = self._allowed_updates(p) if p.has("allowed_updates") else self.allowed_updates
        if not url:
            self.allowed_updates = allowed
            return await self.delete_webhook(p)
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ApiError(400, "Bad Request: bad webhook: invalid URL")
        if not _is_loopback(split.hostname):
            raise ApiError(400, "Bad Request: bad webhook: this test server delivers only to loopback addresses")
        secret = p.string("secret_token") or None
        if secret is not None and not SECRET_TOKEN.fullmatch(secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        max_connections = min(100, max(1, p.integer("max_connections", 40) or 40))
        self.allowed_updates = allowed
        if p.boolean("drop_pending_updates"):
            self._drop_pending()
        if self.webhook is not None and self.webhook.url == url and self.webhook.secret_token == secret:
            self.webhook.max_connections = max_connections
            return Reply(True, "Webhook is already set")
        self.webhook = Webhook(url, secret, max_connections, p.string("ip_address") or None)
        self.poll_generation += 1
        self.updates_changed.fire()
        return Reply(True, "Webhook was set")

    async def delete_webhook(self, p: Params) -> Reply:
        """deleteWebhook (drop_pending_updates honoured)."""
        if p.boolean("drop_pending_updates"):
            self._drop_pending()
        if self.webhook is None:
            return Reply(True, "Webhook is already deleted")
        self.webhook = None
        self.updates_changed.fire()
        return Reply(True, "Webhook was deleted")

    async def get_webhook_info(self, p: Params) -> JSON:
        """getWebhookInfo: url ("" without a webhook), pending count, the last delivery error."""
        info: JSON = {"url": "", "has_custom_certificate": False, "pending_update_count": len(self.pending)}
        hook = self.webhook
        if hook is not None:
            info["url"] = hook.url
            info["max_connections"] = hook.max_connections
            info["ip_address"] = hook.ip_address or "127.0.0.1"
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
        if self.allowed_updates:
            info["allowed_updates"] = list(self.allowed_updates)
        return info

    def _allowed_updates(self, p: Params) -> list[str]:
        value = p.decoded("allowed_updates")
        if not isinstance(value, list) or not all(isinstance(kind, str) for kind in value):
            raise ApiError(400, "Bad Request: can't parse allowed_updates JSON object")
        return list(value)

    async def get_updates(self, p: Params) -> list[JSON]:
        """getUpdates: confirms below ``offset``, waits up to ``timeout`` seconds for an update, returns at
        most ``limit``; 409 with a webhook set or when a newer getUpdates takes over."""
        if self.webhook is not None:
            raise ApiError(409, WEBHOOK_CONFLICT)
        offset = p.integer("offset", 0) or 0
        limit = min(100, max(1, p.integer("limit", 100) or 100))
        timeout = max(0, p.integer("timeout", 0) or 0)
        if p.has("allowed_updates"):
            self.allowed_updates = self._allowed_updates(p)
        self._confirm(offset)
        self.poll_generation += 1
        generation = self.poll_generation
        self.updates_changed.fire()  # an older long poll ends with a conflict
        deadline = time.monotonic() + timeout
        self.long_polls += 1
        try:
            while not self.pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await self.updates_changed.wait(remaining)
                if self.webhook is not None:
                    raise ApiError(409, POLL_TERMINATED_BY_WEBHOOK)
                if generation != self.poll_generation:
                    raise ApiError(409, POLL_CONFLICT)
        finally:
            self.long_polls -= 1
        batch = self.pending[:limit]
        return [queued.update for queued in batch]

    async def set_chat_menu_button(self, p: Params) -> bool:
        """setChatMenuButton: for one private chat, or the default (no chat_id)."""
        chat_id = p.integer("chat_id") if p.has("chat_id") else None
        button = p.decoded("menu_button") if p.has("menu_button") else {"type": "default"}
        if not isinstance(button, dict):
            raise ApiError(400, "Bad Request: can't parse menu_button JSON object")
        kind = button.get("type")
        if kind not in ("commands", "web_app", "default"):
            raise ApiError(400, "Bad Request: unsupported menu button type")
        if kind == "web_app":
            text, web_app = button.get("text"), button.get("web_app")
            if not isinstance(text, str) or not text:
                raise ApiError(400, "Bad Request: text of the menu button must be non-empty")
            url = web_app.get("url") if isinstance(web_app, dict) else None
            if not isinstance(url, str) or not url.startswith("https://"):
                raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
        self.menu_buttons[chat_id] = button
        return True

    async def get_chat_menu_button(self, p: Params) -> JSON:
        """getChatMenuButton: the chat's button, else the default one, else ``{"type": "default"}``."""
        chat_id = p.integer("chat_id") if p.has("chat_id") else None
        return self.menu_buttons.get(chat_id) or self.menu_buttons.get(None) or {"type": "default"}

    def _command_key(self, p: Params) -> tuple[str, str]:
        scope = p.decoded("scope") if p.has("scope") else {"type": "default"}
        if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
            raise ApiError(400, "Bad Request: can't parse BotCommandScope JSON object")
        language = p.string("language_code")
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise ApiError(400, "Bad Request: invalid language code specified")
        return json.dumps(scope, sort_keys=True), language

    async def set_my_commands(self, p: Params) -> bool:
        """setMyCommands: 1-100 commands of [a-z0-9_]{1,32} with 1-256-character descriptions."""
        if not p.has("commands"):
            raise ApiError(400, 'Bad Request: parameter "commands" is required')
        commands = p.decoded("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict):
                raise ApiError(400, "Bad Request: can't parse BotCommand JSON object")
            name, text = command.get("command"), command.get("description")
            if not isinstance(name, str) or not BOT_COMMAND.fullmatch(name):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not isinstance(text, str) or not 1 <= len(text) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._command_key(p)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def get_my_commands(self, p: Params) -> list[JSON]:
        """getMyCommands for a scope and language."""
        return self.commands.get(self._command_key(p), [])

    async def delete_my_commands(self, p: Params) -> bool:
        """deleteMyCommands for a scope and language."""
        self.commands.pop(self._command_key(p), None)
        return True

    # ---------------------------------------------------------------------------------- checkout

    def invoice(self, ref: str) -> Invoice:
        """The invoice of a link (``https://t.me/$slug``), ``$slug`` or slug."""
        slug = ref.removeprefix(INVOICE_LINK_PREFIX).removeprefix("$")
        invoice = self.invoices.get(slug)
        if invoice is None:
            raise KeyError(f"no invoice {ref!r}")
        return invoice

    async def pay(self, invoice: Invoice, user: JSON, timeout: float) -> JSON:
        """A user pays ``invoice``: a pre_checkout_query to the bot; if it answers ok within ``timeout``, a
        successful_payment message and a StarTransaction. Returns what happened."""
        loop = asyncio.get_running_loop()
        query_id = str(self.next_query_id)
        self.next_query_id += 1
        checkout = Checkout(query_id, invoice, user, loop.create_future())
        self.checkouts[query_id] = checkout
        query = {
            "id": query_id,
            "from": user,
            "currency": STARS,
            "total_amount": invoice.amount,
            "invoice_payload": invoice.payload,
        }
        update_id = self.enqueue({"pre_checkout_query": query})

        def expire() -> None:
            if not checkout.answer.done():
                checkout.answer.set_result(None)

        expiry = loop.call_later(timeout, expire)
        try:
            answer = await checkout.answer
        finally:
            expiry.cancel()
        outcome: JSON = {"pre_checkout_query_id": query_id, "pre_checkout_update_id": update_id}
        if answer is None:
            return {"status": "expired", **outcome}
        ok, error_message = answer
        if not ok:
            return {"status": "declined", "error_message": error_message, **outcome}
        charge_id = "stx" + secrets.token_urlsafe(24)
        payment = Payment(
            charge_id=charge_id,
            provider_charge_id=f"{user['id']}_{len(self.payments) + 1}",
            user=user,
            amount=invoice.amount,
            payload=invoice.payload,
            invoice_slug=invoice.slug,
            date=int(time.time()),
        )
        self.payments[charge_id] = payment
        invoice.payments += 1
        self.transactions.append(self._transaction(payment, refund=False))
        successful = {
            "currency": STARS,
            "total_amount": invoice.amount,
            "invoice_payload": invoice.payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": payment.provider_charge_id,
        }
        if invoice.subscription_period:
            successful["subscription_expiration_date"] = payment.date + invoice.subscription_period
            successful["is_recurring"] = True
            successful["is_first_recurring"] = True
        message_update_id = self.enqueue({"message": self.user_message(user, successful_payment=successful)})
        return {
            "status": "paid",
            "charge_id": charge_id,
            "provider_charge_id": payment.provider_charge_id,
            "amount": invoice.amount,
            "payload": invoice.payload,
            "message_update_id": message_update_id,
            **outcome,
        }

    # ------------------------------------------------------------------------------------ control

    def state(self) -> JSON:
        """An overview for ``GET /_control/state``."""
        hook = self.webhook
        return {
            "pid": os.getpid(),
            "bot": self.bot_user,
            "webhook": None
            if hook is None
            else {"url": hook.url, "secret_token": hook.secret_token, "last_error_message": hook.last_error_message},
            "allowed_updates": self.allowed_updates,
            "pending_update_ids": [q.update_id for q in self.pending],
            "next_update_id": self.next_update_id,
            "long_polls": self.long_polls,
            "calls": len(self.calls),
            "chat_states": {str(k): v for k, v in self.chat_states.items()},
            "options": {
                "checkout_timeout": self.options.checkout_timeout,
                "rate_limits": vars(self.options.rate_limits),
                "rate_limits_enabled": self.options.rate_limits_enabled,
                "webhook_attempts": self.options.webhook_attempts,
                "star_transactions_order": self.options.star_transactions_order,
                "refund_message_on_bot_refund": self.options.refund_message_on_bot_refund,
            },
        }

    def matching_calls(self, method: str | None, since: int) -> list[JSON]:
        """Recorded calls with seq ≥ ``since``, of ``method`` if given (any case)."""
        wanted = method.lower() if method else None
        return [c for c in self.calls if c["seq"] >= since and (wanted is None or c["method"].lower() == wanted)]


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -------------------------------------------------------------------------------------------- the app


class ControlError(Exception):
    """A control call that cannot be done: answered with its status and ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _control_body(request: Request) -> JSON:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ControlError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ControlError(400, "the body must be a JSON object")
    return body


def _float_arg(request: Request, name: str, default: float) -> float:
    try:
        return float(request.query_params.get(name, default))
    except ValueError:
        raise ControlError(400, f"{name} must be a number") from None


ControlHandler = Callable[[BotApi, Request], Awaitable[Any]]


async def _calls(bot: BotApi, request: Request) -> JSON:
    if request.method == "DELETE":
        cleared = len(bot.calls)
        bot.calls = []
        return {"cleared": cleared}
    method = request.query_params.get("method") or None
    since = int(_float_arg(request, "since", 0))
    least = int(_float_arg(request, "min", 1))
    deadline = time.monotonic() + _float_arg(request, "wait", 0)
    while len(found := bot.matching_calls(method, since)) < least and (left := deadline - time.monotonic()) > 0:
        await bot.calls_changed.wait(left)
    return {"calls": found}


async def _reset(bot: BotApi, request: Request) -> JSON:
    bot.reset()
    return {"ok": True}


async def _state(bot: BotApi, request: Request) -> JSON:
    return bot.state()


async def _chats(bot: BotApi, request: Request) -> JSON:
    if request.method == "GET":
        return {"chats": {str(k): v for k, v in bot.chat_states.items()}}
    body = await _control_body(request)
    chat_id, state = body.get("chat_id"), body.get("state", "active")
    if isinstance(chat_id, bool) or not isinstance(chat_id, int | str):
        raise ControlError(400, "chat_id must be an integer or an @username")
    if state not in (*CHAT_STATES, "active"):
        raise ControlError(400, f"state must be one of {[*CHAT_STATES, 'active']}")
    if state == "active":
        bot.chat_states.pop(chat_id, None)
    else:
        bot.chat_states[chat_id] = state
    return {"chat_id": chat_id, "state": state}


async def _fail(bot: BotApi, request: Request) -> JSON:
    body = await _control_body(request)
    method, count = body.get("method"), body.get("count", 1)
    code, retry_after = body.get("error_code", 429), body.get("retry_after")
    if not isinstance(method, str) or not method:
        raise ControlError(400, 'method is required ("*" for any method)')
    if not isinstance(count, int) or count < 0 or not isinstance(code, int) or not 400 <= code <= 599:
        raise ControlError(400, "count must be an integer ≥ 0 and error_code an HTTP error status")
    if code == 429:
        retry_after = 1 if retry_after is None else retry_after
        if not isinstance(retry_after, int) or retry_after < 1:
            raise ControlError(400, "retry_after must be an integer ≥ 1")
        description = body.get("description") or f"Too Many Requests: retry after {retry_after}"
    else:
        retry_after = None
        description = body.get("description") or DEFAULT_DESCRIPTIONS.get(code, "Error")
    entry = bot.methods.get(method.lower())
    canonical = entry[0] if entry else method
    queue = bot.forced.setdefault(canonical.lower(), deque())
    queue.extend(ForcedError(code, str(description), retry_after) for _ in range(count))
    return {"method": canonical, "queued": len(queue)}


async def _updates(bot: BotApi, request: Request) -> JSON:
    if request.method == "GET":
        return {
            "pending": [q.update_id for q in bot.pending],
            "updates": list(bot.history.values()),
            "filtered": bot.filtered,
        }
    body = await _control_body(request)
    update = body.get("update", body)
    if not isinstance(update, dict):
        raise ControlError(400, "update must be an object")
    update = {k: v for k, v in update.items() if k != "update_id"}
    try:
        return {"update_id": bot.enqueue(update)}
    except ValueError as exc:
        raise ControlError(400, str(exc)) from None


async def _message(bot: BotApi, request: Request) -> JSON:
    body = await _control_body(request)
    try:
        user = bot.user(body.get("user", body.get("user_id")))
    except ValueError as exc:
        raise ControlError(400, str(exc)) from None
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise ControlError(400, "text is required")
    content: JSON = {"text": text}
    if text.startswith("/"):
        command = text.split(maxsplit=1)[0]
        content["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    extra = body.get("extra", {})
    if isinstance(extra, dict):
        content.update(extra)
    message = bot.user_message(user, **content)
    return {"update_id": bot.enqueue({"message": message}), "message": message}


async def _redeliver(bot: BotApi, request: Request) -> JSON:
    body = await _control_body(request)
    update_id = body.get("update_id")
    if not isinstance(update_id, int) or update_id not in bot.history:
        raise ControlError(404, f"no update {update_id!r}")
    bot.redeliver(update_id)
    return {"update_id": update_id}


async def _pay(bot: BotApi, request: Request) -> JSON:
    body = await _control_body(request)
    ref = body.get("invoice")
    if not isinstance(ref, str):
        raise ControlError(400, "invoice (a link or slug) is required")
    try:
        invoice = bot.invoice(ref)
        user = bot.user(body.get("user", body.get("user_id")))
    except KeyError as exc:
        raise ControlError(404, str(exc.args[0])) from None
    except ValueError as exc:
        raise ControlError(400, str(exc)) from None
    timeout = body.get("timeout", bot.options.checkout_timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ControlError(400, "timeout must be a positive number")
    return await bot.pay(invoice, user, float(timeout))


async def _refund(bot: BotApi, request: Request) -> JSON:
    body = await _control_body(request)
    payment = bot.payments.get(str(body.get("charge_id")))
    if payment is None:
        raise ControlError(404, f"no payment {body.get('charge_id')!r}")
    if payment.refunded:
        raise ControlError(409, "the payment is already refunded")
    return {"status": "refunded", "charge_id": payment.charge_id, "update_id": bot.refund(payment, message=True)}


async def _invoices(bot: BotApi, request: Request) -> JSON:
    return {"invoices": [invoice.as_json() for invoice in bot.invoices.values()]}


async def _payments(bot: BotApi, request: Request) -> JSON:
    return {"payments": [payment.as_json() for payment in bot.payments.values()]}


async def _deliveries(bot: BotApi, request: Request) -> JSON:
    return {"deliveries": bot.deliveries}


CONTROL: dict[str, tuple[tuple[str, ...], ControlHandler]] = {
    "state": (("GET",), _state),
    "reset": (("POST",), _reset),
    "calls": (("GET", "DELETE"), _calls),
    "chats": (("GET", "POST"), _chats),
    "fail": (("POST",), _fail),
    "updates": (("GET", "POST"), _updates),
    "message": (("POST",), _message),
    "redeliver": (("POST",), _redeliver),
    "pay": (("POST",), _pay),
    "refund": (("POST",), _refund),
    "invoices": (("GET",), _invoices),
    "payments": (("GET",), _payments),
    "deliveries": (("GET",), _deliveries),
}


def control_routes(bot: BotApi) -> list[Route]:
    """The control API, JSON in and out, under ``/_control/`` (no Bot API path starts so):

    - ``GET state``: webhook, pending update ids, getUpdates calls in progress (``long_polls``), options.
    - ``POST reset``: back to a fresh bot (calls, invoices, payments, webhook, updates, chat states,
      forced errors, flood windows); update ids go on increasing.
    - ``GET calls?method=&since=&wait=&min=``: ``{"calls": [{seq, method, params, time, duration, status,
      response, http_method, content_type, via}]}``, waiting up to ``wait`` s for at least ``min`` (default 1) of them;
      ``DELETE calls``: ``{"cleared": n}``.
    - ``POST chats {"chat_id", "state": "blocked"|"deactivated"|"not_found"|"active"}``; ``GET chats``.
    - ``POST fail {"method" ("*" = any), "count", "error_code" (429), "retry_after" (1), "description"?}``:
      the next ``count`` calls answer that error. ``{"method", "queued"}``.
    - ``POST updates {"update": {...}}`` (or the update itself, without update_id): ``{"update_id"}`` (null
      if allowed_updates leaves it out); ``GET updates``: ``{"pending", "updates", "filtered"}``.
    - ``POST message {"user": id | {...}, "text", "extra"?}``: a user's message (bot_command entity for
      ``/...``): ``{"update_id", "message"}``.
    - ``POST redeliver {"update_id"}``: the same update again.
    - ``POST pay {"invoice": link | slug, "user": id | {...}, "timeout"?}``: ``{"status": "paid", "charge_id",
      "provider_charge_id", "amount", "payload", "message_update_id", ...}`` or ``{"status": "declined",
      "error_message"}`` or ``{"status": "expired"}``, each with ``pre_checkout_query_id`` and
      ``pre_checkout_update_id``.
    - ``POST refund {"charge_id"}``: a refund from Telegram's side: ``{"status": "refunded", "update_id"}``.
    - ``GET invoices``, ``GET payments``, ``GET deliveries`` (webhook attempts: update_id, attempt,
      status, error, dropped).
    """

    def endpoint(handler: ControlHandler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return JSONResponse(await handler(bot, request))
            except ControlError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)

        return run

    return [
        Route(f"/_control/{name}", endpoint(handler), methods=list(methods))
        for name, (methods, handler) in CONTROL.items()
    ]


def create_app(options: Options) -> Starlette:
    """The server: the Bot API at ``/bot<token>/<method>``, the control API, 404 elsewhere."""
    bot = BotApi(options)

    async def api(request: Request) -> Response:
        method: str = request.path_params["method"]
        content_type = request.headers.get("content-type")
        started = time.time()
        params: JSON = dict(request.query_params)
        failure: ApiError | None = None
        try:
            params.update(parse_body(content_type or "", await request.body()))
        except ApiError as exc:
            failure = exc
        if not secrets.compare_digest(request.path_params["token"].encode(), options.token.encode()):
            failure = ApiError(401, "Unauthorized")
        if failure is None:
            status, body = await bot.dispatch(
                method, params, http_method=request.method, via="http", content_type=content_type
            )
        else:
            status, body = failure.code, failure.body()
            bot.record(
                method, params, started=started, status=status, response=body, http_method=request.method,
                via="http", content_type=content_type,
            )  # fmt: skip
        return JSONResponse(body, status_code=status)

    async def not_found(request: Request) -> Response:
        return JSONResponse(error_body(404, "Not Found"), status_code=404)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # trust_env=False: no proxy from the environment; webhooks go straight to loopback.
        async with httpx.AsyncClient(trust_env=False, timeout=options.webhook_timeout) as client:
            bot.http = client
            worker = asyncio.create_task(bot.webhook_worker())
            try:
                yield
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
                bot.reset()

    verbs = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    routes = [
        Route("/bot{token}/{method}", api, methods=["GET", "POST"]),
        *control_routes(bot),
        Route("/{path:path}", not_found, methods=verbs),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.bot = bot
    return app


# ---------------------------------------------------------------------------------------- the process


def _write_ready(path: Path, port: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"port": port, "pid": os.getpid()}))
    temporary.replace(path)


async def serve(
    options: Options, host: str, port: int, ready_file: Path | None, parent_pid: int | None, log_level: str
) -> None:
    """Serve until SIGTERM/SIGINT (or until ``parent_pid`` is gone); announce the port once listening."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without, a kept-alive client waits ~40 ms per call (Nagle + delayed ACK).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(options),
        log_level=log_level,
        access_log=False,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("uvicorn exited at start")
        await asyncio.sleep(0.01)
    if ready_file is not None:
        _write_ready(ready_file, bound)
    print(f"BOTAPI_READY port={bound}", flush=True)
    while not task.done():
        if parent_pid is not None and os.getppid() != parent_pid:
            server.should_exit = True  # the test process is gone: do not outlive it
        await asyncio.wait([task], timeout=0.5)
    await task


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    defaults, limits = Options(), RateLimits()
    parser = argparse.ArgumentParser(
        prog="python -m tests.telegram.botapi", description=(__doc__ or "").split("\n", 1)[0]
    )
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the bot token the server accepts")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0: a free port, announced in --ready-file")
    parser.add_argument("--ready-file", type=Path, help='where to write {"port": N, "pid": P} once listening')
    parser.add_argument("--parent-pid", type=int, help="exit when this process is no longer the parent")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--bot-username", default=defaults.bot_username)
    parser.add_argument("--bot-first-name", default=defaults.bot_first_name)
    parser.add_argument("--checkout-timeout", type=float, default=defaults.checkout_timeout)
    for f in fields(limits):
        kind = int if f.name.endswith("limit") else float
        parser.add_argument(
            f"--rate-{f.name.replace('_', '-')}", dest=f"rate_{f.name}", type=kind, default=getattr(limits, f.name)
        )
    parser.add_argument("--no-rate-limits", action="store_true", help="no flood control at all")
    parser.add_argument("--webhook-attempts", type=int, default=defaults.webhook_attempts)
    parser.add_argument("--webhook-retry-delay", type=float, default=defaults.webhook_retry_delay)
    parser.add_argument("--webhook-timeout", type=float, default=defaults.webhook_timeout)
    parser.add_argument("--first-update-id", type=int, default=defaults.first_update_id)
    parser.add_argument(
        "--star-transactions-order", choices=("chronological", "newest-first"), default=defaults.star_transactions_order
    )
    parser.add_argument("--refund-message-on-bot-refund", action="store_true")
    args = parser.parse_args(argv)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        parser.error("--host must be a loopback address")
    if args.webhook_attempts < 1 or args.checkout_timeout <= 0:
        parser.error("--webhook-attempts must be ≥ 1 and --checkout-timeout > 0")
    if min(getattr(args, f"rate_{f.name}") for f in fields(RateLimits)) <= 0:
        parser.error("every --rate-* limit and window must be > 0")
    return args


def options_from(args: argparse.Namespace) -> Options:
    """The :class:`Options` a command line asks for."""
    limits = RateLimits(**{f.name: getattr(args, f"rate_{f.name}") for f in fields(RateLimits)})
    return Options(
        token=args.token,
        bot_username=args.bot_username,
        bot_first_name=args.bot_first_name,
        checkout_timeout=args.checkout_timeout,
        rate_limits=limits,
        rate_limits_enabled=not args.no_rate_limits,
        webhook_attempts=args.webhook_attempts,
        webhook_retry_delay=args.webhook_retry_delay,
        webhook_timeout=args.webhook_timeout,
        first_update_id=args.first_update_id,
        star_transactions_order=args.star_transactions_order,
        refund_message_on_bot_refund=args.refund_message_on_bot_refund,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tests.telegram.botapi``."""
    args = parse_args(argv)
    asyncio.run(serve(options_from(args), args.host, args.port, args.ready_file, args.parent_pid, args.log_level))


# ------------------------------------------------------------------------------------ the test handle


@dataclass(frozen=True)
class ApiReply:
    """A Bot API answer as a test sees it: the HTTP status and the envelope."""

    status: int
    body: JSON

    @property
    def ok(self) -> bool:
        """The envelope's ``ok``."""
        return bool(self.body.get("ok"))

    @property
    def result(self) -> Any:
        """The envelope's ``result``."""
        return self.body.get("result")

    @property
    def description(self) -> str | None:
        """The envelope's ``description``."""
        description: str | None = self.body.get("description")
        return description

    @property
    def retry_after(self) -> int | None:
        """``parameters.retry_after`` of a 429."""
        retry_after: int | None = self.body.get("parameters", {}).get("retry_after")
        return retry_after


class ControlCallError(Exception):
    """A control call answered with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text}")
        self.status = status
        self.text = text


class BotApiServer:
    """A running test Bot API server process, seen from a test.

    ``with BotApiServer.start(token=...) as api:`` starts ``python -m tests.telegram.botapi`` on a free
    loopback port, waits until it listens, and stops it after (SIGTERM, SIGKILL after ``stop_grace``).
    The async helpers wrap the control API; :meth:`call` calls the Bot API itself."""

    def __init__(
        self, process: subprocess.Popen[bytes], token: str, port: int, workdir: Path, checkout_timeout: float
    ) -> None:
        self.process = process
        self.token = token
        self.port = port
        self.workdir = workdir
        self.checkout_timeout = checkout_timeout

    @classmethod
    def start(
        cls,
        token: str = DEFAULT_TOKEN,
        *,
        checkout_timeout: float = 10.0,
        rate_limits: RateLimits | None = None,
        rate_limits_enabled: bool = True,
        webhook_attempts: int | None = None,
        webhook_retry_delay: float | None = None,
        star_transactions_order: Literal["chronological", "newest-first"] | None = None,
        refund_message_on_bot_refund: bool = False,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 20.0,
    ) -> BotApiServer:
        """Start a server process with these settings (None: the server's default) and wait for it."""
        workdir = Path(tempfile.mkdtemp(prefix="croupier-botapi-"))
        ready = workdir / "ready.json"
        args = [
            sys.executable, "-m", "tests.telegram.botapi", "--token", token, "--port", "0",
            "--ready-file", str(ready), "--parent-pid", str(os.getpid()),
            "--checkout-timeout", str(checkout_timeout), *(rate_limits or RateLimits()).args(),
        ]  # fmt: skip
        if not rate_limits_enabled:
            args.append("--no-rate-limits")
        if webhook_attempts is not None:
            args += ["--webhook-attempts", str(webhook_attempts)]
        if webhook_retry_delay is not None:
            args += ["--webhook-retry-delay", str(webhook_retry_delay)]
        if star_transactions_order is not None:
            args += ["--star-transactions-order", star_transactions_order]
        if refund_message_on_bot_refund:
            args.append("--refund-message-on-bot-refund")
        args += extra_args
        with open(workdir / "server.log", "ab") as log:
            process = subprocess.Popen(
                args, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        server = cls(process, token, 0, workdir, checkout_timeout)
        try:
            server.port = server._wait_ready(ready, ready_timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, ready: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                port: int = json.loads(ready.read_text())["port"]
                return port
            if self.process.poll() is not None:
                raise RuntimeError(f"the Bot API test server exited ({self.process.returncode}):\n{self.log()}")
            time.sleep(0.02)
        raise RuntimeError(f"the Bot API test server did not start in {timeout} s:\n{self.log()}")

    @property
    def pid(self) -> int:
        """The server process's id."""
        return self.process.pid

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: for ``TelegramAPIServer.from_base``."""
        return f"http://127.0.0.1:{self.port}"

    def method_url(self, method: str, token: str | None = None) -> str:
        """The URL of a Bot API method (with another ``token`` if given)."""
        return f"{self.base_url}/bot{self.token if token is None else token}/{method}"

    def log(self) -> str:
        """What the server printed so far."""
        try:
            return (self.workdir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, stop_grace: float = 5.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``stop_grace`` s) and reap it; idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(stop_grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ async helpers

    async def call(self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float = 30.0) -> ApiReply:
        """Call a Bot API method with a JSON body."""
        async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client:
            response = await client.post(self.method_url(method), json=dict(params or {}))
        return ApiReply(response.status_code, response.json())

    async def control(
        self, path: str, payload: Mapping[str, Any] | None = None, *, method: str = "POST",
        query: Mapping[str, str | int | float] | None = None, timeout: float = 30.0,
    ) -> Any:  # fmt: skip
        """One control API call; raises :class:`ControlCallError` on an error status."""
        async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client:
            response = await client.request(
                method, f"{self.base_url}/_control/{path}", json=None if payload is None else dict(payload),
                params=dict(query or {}),
            )  # fmt: skip
        if response.status_code >= 400:
            raise ControlCallError(response.status_code, response.text)
        return response.json()

    def control_sync(self, path: str, payload: Mapping[str, Any] | None = None, *, method: str = "POST") -> Any:
        """:meth:`control` for code without an event loop (fixture setup)."""
        with httpx.Client(trust_env=False, timeout=30.0) as client:
            response = client.request(
                method, f"{self.base_url}/_control/{path}", json=None if payload is None else dict(payload)
            )
        if response.status_code >= 400:
            raise ControlCallError(response.status_code, response.text)
        return response.json()

    async def reset(self) -> None:
        """Back to a fresh bot (see ``POST /_control/reset``)."""
        await self.control("reset")

    async def calls(
        self, method: str | None = None, *, since: int = 0, wait: float = 0.0, min_count: int = 1
    ) -> list[JSON]:
        """Recorded calls (of ``method``), waiting up to ``wait`` s until there are ``min_count``."""
        query: dict[str, str | int | float] = {"since": since, "wait": wait, "min": min_count}
        if method:
            query["method"] = method
        found: list[JSON] = (await self.control("calls", method="GET", query=query, timeout=wait + 30))["calls"]
        return found

    async def clear_calls(self) -> int:
        """Forget the recorded calls; returns how many there were."""
        cleared: int = (await self.control("calls", method="DELETE"))["cleared"]
        return cleared

    async def set_chat(
        self, chat_id: int | str, state: Literal["active", "blocked", "deactivated", "not_found"]
    ) -> None:
        """Make a chat blocked, deactivated, not found, or active again."""
        await self.control("chats", {"chat_id": chat_id, "state": state})

    async def fail_next(
        self, method: str, count: int = 1, *, error_code: int = 429, retry_after: int | None = None,
        description: str | None = None,
    ) -> None:  # fmt: skip
        """Make the next ``count`` calls of ``method`` ("*": any) answer an error (429 by default)."""
        payload: JSON = {"method": method, "count": count, "error_code": error_code}
        if retry_after is not None:
            payload["retry_after"] = retry_after
        if description is not None:
            payload["description"] = description
        await self.control("fail", payload)

    async def deliver(self, update: Mapping[str, Any]) -> int | None:
        """Queue an update (without update_id) for the bot; returns its update_id."""
        update_id: int | None = (await self.control("updates", {"update": dict(update)}))["update_id"]
        return update_id

    async def user_says(self, user: int | Mapping[str, Any], text: str) -> int:
        """A user's text message to the bot; returns its update_id."""
        update_id: int = (
            await self.control("message", {"user": user if isinstance(user, int) else dict(user), "text": text})
        )["update_id"]
        return update_id

    async def redeliver(self, update_id: int) -> None:
        """Deliver update ``update_id`` again, same id."""
        await self.control("redeliver", {"update_id": update_id})

    async def pay(self, invoice: str, user: int | Mapping[str, Any], *, timeout: float | None = None) -> JSON:
        """A user pays an invoice link: see ``POST /_control/pay``."""
        payload: JSON = {"invoice": invoice, "user": user if isinstance(user, int) else dict(user)}
        if timeout is not None:
            payload["timeout"] = timeout
        wait = self.checkout_timeout if timeout is None else timeout
        outcome: JSON = await self.control("pay", payload, timeout=wait + 30)
        return outcome

    async def refund_from_telegram(self, charge_id: str) -> JSON:
        """A refund initiated on Telegram's side: delivers ``message.refunded_payment``."""
        outcome: JSON = await self.control("refund", {"charge_id": charge_id})
        return outcome

    async def invoices(self) -> list[JSON]:
        """The invoice links created so far."""
        found: list[JSON] = (await self.control("invoices", method="GET"))["invoices"]
        return found

    async def deliveries(self) -> list[JSON]:
        """Webhook delivery attempts so far."""
        found: list[JSON] = (await self.control("deliveries", method="GET"))["deliveries"]
        return found

    async def state(self) -> JSON:
        """``GET /_control/state``."""
        found: JSON = await self.control("state", method="GET")
        return found


@contextlib.contextmanager
def running(token: str = DEFAULT_TOKEN, **settings: Any) -> Iterator[BotApiServer]:
    """``with running(...) as api``: :meth:`BotApiServer.start` with ``settings``, stopped after."""
    with BotApiServer.start(token, **settings) as server:
        yield server


if __name__ == "__main__":
    main()
