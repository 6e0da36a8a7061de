"""Long polling (``getUpdates``): the bot's updates without a public URL, for development.

A node with a bot token of its own and no ``CROUPIER_PUBLIC_URL`` (with ``CROUPIER_DEV=1``, or
``CROUPIER_POLLING=1``: see :class:`server.settings.Settings`) asks Telegram for updates itself, and
hands each one to the same :class:`~.router.UpdateRouter` as the webhook: ``make run`` with a real
bot token takes payments and answers commands behind no tunnel.

- **One node polls.** Telegram serves one ``getUpdates`` per bot at a time (a second one ends the
  first with 409), so the nodes of one database take turns: the poller is the node holding the
  bot's PostgreSQL advisory lock (:class:`PollingLease`, class ``POLL`` and the bot id, on a
  connection of its own, as :class:`server.rounds.lease.GameLocks` does for games). The others
  stand by and try again every :data:`STANDBY_RETRY` seconds; if the poller's connection drops,
  PostgreSQL releases the lock and another node takes over.
- **Offsets.** Updates are handled in order, each one to the end (an answer sent, a payment
  committed) before the next; the next ``getUpdates`` passes ``offset`` = the last handled
  ``update_id`` + 1, which confirms them to Telegram. An update that could not be handled now
  (PostgreSQL or the Bot API did not answer) is not confirmed: the next call returns it again after a
  pause. Handling is idempotent by ``update_id`` (:mod:`.updates`), so an update fetched twice (a
  takeover, a crash before the confirmation) changes nothing the second time.
- **A webhook wins.** While a webhook is set Telegram answers ``getUpdates`` with 409: the poller says
  so in the log (``croupier bot delete-webhook`` to poll) and tries again every :data:`CONFLICT_RETRY` s.
- **Stopping.** :meth:`UpdatePoller.close` ends a ``getUpdates`` in flight at once, lets an update
  being handled finish, confirms the handled updates with one last short call, then releases the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiogram import Bot
from aiogram.exceptions import AiogramError, TelegramConflictError, TelegramUnauthorizedError
from aiogram.types import Update

from ..db.transactions import DatabaseUnavailable
from .bot import API_TIMEOUT, redacted
from .errors import BotApiUnavailable
from .router import UpdateRouter

log = logging.getLogger(__name__)

LOCK_CLASS = 0x504F4C4C
"""Advisory lock namespace "POLL" of the polling lease; the bot id (mod 2^31-1) is the second key."""
ALLOWED_UPDATES = ["message", "pre_checkout_query"]
"""The updates asked for: payments, refunds and commands come as messages."""
POLL_TIMEOUT = 25
"""Seconds one ``getUpdates`` waits for an update (Telegram answers at once when one is waiting)."""
STANDBY_RETRY = 2.0
"""Seconds between a standby node's tries of the lease."""
CONFLICT_RETRY = 10.0
"""Seconds between tries while Telegram answers 409 (a webhook is set, or another poller runs)."""
MAX_BACKOFF = 30.0
"""Longest pause after failures (the Bot API or PostgreSQL not answering); it doubles from 1 s."""
STOP_GRACE = 10.0
"""Seconds :meth:`UpdatePoller.close` lets an update being handled finish."""


class PollingLease:
    """The right to poll ``bot_id``'s updates: a session advisory lock on a connection of its own, to
    ``dsn``: the node's session DSN, never a transaction-mode pooler (see :mod:`server.db.pool`)."""

    def __init__(self, dsn: str, bot_id: int) -> None:
        self._dsn = dsn
        self._key = bot_id % 2147483647
        self._conn: asyncpg.Connection | None = None
        self._held = False

    async def hold(self) -> bool:
        """True while this node holds the lease (taking it when free); False when another node holds it
        or PostgreSQL cannot be reached."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._held = False
                self._conn = await asyncpg.connect(self._dsn)
            if self._held:
                await self._conn.fetchval("SELECT 1")  # still connected: the lock is still ours
                return True
            self._held = bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, self._key))
            return self._held
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("polling lease unavailable: %s", type(exc).__name__)
            self._forget()
            return False

    async def close(self) -> None:
        """Release the lease (its connection closes)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None
        self._held = False

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
        self._conn = None
        self._held = False


class UpdatePoller:
    """Polls one bot's updates while it holds the lease and hands them to ``router``. :meth:`start`, then
    :meth:`close` (the node does both)."""

    def __init__(self, bot: Bot, router: UpdateRouter, lease: PollingLease, *, poll_timeout: int = POLL_TIMEOUT,
                 standby_retry: float = STANDBY_RETRY) -> None:  # fmt: skip
        self._bot = bot
        self._router = router
        self._lease = lease
        self._poll_timeout = poll_timeout
        self._standby_retry = standby_retry
        self._offset: int | None = None
        self._confirmed: int | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.polling = False
        """Whether this node is the one polling (holds the lease)."""

    def start(self) -> None:
        """Start polling in the background (standing by while another node polls)."""
        self._task = asyncio.create_task(self._run(), name="telegram-poller")

    async def close(self) -> None:
        """Stop: see the module's docstring."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, STOP_GRACE)
            except TimeoutError:
                log.warning("polling: an update still being handled after %.0f s was interrupted", STOP_GRACE)
        try:
            if self.polling and self._offset is not None and self._offset != self._confirmed:
                with contextlib.suppress(AiogramError):
                    await self._bot.get_updates(offset=self._offset, limit=1, timeout=0, request_timeout=2)
        finally:
            self.polling = False
            await self._lease.close()

    async def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            if not await self._lease.hold():
                if self.polling:
                    log.warning("polling: the lease was lost; standing by")
                self.polling = False
                await self._pause(self._standby_retry)
                continue
            if not self.polling:
                log.info("polling: this node polls the bot's updates (getUpdates)")
                self.polling = True
            try:
                updates = await self._next_updates()
            except TelegramConflictError as exc:
                log.warning("polling: Telegram refuses getUpdates (%s); a webhook is set (croupier bot delete-webhook "
                            "to poll) or another poller runs; trying again in %.0f s", self._describe(exc),
                            CONFLICT_RETRY)  # fmt: skip
                await self._pause(CONFLICT_RETRY)
                continue
            except TelegramUnauthorizedError:
                log.error("polling: Telegram refuses the bot token (401); trying again in %.0f s", MAX_BACKOFF)
                await self._pause(MAX_BACKOFF)
                continue
            except AiogramError as exc:
                log.warning("polling: getUpdates failed (%s); trying again in %.0f s", self._describe(exc), backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if updates is None:  # stopping
                return
            self._confirmed = self._offset
            if await self._handle(updates):
                backoff = 1.0
            else:
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _next_updates(self) -> list[Update] | None:
        """The next updates (confirming those handled), or None when the poller stops while it waits."""
        call = asyncio.create_task(self._bot.get_updates(
            offset=self._offset, timeout=self._poll_timeout, allowed_updates=ALLOWED_UPDATES,
            request_timeout=int(API_TIMEOUT + self._poll_timeout)))  # fmt: skip
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({call, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not call.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, AiogramError):
                    await call
        return call.result() if not call.cancelled() else None

    async def _handle(self, updates: list[Update]) -> bool:
        """Handle ``updates`` in order, moving the offset past each one handled; False when one could not be
        handled now (it and those after it are fetched again)."""
        for update in updates:
            if self._stopping.is_set():  # the rest stay unconfirmed: the next poller gets them
                return True
            try:
                await self._router.handle(update)
            except (DatabaseUnavailable, BotApiUnavailable) as exc:
                log.warning("polling: update %d not handled now (fetched again): %s", update.update_id, exc)
                return False
            except Exception:  # a bug: logged, and the update skipped rather than fetched forever
                log.exception("polling: update %d failed; skipped", update.update_id)
            self._offset = update.update_id + 1
        return True

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the poller stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _describe(self, exc: AiogramError) -> str:
        return redacted(f"{type(exc).__name__}: {exc}".replace("\n", " "), self._bot.token)
