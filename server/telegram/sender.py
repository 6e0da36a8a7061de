"""The notification sender: claims queued notifications and sends them within Telegram's limits.

Every node with a bot runs one :class:`Sender`; any number may run at once on one database:

- **Claims.** A sender claims a batch of due notifications of reachable users (``FOR UPDATE SKIP
  LOCKED``: two senders never claim one row) for a lease (:func:`.notifications.claim`). It sends
  a row only well inside its lease; the rows of a sender that died are due again when their lease
  runs out, and another sender claims them.
- **Limits.** Before each message the sender asks the :class:`~.floodcontrol.FloodGate` (in Redis
  when there are several nodes): at most ``rate`` messages a second for the bot across every
  sender, 1 a second per private chat, 20 a minute per group. One call at a time per node asks
  the gate, in claim order; a message whose chat is full waits aside while the others go.
- **Telegram's answers.** 429: the gate is paused for ``retry_after`` (every sender waits, not just
  this one) and the message is sent after it. 403 (bot blocked, user deactivated) or 400 ``chat not
  found``: the user is marked unreachable and their queue dropped (:func:`.recipients.mark_unreachable`).
  Another 400: dead at once (sending it again would fail again). 5xx, timeouts, network errors:
  retried after a growing delay (:func:`retry_delay`), dead after ``max_attempts`` claims.
  401/404 (a revoked token, a wrong API URL): nothing is given up; this node's sender waits
  (:attr:`SenderOptions.stall`) and tries again. Without the gate (Redis down) nothing is sent.
- **At least once.** A row is marked sent after Telegram's answer. A sender that dies between the
  two (or a request that timed out after Telegram took it) means the message is sent again: at most
  once more per crash, never for a row that was marked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import asyncpg
from aiogram import Bot
from aiogram.exceptions import (
    AiogramError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)

from ..db import UNAVAILABLE_ERRORS
from ..metrics import FLOOD_WAITS, NOTIFICATIONS, notification_outcome
from .bot import redacted
from .floodcontrol import FloodGate, FloodLimits
from .notifications import Notification, claim, give_back, mark_dead, mark_sent, retry_later
from .recipients import Source, mark_unreachable
from .templates import TemplateError, render

log = logging.getLogger(__name__)

_FAILURES: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, asyncpg.PostgresError, ConnectionError)
"""PostgreSQL or the flood gate not answering (the gate raises a ``ConnectionError``)."""
PAUSE_ON_FAILURE = 3.0
"""Seconds the sender waits after PostgreSQL or the flood gate did not answer."""


@dataclass(frozen=True, slots=True)
class SenderOptions:
    """How a sender works; the defaults are production's (see :class:`server.settings.Settings`)."""

    limits: FloodLimits = field(default_factory=FloodLimits)
    max_attempts: int = 8
    """Claims of one notification before it is dead (the first send included)."""
    retry_base: float = 2.0
    retry_cap: float = 600.0
    """The delay before a retry: ``retry_base`` doubled per failed attempt, at most ``retry_cap`` seconds."""
    lease: float = 60.0
    """Seconds a claim lasts; a row is only sent while ``request_timeout`` + 5 s of its lease are left."""
    poll: float = 0.5
    """Seconds between looks at an empty queue."""
    concurrency: int = 8
    """Messages in flight at once on this node (Telegram answers in ~50-300 ms from afar)."""
    batch: int = 0
    """Rows claimed at once; 0: the bot's rate (about one second of sending)."""
    request_timeout: int = 10
    stall: float = 30.0
    """Seconds this node's sender waits after the Bot API refused the bot itself (401, 404)."""


class Action(Enum):
    """What to do with a notification after Telegram's answer."""

    SENT = "sent"
    PAUSE = "pause"
    """429: pause every sender for ``retry_after``, then send it again (the same attempt)."""
    UNREACHABLE = "unreachable"
    """403, or 400 chat not found: mark the user unreachable, drop their queue."""
    RETRY = "retry"
    """A failure that may pass: try again later (or dead, past the attempts)."""
    DEAD = "dead"
    """Telegram refuses it for good (a 400): dead now."""
    STALL = "stall"
    """The bot itself is refused (401, 404: token, URL): hold everything, give nothing up."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """An :class:`Action` with the seconds to pause (``PAUSE``), the source of unreachability and the error text."""

    action: Action
    error: str = ""
    retry_after: float = 0.0
    source: Source | None = None


def verdict_of(exc: Exception | None) -> Verdict:
    """What to do after a ``sendMessage`` that raised ``exc`` (None: it was sent). No I/O."""
    if exc is None:
        return Verdict(Action.SENT)
    error = f"{type(exc).__name__}: {exc.message if isinstance(exc, TelegramAPIError) else exc}"
    if isinstance(exc, TelegramRetryAfter):
        return Verdict(Action.PAUSE, error, retry_after=float(exc.retry_after))
    if isinstance(exc, TelegramForbiddenError):
        return Verdict(Action.UNREACHABLE, error, source=Source.FORBIDDEN)
    if isinstance(exc, TelegramBadRequest):
        if "chat not found" in exc.message.lower():
            return Verdict(Action.UNREACHABLE, error, source=Source.CHAT_NOT_FOUND)
        return Verdict(Action.DEAD, error)
    if isinstance(exc, TelegramUnauthorizedError | TelegramNotFound):
        return Verdict(Action.STALL, error)
    if isinstance(exc, TemplateError):
        return Verdict(Action.DEAD, error)
    return Verdict(Action.RETRY, error)


def retry_delay(attempts: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds before the next try of a notification whose ``attempts``-th try failed: ``base``
    doubled per attempt (``base``, ``2 base``, ``4 base`` ...) up to ``cap``, spread over its upper
    half by ``jitter`` in [0, 1) so that rows failing together do not come back together."""
    full = min(cap, base * 2.0 ** max(0, attempts - 1))
    return full / 2 + full / 2 * jitter


@dataclass(slots=True)
class _Claimed:
    notification: Notification
    deadline: float
    """Monotonic time after which it must not be sent (its lease ends soon after)."""
    not_before: float = 0.0
    """Monotonic time before which its chat is full."""


@dataclass(slots=True)
class SenderStats:
    """What one sender did, for logs, tests and benchmarks."""

    sent: int = 0
    retried: int = 0
    dead: int = 0
    unreachable: int = 0
    throttled: int = 0
    """429 answers this sender got."""
    lost: int = 0
    """Rows given up locally because their lease was about to run out, or whose claim was lost."""


class Sender:
    """Sends the notifications outbox through ``bot`` within the ``gate``'s limits. :meth:`start`,
    then :meth:`close` (sends in flight finish; claimed rows not sent are given back at once)."""

    def __init__(self, pool: asyncpg.Pool, bot: Bot, gate: FloodGate, options: SenderOptions | None = None, *,
                 name: str = "sender", clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random) -> None:  # fmt: skip
        self._pool = pool
        self._bot = bot
        self._gate = gate
        self._options = options or SenderOptions()
        self._clock = clock
        self._jitter = jitter
        self._token = f"{name}:{secrets.token_hex(6)}"
        self._buffer: list[_Claimed] = []
        self._slots = asyncio.Semaphore(self._options.concurrency)
        self._sends: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._held_until = 0.0
        self._next_claim = 0.0
        self.stats = SenderStats()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notification-sender")

    async def close(self) -> None:
        """Stop claiming and sending; wait for the sends in flight; give back what was not sent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sends:
            await asyncio.wait(self._sends, timeout=self._options.request_timeout + 1)
        left, self._buffer = [c.notification for c in self._buffer], []
        with contextlib.suppress(*_FAILURES):
            await give_back(self._pool, left, self._token)

    # ------------------------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except _FAILURES as exc:
                log.warning("notification sender: %s; trying again in %.0f s", type(exc).__name__, PAUSE_ON_FAILURE)
                await asyncio.sleep(PAUSE_ON_FAILURE)
            except Exception:  # a bug must not stop the node's notifications for good
                log.exception("notification sender failed; trying again in %.0f s", PAUSE_ON_FAILURE)
                await asyncio.sleep(PAUSE_ON_FAILURE)

    async def _step(self) -> None:
        options = self._options
        batch = options.batch or options.limits.rate
        if len(self._buffer) < max(1, batch // 2) and self._clock() >= self._next_claim:
            await self._claim(batch)
        now = self._clock()
        if self._held_until > now:  # the Bot API refused the bot itself: this node waits
            await asyncio.sleep(self._held_until - now)
            return
        ready = next((c for c in self._buffer if c.not_before <= now), None)
        if ready is None:
            self._wake.clear()
            soonest = min((c.not_before for c in self._buffer), default=now + options.poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.001, min(options.poll, soonest - now)))
            return
        if now > ready.deadline:
            self._buffer.remove(ready)
            self.stats.lost += 1
            await retry_later(self._pool, ready.notification, self._token, delay=0, error="lease ran out",
                              count_attempt=False)  # fmt: skip
            return
        await self._slots.acquire()
        try:
            wait = await self._gate.take(ready.notification.user_id)
        except BaseException:
            self._slots.release()
            raise
        if wait is not None:
            FLOOD_WAITS["chat" if wait.chat_only else "bot"].n += 1
            self._slots.release()
            if wait.chat_only:  # the others may go meanwhile
                ready.not_before = self._clock() + wait.seconds
            else:
                await asyncio.sleep(wait.seconds)
            return
        self._buffer.remove(ready)
        task = asyncio.create_task(self._send(ready), name=f"notification-{ready.notification.id}")
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _claim(self, batch: int) -> None:
        options = self._options
        held = {c.notification.id for c in self._buffer}
        claimed = await claim(self._pool, batch, lease=options.lease, token=self._token)
        now = self._clock()
        deadline = now + options.lease - options.request_timeout - 5
        self._buffer += [_Claimed(n, deadline) for n in claimed if n.id not in held]
        # Less than asked: the queue is (nearly) empty; look again at the next poll, not at every message.
        self._next_claim = 0.0 if len(claimed) == batch else now + options.poll

    # ---------------------------------------------------------------------------------- one message

    async def _send(self, claimed: _Claimed) -> None:
        notification = claimed.notification
        try:
            try:
                text = render(notification.kind, notification.params, notification.language)
                await self._bot.send_message(chat_id=notification.user_id, text=text,
                                             request_timeout=self._options.request_timeout)  # fmt: skip
                verdict = verdict_of(None)
            except (AiogramError, TemplateError) as exc:
                verdict = verdict_of(exc)
            finally:
                self._slots.release()
            await self._record(claimed, verdict)
        except _FAILURES as exc:
            # Not recorded: the row stays claimed and is sent again once its lease runs out.
            log.warning("notification %d: outcome not recorded (%s); it will be sent again", notification.id,
                        type(exc).__name__)  # fmt: skip
        except Exception:
            log.exception("notification %d: outcome not recorded; it will be sent again", notification.id)

    async def _record(self, claimed: _Claimed, verdict: Verdict) -> None:
        notification, options, stats = claimed.notification, self._options, self.stats
        error = redacted(verdict.error, self._bot.token)
        source = verdict.source.value if verdict.source is not None else None
        NOTIFICATIONS.of(notification_outcome(verdict.action.value, source)).n += 1
        match verdict.action:
            case Action.SENT:
                if await mark_sent(self._pool, notification, self._token):
                    stats.sent += 1
                else:
                    stats.lost += 1
                    log.warning("notification %d sent after its claim was lost: it may be sent twice", notification.id)
            case Action.PAUSE:
                stats.throttled += 1
                left = await self._gate.pause(verdict.retry_after)
                log.warning("Telegram asked to wait %.0f s (429): every sender pauses %.2f s", verdict.retry_after,
                            left)  # fmt: skip
                claimed.not_before = 0.0
                self._buffer.insert(0, claimed)  # the same claim: sent first once the pause ends
                self._wake.set()
            case Action.UNREACHABLE:
                assert verdict.source is not None
                async with self._pool.acquire() as conn, conn.transaction():
                    dropped = await mark_unreachable(conn, notification.user_id, source=verdict.source, reason=error)
                stats.unreachable += 1
                self._buffer = [c for c in self._buffer if c.notification.user_id != notification.user_id]
                log.info("user %d is unreachable (%s): %d notifications dropped", notification.user_id, error, dropped)
            case Action.DEAD:
                await mark_dead(self._pool, notification, self._token, error=error)
                stats.dead += 1
                log.warning("notification %d is dead: %s", notification.id, error)
            case Action.RETRY if notification.attempts >= options.max_attempts:
                await mark_dead(self._pool, notification, self._token, error=error)
                stats.dead += 1
                log.warning("notification %d is dead after %d attempts: %s", notification.id, notification.attempts,
                            error)  # fmt: skip
            case Action.RETRY:
                delay = retry_delay(notification.attempts, base=options.retry_base, cap=options.retry_cap,
                                    jitter=self._jitter())  # fmt: skip
                await retry_later(self._pool, notification, self._token, delay=delay, error=error)
                stats.retried += 1
                log.info("notification %d failed (%s); retry in %.1f s", notification.id, error, delay)
            case Action.STALL:
                log.error("the Bot API refuses the bot (%s): this node's notifications wait %.0f s", error,
                          options.stall)  # fmt: skip
                self._held_until = self._clock() + options.stall
                claimed.not_before = 0.0
                self._buffer.insert(0, claimed)
