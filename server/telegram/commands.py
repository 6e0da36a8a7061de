"""``croupier stars …`` and ``croupier bot …``: the operator's commands for the bot and its payments.

Each returns the exit status and prints what it did (stdout) or why it did nothing (stderr, one line
starting ``croupier:``): 0 done, 1 Telegram or the database failed (or reconcile found mismatches),
2 refused (a setting missing, an argument wrong, a refund that must not be made). Every Bot API
call goes through aiogram (:func:`.bot.create_bot`) at ``CROUPIER_TELEGRAM_API_URL``; the token is
never printed.

- ``stars refund CHARGE_ID --reason TEXT [--force-flag]``: reads what the refund would do first, and
  refuses (nothing asked of Telegram) a payment refunded before, one never credited here, or one whose
  wallet holds less than it credited (unless ``--force-flag``); then ``refundStarPayment`` (the payer
  from the order), then the deposit's reversal (:meth:`.refunds.Refunds.reverse`). The money has left
  by then, so the reversal is made whatever the wallet holds now (a player who bet in between is taken
  to zero and flagged).
- ``stars reconcile [--since DATE] [--fix]``: :mod:`.reconcile`; one line per mismatch, exit 1 when any is
  left (0 when clean, or when ``--fix`` fixed them all).
- ``bot set-webhook``, ``bot delete-webhook``, ``bot info``, ``bot set-menu-button URL``.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiogram import Bot
from aiogram.exceptions import AiogramError, TelegramBadRequest
from aiogram.types import MenuButtonWebApp, WebAppInfo

from ..db.transactions import DatabaseUnavailable
from ..ledger import Ledger, LedgerError
from ..settings import Settings
from .bot import create_bot, redacted
from .polling import ALLOWED_UPDATES
from .reconcile import compare, fix, our_side, star_transactions
from .refunds import AlreadyRefunded, NothingToRefund, Refunds, RefundSource
from .webhook import PATH as WEBHOOK_PATH

ALREADY_REFUNDED = "CHARGE_ALREADY_REFUNDED"
"""What refundStarPayment answers (400) for a payment Telegram refunded before."""
MENU_BUTTON_TEXT = "Play"


def bot_problem(settings: Settings) -> str | None:
    """Why these commands cannot run with ``settings`` (no bot token of its own), or None."""
    if not settings.payments_enabled:
        return ("this command needs CROUPIER_BOT_TOKEN, the bot's token from BotFather (a generated development "
                "token or CROUPIER_BOT_ID alone is no bot)")  # fmt: skip
    return None


def _fail(message: str, status: int) -> int:
    print(f"croupier: {message}", file=sys.stderr)
    return status


def _describe(exc: BaseException, token: str) -> str:
    return redacted(f"{type(exc).__name__}: {exc}".replace("\n", " "), token)


@asynccontextmanager
async def _bot(settings: Settings) -> AsyncIterator[Bot]:
    assert settings.bot_token is not None
    bot = create_bot(settings.bot_token, api_url=settings.telegram_api_url, env=settings.telegram_env)
    try:
        yield bot
    finally:
        await bot.session.close()


@asynccontextmanager
async def _money(dsn: str, settings: Settings) -> AsyncIterator[tuple[asyncpg.Pool, Ledger, Refunds]]:
    """A small pool, a started ledger (no announce: the nodes' outbox sweepers relay its events) and refunds."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    ledger = Ledger(pool)
    try:
        await ledger.start()
        yield pool, ledger, Refunds(pool, ledger, bot_id=settings.bot_id)
    finally:
        await ledger.close()
        await pool.close()


# ------------------------------------------------------------------------------------------ stars


async def stars_refund(settings: Settings, dsn: str, charge_id: str, *, reason: str, force_flag: bool) -> int:
    """``croupier stars refund``: see the module's docstring."""
    if not reason.strip():
        return _fail("--reason must say why", 2)
    assert settings.bot_token is not None
    async with _money(dsn, settings) as (_, _, refunds), _bot(settings) as bot:
        try:
            plan = await refunds.plan(charge_id)
        except NothingToRefund as exc:
            return _fail(f"{exc}: nothing to refund", 2)
        except DatabaseUnavailable as exc:
            return _fail(f"{exc}; nothing was refunded", 1)
        if plan.refunded_at is not None:
            return _fail(f"payment {charge_id} was refunded already, on {plan.refunded_at:%Y-%m-%d %H:%M:%S %Z}: "
                         "nothing done", 2)  # fmt: skip
        if plan.shortfall and not force_flag:
            return _fail(f"user {plan.user_id}'s wallet holds {plan.balance} chips, less than the {plan.credited} this "
                         f"payment credited: nothing was refunded (--force-flag refunds it anyway: the wallet is taken "
                         f"to zero, the {plan.shortfall} chips short are recorded and the account is flagged)",
                         2)  # fmt: skip
        note = ""
        try:
            await bot.refund_star_payment(user_id=plan.user_id, telegram_payment_charge_id=charge_id)
        except TelegramBadRequest as exc:
            if ALREADY_REFUNDED not in exc.message:
                return _fail(f"Telegram refused the refund ({_describe(exc, bot.token)}): nothing changed", 1)
            note = " (Telegram had refunded it already)"
        except AiogramError as exc:
            return _fail(f"the refund did not go through ({_describe(exc, bot.token)}): nothing changed; "
                         "run the command again", 1)  # fmt: skip
        try:
            refund = await refunds.reverse(charge_id, source=RefundSource.OPERATOR, reason=reason)
        except AlreadyRefunded:  # Telegram's refunded_payment update reached a node first
            print(f"payment {charge_id} refunded{note}: {plan.stars} Stars to user {plan.user_id}; its deposit was "
                  "reversed already, by Telegram's refunded_payment update")  # fmt: skip
            return 0
        except (DatabaseUnavailable, LedgerError) as exc:
            return _fail(f"payment {charge_id} was refunded by Telegram{note}, but its deposit was not reversed "
                         f"({exc}): run croupier stars reconcile --fix", 1)  # fmt: skip
    stars = "" if plan.stars is None else f"{plan.stars} Stars "
    print(f"payment {charge_id} refunded{note}: {stars}to user {plan.user_id}; {refund.taken} chips taken back, "
          f"balance {refund.balance}")  # fmt: skip
    if refund.shortfall:
        print(f"shortfall: {refund.shortfall} chips had been played (see the refund_shortfalls view); "
              f"user {refund.user_id} {'flagged' if refund.flagged else 'was restricted already'}")  # fmt: skip
    return 0


def parse_since(text: str) -> dt.datetime:
    """``--since``: an ISO date (``2026-01-31``, midnight UTC) or date and time (UTC unless it says)."""
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


async def stars_reconcile(settings: Settings, dsn: str, *, since: str | None, fix_them: bool) -> int:
    """``croupier stars reconcile``: see the module's docstring."""
    try:
        start = parse_since(since) if since is not None else dt.datetime.min.replace(tzinfo=dt.UTC)
    except ValueError:
        return _fail(f"--since must be a date (2026-01-31) or a date and time (2026-01-31T18:00), got {since!r}", 2)
    assert settings.bot_token is not None
    async with _money(dsn, settings) as (pool, ledger, refunds), _bot(settings) as bot:
        try:
            payments, refunded = await star_transactions(bot)
        except AiogramError as exc:
            return _fail(f"getStarTransactions failed ({_describe(exc, bot.token)})", 1)
        try:
            ours = await our_side(pool, payments, refunded, start)
        except DatabaseUnavailable as exc:
            return _fail(str(exc), 1)
        mismatches = compare(payments, refunded, ours, start)
        left = 0
        for mismatch in mismatches:
            if not (fix_them and mismatch.fixable):
                print(mismatch.line())
                left += 1
                continue
            try:
                done = await fix(mismatch, pool, ledger, refunds)
            except (DatabaseUnavailable, LedgerError, NothingToRefund, AlreadyRefunded) as exc:
                print(f"{mismatch.line()} (not fixed: {exc})")
                left += 1
            else:
                print(f"{mismatch.line()} (fixed, {done})")
    window = "" if since is None else f" since {start:%Y-%m-%d %H:%M:%S %Z}"
    counts = (sum(p.date >= start for p in payments), sum(r.date >= start for r in refunded),
              sum(d.created_at >= start for d in ours.deposits.values()))  # fmt: skip
    fixed = len(mismatches) - left
    print(f"{counts[0]} payments and {counts[1]} refunds in Telegram's transactions, {counts[2]} deposits in the "
          f"ledger{window}: {len(mismatches)} mismatches{f', {fixed} fixed' if fix_them else ''}")  # fmt: skip
    return 1 if left else 0


# ------------------------------------------------------------------------------------------ bot


async def bot_set_webhook(settings: Settings, *, drop_pending: bool) -> int:
    """``croupier bot set-webhook``: ``CROUPIER_PUBLIC_URL`` + ``/telegram/webhook``, ``CROUPIER_WEBHOOK_SECRET``,
    the updates the node handles."""
    if settings.public_url is None:
        return _fail("CROUPIER_PUBLIC_URL is not set: set it to the public HTTPS base URL of the nodes "
                     "(e.g. https://casino.example.com)", 2)  # fmt: skip
    if settings.webhook_secret is None:
        return _fail("CROUPIER_WEBHOOK_SECRET is not set: make one (python -c 'import secrets; "
                     "print(secrets.token_urlsafe(32))') and give it to every node", 2)  # fmt: skip
    url = settings.public_url + WEBHOOK_PATH
    async with _bot(settings) as bot:
        try:
            await bot.set_webhook(url=url, secret_token=settings.webhook_secret, allowed_updates=ALLOWED_UPDATES,
                                  drop_pending_updates=drop_pending)  # fmt: skip
        except AiogramError as exc:
            return _fail(f"setWebhook failed: {_describe(exc, bot.token)}", 1)
    dropped = "; pending updates dropped" if drop_pending else ""
    print(f"webhook set: {url} (updates: {', '.join(ALLOWED_UPDATES)}{dropped})")
    return 0


async def bot_delete_webhook(settings: Settings, *, drop_pending: bool) -> int:
    """``croupier bot delete-webhook``: updates then wait for ``getUpdates`` (long polling)."""
    async with _bot(settings) as bot:
        try:
            await bot.delete_webhook(drop_pending_updates=drop_pending)
        except AiogramError as exc:
            return _fail(f"deleteWebhook failed: {_describe(exc, bot.token)}", 1)
    dropped = "; pending updates dropped" if drop_pending else ""
    print(f"webhook deleted: updates wait for long polling (getUpdates){dropped}")
    return 0


async def bot_info(settings: Settings) -> int:
    """``croupier bot info``: getMe and getWebhookInfo."""
    async with _bot(settings) as bot:
        try:
            me = await bot.get_me()
            hook = await bot.get_webhook_info()
        except AiogramError as exc:
            return _fail(f"the Bot API did not answer: {_describe(exc, bot.token)}", 1)
    lines = [
        f"bot: @{me.username} ({me.first_name}, id {me.id})",
        f"Bot API: {settings.telegram_api_url} ({settings.telegram_env})",
        f"webhook: {hook.url or 'none (updates wait for getUpdates: long polling)'}",
        f"pending updates: {hook.pending_update_count}",
    ]
    if hook.allowed_updates:
        lines.append(f"allowed updates: {', '.join(hook.allowed_updates)}")
    if hook.max_connections is not None:
        lines.append(f"max connections: {hook.max_connections}")
    if hook.last_error_date is not None:
        lines.append(f"last error: {hook.last_error_date:%Y-%m-%d %H:%M:%S %Z}: {hook.last_error_message}")
    expected = None if settings.public_url is None else settings.public_url + WEBHOOK_PATH
    if expected is not None and hook.url != expected:
        lines.append(f"note: CROUPIER_PUBLIC_URL makes the webhook {expected} (croupier bot set-webhook)")
    print("\n".join(lines))
    return 0


async def bot_set_menu_button(settings: Settings, url: str, *, text: str) -> int:
    """``croupier bot set-menu-button URL``: the bot's default menu button opens the Mini App at ``url``."""
    if not url.startswith("https://") or len(url) <= len("https://"):
        return _fail(f"URL must be the Mini App's https:// address (Telegram opens no other), got {url!r}", 2)
    if not 1 <= len(text.strip()) <= 64:
        return _fail("--text must be 1-64 characters", 2)
    async with _bot(settings) as bot:
        try:
            await bot.set_chat_menu_button(menu_button=MenuButtonWebApp(text=text, web_app=WebAppInfo(url=url)))
        except AiogramError as exc:
            return _fail(f"setChatMenuButton failed: {_describe(exc, bot.token)}", 1)
    print(f"menu button set: {text!r} opens {url}")
    return 0
