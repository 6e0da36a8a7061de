"""Per-user quotas shared by every node: request tokens and the list of a user's sockets.

Two small operations, with an in-process backend for a single node and a Redis backend for a
cluster (the same URL as the broker; chosen by :func:`quota_from_url`):

- :meth:`UserQuota.take_tokens`: a token bucket per user (``rate`` a second, ``burst``) from
  which a node takes several tokens at once, so a busy user costs one round trip per handful of
  requests, not one per request;
- :meth:`UserQuota.add_socket` / :meth:`UserQuota.remove_socket`: a user's sockets, oldest
  first, across nodes; adding one past the cap returns the oldest to close.

Times come from the Redis server (``TIME``) so nodes' clocks do not matter.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

from .connect import RedisEndpoint

IN_FLIGHT = 64
"""Quota commands one node has at Redis at once; more wait their turn here. redis-py's connection pool
refuses the 101st concurrent command ("Too many connections") rather than queueing it: a storm of 1,000
sign-ins on a node made the quota fall back to node-local limits for a moment before this bound."""

SOCKETS_TTL = 86_400
"""Seconds a user's socket list lives after its last change (entries of a node that died go with it,
or are the first closed when the user opens more)."""

_TAKE_TOKENS = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, last = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, last = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
local granted = math.min(want, math.floor(tokens))
redis.call('HSET', KEYS[1], 't', tostring(tokens - granted), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return granted
"""

_ADD_SOCKET = """
local now = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(now[1]) * 1000000 + tonumber(now[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local count, cap = redis.call('ZCARD', KEYS[1]), tonumber(ARGV[2])
if count <= cap then return {} end
local oldest = redis.call('ZRANGE', KEYS[1], 0, count - cap - 1)
redis.call('ZREM', KEYS[1], unpack(oldest))
return oldest
"""


class UserQuota(Protocol):
    """Quotas of users, shared by the nodes that use the same backend."""

    async def take_tokens(self, user_id: int, want: int, rate: float, burst: int) -> int:
        """Take up to ``want`` tokens from the user's bucket; return how many were granted (0: over the rate)."""
        ...

    async def add_socket(self, user_id: int, socket: str, cap: int) -> list[str]:
        """Record a new socket of the user; return the oldest sockets past ``cap`` (now forgotten) to close."""
        ...

    async def remove_socket(self, user_id: int, socket: str) -> None:
        """Forget a closed socket."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryQuota:
    """The single-node backend: the same rules, kept in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}
        self._sockets: dict[int, OrderedDict[str, None]] = {}

    async def take_tokens(self, user_id: int, want: int, rate: float, burst: int) -> int:
        now = self._clock()
        tokens, last = self._buckets.get(user_id, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        granted = min(want, int(tokens))
        self._buckets[user_id] = (tokens - granted, now)
        if len(self._buckets) > 100_000:  # forget full buckets: they are the default
            self._buckets = {u: (t, ts) for u, (t, ts) in self._buckets.items() if t + (now - ts) * rate < burst}
        return granted

    async def add_socket(self, user_id: int, socket: str, cap: int) -> list[str]:
        sockets = self._sockets.setdefault(user_id, OrderedDict())
        sockets[socket] = None
        evicted: list[str] = []
        while len(sockets) > cap:
            evicted.append(sockets.popitem(last=False)[0])
        return evicted

    async def remove_socket(self, user_id: int, socket: str) -> None:
        sockets = self._sockets.get(user_id)
        if sockets is not None:
            sockets.pop(socket, None)
            if not sockets:
                del self._sockets[user_id]

    async def close(self) -> None:
        self._buckets.clear()
        self._sockets.clear()


class RedisQuota:
    """The cluster backend: one bucket hash and one sorted set of sockets per user in Redis (``url``: one
    server or Sentinels, see :mod:`.connect`)."""

    def __init__(self, url: str, *, prefix: str = "croupier:") -> None:
        self._endpoint = RedisEndpoint(url)
        self._client: aioredis.Redis = self._endpoint.client(socket_timeout=2)
        self._prefix = prefix
        self._take = self._client.register_script(_TAKE_TOKENS)
        self._add = self._client.register_script(_ADD_SOCKET)
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)

    async def take_tokens(self, user_id: int, want: int, rate: float, burst: int) -> int:
        async with self._in_flight:
            granted = await self._take(keys=[f"{self._prefix}rate:{user_id}"], args=[rate, burst, want])
        return int(granted)

    async def add_socket(self, user_id: int, socket: str, cap: int) -> list[str]:
        async with self._in_flight:
            oldest = await self._add(keys=[self._sockets_key(user_id)], args=[socket, cap, SOCKETS_TTL])
        return [member.decode() if isinstance(member, bytes) else str(member) for member in oldest]

    async def remove_socket(self, user_id: int, socket: str) -> None:
        async with self._in_flight:
            await self._client.zrem(self._sockets_key(user_id), socket)

    async def close(self) -> None:
        await self._endpoint.aclose()

    def _sockets_key(self, user_id: int) -> str:
        return f"{self._prefix}sockets:{user_id}"


def quota_from_url(url: str | None, *, prefix: str = "croupier:") -> UserQuota:
    """The in-process backend when ``url`` is None (one node), else Redis at ``url``."""
    if url is None:
        return MemoryQuota()
    return RedisQuota(url, prefix=prefix)
