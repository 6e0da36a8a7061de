"""The leaderboards in Redis: one sorted set per board period, shared by every node.

- ``<prefix>lb:<scope>:net:<period>:<key>``: users by net winnings (``ZINCRBY``);
- ``<prefix>lb:<scope>:win:<period>:<key>``: users by their biggest win's payout, and beside it the hash
  ``…:bets`` (user -> ``<multiplier>:<bet id>``);
- ``<prefix>lb:batch:<id>``: the guard of an applied batch (``SET NX EX``, :data:`~.store.GUARD_TTL`);
- ``<prefix>lb:built``: when the boards were last rebuilt whole (gone with a Redis that lost its data).

A batch is one Lua script (:data:`_APPLY`): it sets the batch's guard and, only if it was not set, makes
every change of the batch, so a batch applied twice counts once, and a batch is never half applied. Day
and week boards get ``EXPIREAT`` (:func:`~.periods.expires_at`). :meth:`RedisStore.replace` writes every
board under temporary keys first, then renames them over the live ones (and drops the boards that are
gone) in one ``MULTI``: readers see the old boards or the new ones, never a mix. Needs Redis 7 or Valkey
(``ZMSCORE``, ``EXPIRETIME``, a read-only script's flags).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ClusterDownError, ReadOnlyError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..broker.connect import RedisEndpoint
from .boards import BoardChanges, BoardKey, Win, parse_key
from .store import GUARD_TTL, LeaderboardUnavailable, Standing

T = TypeVar("T")

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError,
                ClusterDownError, SlotNotCoveredError)  # a Redis Cluster's master failing over  # fmt: skip
TEMP_TTL = 3600
"""Seconds a rebuild's temporary keys live if the rebuild dies before renaming them."""
_CHUNK = 1000

_APPLY = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local batch = cjson.decode(ARGV[2])
local CHUNK = 1000
for _, board in ipairs(batch[1]) do
  local key, users, deltas = KEYS[board[1]], board[2], board[3]
  for first = 1, #users, CHUNK do
    local last = math.min(#users, first + CHUNK - 1)
    local held = redis.call('ZMSCORE', key, unpack(users, first, last))
    local args = {}
    for j = first, last do
      args[#args + 1] = string.format('%.17g', tonumber(held[j - first + 1] or '0') + tonumber(deltas[j]))
      args[#args + 1] = users[j]
    end
    redis.call('ZADD', key, unpack(args))
  end
end
for _, board in ipairs(batch[2]) do
  local zkey, hkey, users, payouts, bets, texts = KEYS[board[1]], KEYS[board[2]], board[3], board[4], board[5], board[6]
  for first = 1, #users, CHUNK do
    local last = math.min(#users, first + CHUNK - 1)
    local held = redis.call('ZMSCORE', zkey, unpack(users, first, last))
    local scores, fields = {}, {}
    for j = first, last do
      local current, payout = held[j - first + 1], tonumber(payouts[j])
      local better = not current
      if current then
        current = tonumber(current)
        if payout > current then
          better = true
        elseif payout == current then
          local kept = redis.call('HGET', hkey, users[j])
          better = (not kept) or bets[j] < tonumber(string.match(kept, ':(%d+)$'))
        end
      end
      if better then
        scores[#scores + 1] = payouts[j]
        scores[#scores + 1] = users[j]
        fields[#fields + 1] = users[j]
        fields[#fields + 1] = texts[j]
      end
    end
    if #scores > 0 then
      redis.call('ZADD', zkey, unpack(scores))
      redis.call('HSET', hkey, unpack(fields))
    end
  end
end
for _, expiry in ipairs(batch[3]) do
  redis.call('EXPIREAT', KEYS[expiry[1]], expiry[2])
end
return 1
"""
"""KEYS: the guard, then the boards. ARGV: the guard's TTL, and the batch as JSON, ``[net, wins, expiries]``:
``net`` a list of [key index, [user …], [delta …]]; ``wins`` of [board index, hash index, [user …],
[payout …], [bet id …], ["<multiplier>:<bet id>" …]]; ``expiries`` of [key index, Unix second]. Users,
deltas and payouts travel as text (Lua prints large numbers in exponent form). A board takes its changes
in two commands per thousand users (``ZMSCORE``, then one ``ZADD`` of the new scores, written exactly:
integers below 2^53), not one per user: Redis runs the script in about a fifth of the time. Of a user's
win and the one held, the greater payout stands, the earlier bet on a tie (``ZADD GT`` with a tie-break)."""

_TOP_WINS = """#!lua flags=no-writes
local top = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
if #top == 0 then return {top, {}} end
local users = {}
for j = 1, #top, 2 do users[#users + 1] = top[j] end
return {top, redis.call('HMGET', KEYS[2], unpack(users))}
"""


def _win_text(win: Win) -> str:
    return f"{win.multiplier}:{win.bet_id}"


def _parse_win(score: int, text: bytes | str | None) -> Win | None:
    if text is None:
        return None
    value = text.decode() if isinstance(text, bytes) else text
    multiplier, _, bet = value.partition(":")
    return Win(score, int(multiplier), int(bet))


def _score(raw: bytes | str | float) -> int:
    return int(float(raw))


class RedisStore:
    """Boards in Redis at ``url`` (one server, Sentinels or a cluster: :mod:`server.broker.connect`), keys under
    ``prefix`` (on a Redis Cluster under ``<prefix>{lb}:``, all in one slot)."""

    def __init__(self, url: str, *, prefix: str = "croupier:") -> None:
        self._endpoint = RedisEndpoint(url)
        self._client: aioredis.Redis = self._endpoint.client(socket_timeout=5)
        if self._endpoint.location.cluster:  # every key under one hash tag: a batch's script and the rebuild's
            prefix += "{lb}:"  # MULTI touch many boards, so one slot (one master) holds all of them
        self._prefix = prefix
        self._apply = self._client.register_script(_APPLY)
        self._top_wins = self._client.register_script(_TOP_WINS)

    async def built(self) -> bool:
        return bool(await self._call(lambda: self._client.exists(self._prefix + "lb:built")))

    async def apply(self, batch: int, changes: BoardChanges) -> bool:
        keys: list[str] = [f"{self._prefix}lb:batch:{batch}"]
        index: dict[str, int] = {}

        def at(key: str) -> int:
            found = index.get(key)
            if found is None:
                keys.append(self._prefix + key)
                found = index[key] = len(keys)  # Lua counts from 1
            return found

        net = [[at(key), [str(user) for user in scores], [str(delta) for delta in scores.values()]]
               for key, scores in changes.net.items()]  # fmt: skip
        wins = [[at(key), at(key + ":bets"), [str(user) for user in best], [str(w.payout) for w in best.values()],
                 [w.bet_id for w in best.values()], [_win_text(w) for w in best.values()]]
                for key, best in changes.wins.items()]  # fmt: skip
        expiries = [[at(name), when] for key, when in changes.expiries.items() if when is not None
                    for name in ((key, key + ":bets") if key in changes.wins else (key,))]  # fmt: skip
        args: list[int | bytes] = [GUARD_TTL, orjson.dumps([net, wins, expiries])]
        applied = await self._call(lambda: self._apply(keys=keys, args=args))
        return bool(applied)

    async def top(self, board: BoardKey, limit: int) -> list[Standing]:
        key = self._prefix + board.key
        if board.board.metric != "win":
            rows = cast(list[tuple[bytes, float]], await self._call(
                lambda: self._client.zrevrange(key, 0, limit - 1, withscores=True)))  # fmt: skip
            return [Standing(int(user), rank, _score(score)) for rank, (user, score) in enumerate(rows, start=1)]
        flat, bets = await self._call(lambda: self._top_wins(keys=[key, self._prefix + board.wins_key], args=[limit]))
        top: list[Standing] = []
        for rank, (user, raw, bet) in enumerate(zip(flat[::2], flat[1::2], bets, strict=True), start=1):
            score = _score(raw)
            top.append(Standing(int(user), rank, score, _parse_win(score, bet)))
        return top

    async def standings(self, board: BoardKey, user_ids: Sequence[int]) -> dict[int, Standing]:
        if not user_ids:
            return {}
        key = self._prefix + board.key

        async def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for user in user_ids:
                pipe.zrevrank(key, user)
                pipe.zscore(key, user)
            return await pipe.execute()

        replies = await self._call(read)
        standings: dict[int, Standing] = {}
        for user, rank, score in zip(user_ids, replies[::2], replies[1::2], strict=True):
            if rank is not None and score is not None:
                standings[user] = Standing(user, int(rank) + 1, _score(score))
        return standings

    async def replace(self, content: BoardChanges, applied: Sequence[int]) -> None:
        temp = f"{self._prefix}lbtmp:{secrets.token_hex(6)}:"
        boards = content.keys()

        async def write() -> None:
            pipe = self._client.pipeline(transaction=False)
            for key in boards:
                wins = list(content.wins.get(key, {}).items())
                members = list(content.net[key].items()) if key in content.net else [(u, w.payout) for u, w in wins]
                for start in range(0, len(members), _CHUNK):
                    pipe.zadd(temp + key, {str(user): score for user, score in members[start : start + _CHUNK]})
                pipe.expire(temp + key, TEMP_TTL)
                for start in range(0, len(wins), _CHUNK):
                    chunk: dict[Any, Any] = {str(user): _win_text(win) for user, win in wins[start : start + _CHUNK]}
                    pipe.hset(temp + key + ":bets", mapping=chunk)
                if wins:
                    pipe.expire(temp + key + ":bets", TEMP_TTL)
                if len(pipe) > 5000:
                    await pipe.execute()
            await pipe.execute()
            stale = set(await self._board_keys()) - boards.keys()
            swap = self._client.pipeline(transaction=True)  # MULTI ... EXEC: all at once
            for key in stale:  # one key a command, and RENAME by name: redis-py's cluster pipeline takes no other
                swap.delete(self._prefix + key)
                swap.delete(self._prefix + key + ":bets")
            for key in boards:
                names = [key, key + ":bets"] if key in content.wins else [key]
                for name in names:
                    swap.execute_command("RENAME", temp + name, self._prefix + name)
                    when = content.expiries.get(key)
                    if when is None:
                        swap.persist(self._prefix + name)
                    else:
                        swap.expireat(self._prefix + name, when)
            for batch in applied:
                swap.set(f"{self._prefix}lb:batch:{batch}", 1, ex=GUARD_TTL)
            swap.set(self._prefix + "lb:built", int(time.time()))
            await swap.execute()

        await self._call(write)

    async def dump(self) -> BoardChanges:
        async def read() -> BoardChanges:
            content = BoardChanges()
            for key in await self._board_keys():
                parsed = parse_key(key)
                assert parsed is not None
                name = self._prefix + key
                when = await self._client.expiretime(name)
                content.expiries[key] = None if when < 0 else int(when)
                rows = cast(list[tuple[bytes, float]], await self._client.zrange(name, 0, -1, withscores=True))
                scores = {int(user): _score(score) for user, score in rows}
                if parsed.board.metric == "win":
                    held = await self._client.hgetall(name + ":bets")
                    content.wins[key] = {
                        int(user): win for user, text in held.items()
                        if (win := _parse_win(scores[int(user)], text)) is not None
                    }  # fmt: skip
                else:
                    content.net[key] = scores
            return content

        return await self._call(read)

    async def close(self) -> None:
        await self._endpoint.aclose()

    async def _board_keys(self) -> list[str]:
        """Every board period in Redis, as :attr:`BoardKey.key` (without the prefix)."""
        found: list[str] = []
        async for raw in self._client.scan_iter(match=f"{self._prefix}lb:*", count=1000):
            key = (raw.decode() if isinstance(raw, bytes) else str(raw))[len(self._prefix) :]
            if parse_key(key) is not None:
                found.append(key)
        return found

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        try:
            return await command()
        except _UNAVAILABLE as exc:
            raise LeaderboardUnavailable(f"leaderboards unavailable: {type(exc).__name__}: {exc}") from exc
