"""Telegram's flood limits on sending, shared by every sender of one bot: the :class:`FloodGate`.

Telegram lets a bot send about 30 messages a second in all, 1 a second to one private chat and 20 a
minute to one group, and answers 429 with ``retry_after`` beyond that. The gate keeps a sliding
window of the messages let through for the bot and one per chat, and lets a message through only
when both have room (:meth:`FloodGate.take`); after a 429 it holds every message for ``retry_after``
(:meth:`FloodGate.pause`). Two backends, chosen by :func:`flood_gate_from_url` like the broker's:

- :class:`MemoryFloodGate`: in this process, for a single node (no ``REDIS_URL``);
- :class:`RedisFloodGate`: one Lua script per message in Redis, so the windows and the pause are
  the same for every node (times from the Redis server's clock: the nodes' clocks do not matter).

Sliding windows, not token buckets: Telegram counts the messages of any second, so a bucket that
refills at the rate would let a burst of ``burst + rate`` messages into one second. Each window is
lengthened by :attr:`FloodLimits.margin`: a message is stamped here when it is let through but
counted by Telegram when it arrives, and two arrivals can be closer together than their stamps (one
request was held up on the way). And the bot's messages are paced (:attr:`FloodLimits.spacing`, 90 %
of the rate's interval): a window's messages leave spread over it, not in one burst at its start,
whose requests would queue at the server, arrive spread over tens of milliseconds and straddle two
of Telegram's windows; after a pause they trickle back instead of all landing at once.

The arithmetic (:class:`SlidingWindow`, :class:`FloodState`) has no I/O and takes the time as an
argument; the Lua script mirrors it, and one conformance suite runs over both with a fake clock.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..broker.connect import RedisEndpoint


class FloodGateUnavailable(ConnectionError):
    """The shared gate (Redis) did not answer: nothing may be sent until it does (a node alone would not
    know what the others send)."""


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """At most ``rate`` messages in any ``window`` seconds for the bot, ``private_limit`` per
    ``private_window`` to one private chat (a positive chat id) and ``group_limit`` per
    ``group_window`` to one group or channel; every window lengthened by ``margin`` seconds."""

    rate: int = 30
    window: float = 1.0
    private_limit: int = 1
    private_window: float = 1.0
    group_limit: int = 20
    group_window: float = 60.0
    margin: float = 0.02
    pace: float = 0.9
    """The bot's messages also go at least ``pace`` x (window + margin) / rate apart (0: no pacing)."""

    def __post_init__(self) -> None:
        if min(self.rate, self.private_limit, self.group_limit) < 1:
            raise ValueError("every flood limit is at least one message")
        if min(self.window, self.private_window, self.group_window) <= 0 or self.margin < 0:
            raise ValueError("every flood window is positive, and the margin not negative")
        if not 0 <= self.pace <= 1:
            raise ValueError("the pace is from 0 (none) to 1 (exactly the rate)")

    def of_chat(self, chat_id: int) -> tuple[int, float]:
        """(limit, window with the margin) of one chat: private for a positive id, a group otherwise."""
        if chat_id > 0:
            return self.private_limit, self.private_window + self.margin
        return self.group_limit, self.group_window + self.margin

    @property
    def bot_window(self) -> float:
        """The bot's window with the margin."""
        return self.window + self.margin

    @property
    def spacing(self) -> float:
        """The least time between two messages of the bot."""
        return self.pace * self.bot_window / self.rate


@dataclass(frozen=True, slots=True)
class Wait:
    """A message that may not go now: ``seconds`` until the bot may send again (a pause, its window,
    its pace), or with ``chat_only`` until the message's chat has room (the bot has room now: other
    chats' messages may go meanwhile)."""

    seconds: float
    chat_only: bool = False


class SlidingWindow:
    """The times of the messages let through in the last ``seconds``; full at ``limit``."""

    __slots__ = ("limit", "seconds", "stamps")

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.stamps: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more message fits at ``now`` (0 when it fits now). A stamp exactly
        ``seconds`` old is out of the window (as Telegram's and the test server's count)."""
        while self.stamps and self.stamps[0] <= now - self.seconds:
            self.stamps.popleft()
        if len(self.stamps) < self.limit:
            return 0.0
        return self.stamps[len(self.stamps) - self.limit] + self.seconds - now

    def add(self, now: float) -> None:
        """Count one message let through at ``now``."""
        self.stamps.append(now)


class FloodState:
    """The bot's window, one window per chat and the pause: the gate's rules, without I/O."""

    MAX_CHATS = 100_000
    """Chat windows kept before the empty ones are forgotten."""

    def __init__(self, limits: FloodLimits) -> None:
        self.limits = limits
        self.bot = SlidingWindow(limits.rate, limits.bot_window)
        self.chats: dict[int, SlidingWindow] = {}
        self.paused_until = 0.0

    def take(self, chat_id: int, now: float) -> Wait | None:
        """Let one message to ``chat_id`` through at ``now`` (None), or say how long to wait (nothing counted)."""
        if self.paused_until > now:
            return Wait(self.paused_until - now)
        window = self.chats.get(chat_id)
        if window is None:
            window = SlidingWindow(*self.limits.of_chat(chat_id))
        bot_wait, chat_wait = self.bot.wait(now), window.wait(now)
        if self.bot.stamps:
            bot_wait = max(bot_wait, self.bot.stamps[-1] + self.limits.spacing - now)
        if bot_wait > 0:  # whatever the chat: ask again then
            return Wait(bot_wait)
        if chat_wait > 0:
            return Wait(chat_wait, chat_only=True)
        if chat_id not in self.chats:
            if len(self.chats) >= self.MAX_CHATS:
                self._forget_idle(now)
            self.chats[chat_id] = window
        self.bot.add(now)
        window.add(now)
        return None

    def _forget_idle(self, now: float) -> None:
        for chat_id, window in list(self.chats.items()):
            window.wait(now)  # drops the stamps out of the window
            if not window.stamps:
                del self.chats[chat_id]

    def pause(self, seconds: float, now: float) -> float:
        """Hold every message for ``seconds`` from ``now`` (a pause already longer stays); returns
        the seconds the pause still lasts."""
        self.paused_until = max(self.paused_until, now + seconds)
        return self.paused_until - now


class FloodGate(Protocol):
    """Telegram's flood limits for one bot, shared by the senders that use the same backend."""

    async def take(self, chat_id: int) -> Wait | None:
        """Let one message to ``chat_id`` go now (None: counted), or say how long to wait (nothing counted)."""
        ...

    async def pause(self, seconds: float) -> float:
        """Hold every message of every sender for ``seconds`` (Telegram's ``retry_after``); returns
        how long the pause still lasts (a longer one already on stays)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryFloodGate:
    """The single-node backend: :class:`FloodState` in this process, on ``clock`` (monotonic seconds)."""

    def __init__(self, limits: FloodLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._state = FloodState(limits)
        self._clock = clock

    async def take(self, chat_id: int) -> Wait | None:
        return self._state.take(chat_id, self._clock())

    async def pause(self, seconds: float) -> float:
        return self._state.pause(seconds, self._clock())

    async def close(self) -> None:
        return None


# Both scripts start here: ``now`` in microseconds, ARGV[1] when the caller gives it (tests), else
# the server's TIME (one clock for every node).
_NOW = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
"""

# The same rules as FloodState, in microseconds. KEYS: the bot's window, the chat's window (sorted sets
# of stamps), the pause (the microsecond it ends). ARGV: now (empty: the server's TIME), the bot's limit
# and window, the chat's limit and window, a unique member. Returns {wait, chat_only}: wait 0 = let through.
_TAKE = (
    _NOW
    + """
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then return {paused - now, 0} end
local function wait_of(key, limit, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window))
  local count = redis.call('ZCARD', key)
  if count < limit then return 0 end
  local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
local bot_limit, bot_window = tonumber(ARGV[2]), tonumber(ARGV[3])
local chat_limit, chat_window = tonumber(ARGV[4]), tonumber(ARGV[5])
local bot_wait = wait_of(KEYS[1], bot_limit, bot_window)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then bot_wait = math.max(bot_wait, tonumber(last[2]) + tonumber(ARGV[7]) - now) end
local chat_wait = wait_of(KEYS[2], chat_limit, chat_window)
if bot_wait > 0 then return {bot_wait, 0} end
if chat_wait > 0 then return {chat_wait, 1} end
local stamp = string.format('%d', now)  -- not tostring: Lua writes large numbers as 1.7e+15
redis.call('ZADD', KEYS[1], stamp, ARGV[6])
redis.call('PEXPIRE', KEYS[1], math.ceil(bot_window / 1000) + 1000)
redis.call('ZADD', KEYS[2], stamp, ARGV[6])
redis.call('PEXPIRE', KEYS[2], math.ceil(chat_window / 1000) + 1000)
return {0, 0}
"""
)

# KEYS: the pause. ARGV: now (empty: TIME), the pause in microseconds. Returns the microseconds it still lasts.
_PAUSE = (
    _NOW
    + """
local ends = now + tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if ends > current then
  redis.call('SET', KEYS[1], string.format('%d', ends), 'PX', math.ceil((ends - now) / 1000) + 1000)
  current = ends
end
return current - now
"""
)


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


class RedisFloodGate:
    """The cluster backend: the bot's window, each chat's window and the pause in Redis, under
    ``<prefix>flood:{<bot id>}:…`` (one hash slot per bot, for Redis Cluster). ``clock``, if given,
    replaces the Redis server's time (seconds; the tests' fake clock). Raises
    :class:`FloodGateUnavailable` when Redis does not answer: the caller sends nothing then."""

    def __init__(self, url: str, limits: FloodLimits, *, bot_id: int, prefix: str = "croupier:",
                 clock: Callable[[], float] | None = None) -> None:  # fmt: skip
        self._endpoint = RedisEndpoint(url)  # one server or Sentinels: the same URL forms as the broker's
        self._client: aioredis.Redis = self._endpoint.client(socket_timeout=2)
        self._limits = limits
        self._base = f"{prefix}flood:{{{bot_id}}}:"
        self._clock = clock
        self._take = self._client.register_script(_TAKE)
        self._pause = self._client.register_script(_PAUSE)
        self._member = f"{secrets.token_hex(6)}:"
        self._serial = itertools.count()

    async def take(self, chat_id: int) -> Wait | None:
        chat_limit, chat_window = self._limits.of_chat(chat_id)
        try:
            wait, chat_only = await self._take(
                keys=[self._base + "all", f"{self._base}chat:{chat_id}", self._base + "paused"],
                args=[self._now(), self._limits.rate, _micros(self._limits.bot_window), chat_limit,
                      _micros(chat_window), f"{self._member}{next(self._serial)}", _micros(self._limits.spacing)],
            )  # fmt: skip
        except RedisError as exc:
            raise FloodGateUnavailable(f"redis: {type(exc).__name__}") from exc
        return None if int(wait) <= 0 else Wait(int(wait) / 1_000_000, chat_only=bool(int(chat_only)))

    async def pause(self, seconds: float) -> float:
        try:
            left = await self._pause(keys=[self._base + "paused"], args=[self._now(), _micros(seconds)])
        except RedisError as exc:
            raise FloodGateUnavailable(f"redis: {type(exc).__name__}") from exc
        return int(left) / 1_000_000

    async def close(self) -> None:
        await self._endpoint.aclose()

    def _now(self) -> str:
        return "" if self._clock is None else str(_micros(self._clock()))


def flood_gate_from_url(url: str | None, limits: FloodLimits, *, bot_id: int, prefix: str = "croupier:") -> FloodGate:
    """The in-process gate when ``url`` is None (one node), else the gate in Redis at ``url``."""
    if url is None:
        return MemoryFloodGate(limits)
    return RedisFloodGate(url, limits, bot_id=bot_id, prefix=prefix)
