"""Benchmark: what a settled bet costs the leaderboards, beside the ceiling of the Redis it writes to.

On a fresh database (embedded PostgreSQL with fsync on, or ``--database-url``'s server) and Redis (an
embedded Valkey, or ``--redis-url``):

1. **settlement**: rounds of ``--round-bets`` bets settled through the ledger, alternately with and without
   the leaderboards' settlement hook (its one ``INSERT`` into ``leaderboard_feed`` in the settlement's
   transaction): µs per settled bet the hook adds to a settlement;
2. **relay**: ``--rows`` feed rows (``--users`` players, three games, about half of them wins) relayed in
   batches of ``--batch`` into Redis, then into the in-process store: µs per row and rows/s, and where the
   time goes (PostgreSQL: claim and delete; Python: the batch's changes; the store: the Lua script);
3. **ceiling**: the same Redis taking as many bare ``ZINCRBY`` as the relay's scripts made changes, in
   pipelines of one batch's worth: what no relay on this Redis can beat.

    .venv/bin/python -m loadtest.bench_leaderboard
    .venv/bin/python -m loadtest.bench_leaderboard --rows 200000 --batch 1000 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import time
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg
import hiredis
import redis.asyncio as aioredis

from loadtest.common import bench_database
from server.auth import TelegramUser
from server.db.pool import create_pool
from server.db.provision import migrate_schema
from server.leaderboards import BoardChanges, LeaderboardStore, Planner, SettledBet, record_settled
from server.leaderboards.batches import relay_batches
from server.leaderboards.memory import MemoryStore
from server.leaderboards.redisstore import RedisStore
from server.ledger import BetRequest, ClosedBet, Ledger
from tests.services import EmbeddedRedis

FIRST_USER = 20_000_000

_FEED = """
INSERT INTO leaderboard_feed (bet_id, user_id, game, stake, payout, settled_at)
SELECT i, $2::bigint + (i * 7919) % $3::bigint, (ARRAY['dice', 'crash', 'roulette'])[1 + i % 3], 10,
       CASE WHEN i % 2 = 0 THEN 0 ELSE 10 + (i * 37) % 90 END, now()
FROM generate_series(1, $1::bigint) i
"""
_ROUND = """
INSERT INTO rounds (game, phase, chain_id, chain_idx, seed_hash, closes_at)
VALUES ('dice', 'betting', $1, $2, repeat('0', 64), now() + interval '1 hour') RETURNING id
"""


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    server = EmbeddedRedis()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def bench_settlement(pool: asyncpg.Pool, round_bets: int, rounds: int) -> tuple[float, float]:
    """Mean µs per settled bet of a settlement without, and with, the feed hook."""
    plain, fed = Ledger(pool, welcome_credit=10**9), Ledger(pool, welcome_credit=10**9, on_settled=record_settled)
    await plain.start()
    await fed.start()
    users = [FIRST_USER + 10_000_000 + n for n in range(round_bets)]
    await asyncio.gather(*(plain.sign_in(TelegramUser(id=user, first_name=f"s{user}")) for user in users))
    chain = await pool.fetchval("INSERT INTO seed_chains (game, terminating_hash, length, next_index) "
                                "VALUES ('dice', repeat('0', 64), 100000, 1) RETURNING id")  # fmt: skip
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for n in range(2 * rounds):
            hooked = n % 2 == 1  # alternate, so drift (autovacuum, the machine's other load) hits both alike
            round_id = await pool.fetchval(_ROUND, chain, n + 1)
            bets = [BetRequest(user, "dice", round_id, 10, key=secrets.token_hex(6)) for user in users]
            placed = await asyncio.gather(*(plain.place_bet(bet) for bet in bets))
            payouts = [(bet.bet_id, 19 if i % 2 else 0) for i, bet in enumerate(placed)]
            ledger = fed if hooked else plain
            started = time.perf_counter()
            await ledger.settle(payouts)
            times[hooked].append((time.perf_counter() - started) / round_bets * 1e6)
    finally:
        await plain.close()
        await fed.close()
    await pool.execute("DELETE FROM leaderboard_feed")
    return statistics.median(times[False]), statistics.median(times[True])


class _TimedPlanner(Planner):
    spent = 0.0

    def plan(self, bets: Iterable[SettledBet], now: float, into: BoardChanges | None = None) -> BoardChanges:
        started = time.perf_counter()
        try:
            return super().plan(bets, now, into)
        finally:
            self.spent += time.perf_counter() - started


class _TimedStore:
    def __init__(self, store: LeaderboardStore) -> None:
        self.store = store
        self.spent = 0.0
        self.changes = 0

    async def apply(self, batch: int, changes: BoardChanges) -> bool:
        self.changes += sum(map(len, changes.net.values())) + sum(map(len, changes.wins.values()))
        started = time.perf_counter()
        try:
            return await self.store.apply(batch, changes)
        finally:
            self.spent += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def bench_relay(dsn: str, pool: asyncpg.Pool, store: LeaderboardStore, rows: int, users: int,
                      batch: int) -> tuple[dict[str, float], int]:  # fmt: skip
    """Seconds the relay (:func:`relay_batches`, as a node runs it) spends in PostgreSQL (claims and deletes),
    planning and applying to ``store`` for ``rows`` feed rows; and the board changes it applied."""
    await pool.execute("DELETE FROM leaderboard_feed")
    await pool.execute(_FEED, rows, FIRST_USER, users)
    await pool.execute("VACUUM ANALYZE leaderboard_feed")
    planner, timed = _TimedPlanner(UTC), _TimedStore(store)
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        result = await relay_batches(conn, cast(LeaderboardStore, timed), planner, size=batch, budget=3600)
        total = time.perf_counter() - started
    finally:
        await conn.close()
    assert result.rows == rows, result
    spent = {"postgres": total - planner.spent - timed.spent, "plan": planner.spent, "apply": timed.spent}
    return spent, timed.changes


async def bench_hook(pool: asyncpg.Pool, round_bets: int, rounds: int) -> float:
    """µs per bet of the settlement hook's own statement (the feed's INSERT), in a transaction rolled back."""
    closed = [ClosedBet(n, FIRST_USER + n, "dice", 10, "won" if n % 2 else "lost", 19 if n % 2 else 0, 0, 0)
              for n in range(round_bets)]  # fmt: skip
    times = []
    async with pool.acquire() as conn:
        for _ in range(rounds):
            transaction = conn.transaction()
            await transaction.start()
            started = time.perf_counter()
            await record_settled(conn, closed)
            times.append((time.perf_counter() - started) / round_bets * 1e6)
            await transaction.rollback()
    return statistics.median(times)


def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


async def bench_ceiling(redis_url: str, commands: int, per_pipeline: int) -> float:
    """Seconds the Redis at ``redis_url`` takes for ``commands`` bare ZINCRBY, ``per_pipeline`` at a time, sent as
    prebuilt bytes on one connection and parsed by hiredis: Redis's own rate, not a Python client's."""
    where = urlsplit(redis_url)
    prefix = f"bench-{secrets.token_hex(4)}:".encode()
    pipelines = []
    for start in range(0, commands, per_pipeline):
        count = min(commands, start + per_pipeline) - start
        pipelines.append((b"".join(_resp(b"ZINCRBY", prefix + b"z%d" % (n % 36), b"1", b"%d" % (FIRST_USER + n % 5000))
                                   for n in range(start, start + count)), count))  # fmt: skip
    reader, writer = await asyncio.open_connection(where.hostname, where.port or 6379)
    parser = hiredis.Reader()
    try:
        started = time.perf_counter()
        for payload, count in pipelines:
            writer.write(payload)
            got = 0
            while got < count:
                parser.feed(await reader.read(1 << 16))
                while parser.gets() is not False:
                    got += 1
        return time.perf_counter() - started
    finally:
        writer.close()
        client = aioredis.Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=prefix + b"*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def server_seconds(redis_url: str, command: str) -> float:
    """Seconds Redis itself spent in ``command`` since its stats were last reset (``INFO commandstats``)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        stats = await client.info("commandstats")
        return float(stats.get(f"cmdstat_{command}", {}).get("usec", 0)) / 1e6
    finally:
        await client.aclose()


async def reset_stats(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()


async def run(args: argparse.Namespace, dsn: str, redis_url: str) -> None:
    pool = await create_pool(dsn, min_size=2, max_size=8)
    try:
        await migrate_schema(pool)
        version = await pool.fetchval("SHOW server_version")
        fsync = await pool.fetchval("SHOW fsync")
        print(f"PostgreSQL {version}, fsync={fsync}; Redis at {redis_url}")
        without, with_hook = await bench_settlement(pool, args.round_bets, args.rounds)
        hook = await bench_hook(pool, args.round_bets, 200)
        print(f"settlement of {args.round_bets}-bet rounds (median of {args.rounds} each, fsync'd commits): "
              f"{without:.1f} µs a bet without the feed, {with_hook:.1f} µs with it; the feed's INSERT alone "
              f"(median of 200, rolled back): {hook:.1f} µs a settled bet")  # fmt: skip
        results: dict[str, tuple[dict[str, float], int]] = {}
        redis_store = RedisStore(redis_url, prefix=f"bench-{secrets.token_hex(4)}:")
        await reset_stats(redis_url)
        try:
            results["redis"] = await bench_relay(dsn, pool, redis_store, args.rows, args.users, args.batch)
        finally:
            await redis_store.close()
        in_script = await server_seconds(redis_url, "evalsha")
        results["memory"] = await bench_relay(dsn, pool, MemoryStore(), args.rows, args.users, args.batch)
        for name, (spent, _) in results.items():
            total = sum(spent.values())
            parts = ", ".join(f"{part} {seconds / args.rows * 1e6:.1f}" for part, seconds in spent.items())
            print(f"relay into {name} ({args.rows:,} rows, batches of {args.batch}): {total / args.rows * 1e6:.1f} µs "
                  f"a row, {args.rows / total:,.0f} rows/s (µs a row: {parts})")  # fmt: skip
        changes = results["redis"][1]
        per_batch = max(1, changes * args.batch // args.rows)
        await reset_stats(redis_url)
        bare = await bench_ceiling(redis_url, changes, per_batch)
        in_bare = await server_seconds(redis_url, "zincrby")
        applied = results["redis"][0]["apply"]
        print(f"  inside Redis: the relay's scripts {in_script / args.rows * 1e6:.1f} µs a row "
              f"({changes / args.rows:.1f} board changes a row)")  # fmt: skip
        print(f"ceiling: the same Redis, {changes:,} bare ZINCRBY (one per board change) in pipelines of {per_batch}: "
              f"{bare / args.rows * 1e6:.1f} µs a row, {args.rows / bare:,.0f} rows/s, {changes / bare:,.0f} "
              f"commands/s (inside Redis {in_bare / args.rows * 1e6:.1f} µs a row); the relay's apply takes "
              f"{applied / bare:.1f}x the ceiling's time")  # fmt: skip
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="feed rows to relay (default 50,000)")
    parser.add_argument("--users", type=int, default=2_000, help="players the rows are spread over")
    parser.add_argument("--batch", type=int, default=500, help="rows a batch takes (the relay's default: 500)")
    parser.add_argument("--round-bets", type=int, default=100, help="bets a settled round holds")
    parser.add_argument("--rounds", type=int, default=20, help="rounds settled each way")
    parser.add_argument("--database-url", default=None, help="server to create the bench database on "
                        "(default: an embedded PostgreSQL with fsync on)")  # fmt: skip
    parser.add_argument("--redis-url", default=None, help="Redis to use (default: an embedded Valkey)")
    args = parser.parse_args()
    with bench_database(args.database_url) as dsn, redis_server(args.redis_url) as redis_url:
        asyncio.run(run(args, dsn, redis_url))


if __name__ == "__main__":
    main()
