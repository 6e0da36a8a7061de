"""Benchmark: what the players' own limits add to bet batches and settlements (server/ledger/bets.py).

A bet batch reads each wallet's ``limited`` flag with the row it locks anyway; only when the batch holds
flagged players (who set a limit or an exclusion) does it run more: their limits and usage
(:data:`server.players.limitstore.BATCH_LIMITS`) and, when it accepts their stakes, the usage upsert
(:func:`~server.players.limitstore.count_stakes`). A settlement paying flagged players adds their payouts to
their usage (:func:`~server.players.limitstore.count_paid_back`). On a fresh database (embedded PostgreSQL, or
``--database-url``'s server) with ``--users`` players, ``--limited`` percent of them with a loss limit and usage
rows (a tenth of those in a cool-off), this times those three statements for ``--flagged`` flagged players of
a batch, interleaved round after round on one connection, each in a transaction that is rolled back (less the
same transaction with ``SELECT 1`` in its place: a batch commits anyway), beside ``SELECT 1`` alone (the
ceiling: what any statement costs here).

    .venv/bin/python -m loadtest.bench_limits --users 100000 --limited 1 --flagged 1 10
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import time
from collections.abc import Awaitable, Callable

from loadtest.common import bench_database
from server.db.pool import create_pool
from server.db.provision import migrate_schema
from server.db.transactions import Connection
from server.players import Calendar
from server.players.limitstore import BATCH_LIMITS, count_paid_back, count_stakes, read_batch_limits

FIRST_USER = 20_000_000

_FILL = [
    "INSERT INTO users (id, first_name) SELECT $1::bigint + u, 'p' || u FROM generate_series(0, $2::bigint - 1) u",
    """INSERT INTO accounts (kind, user_id, balance, limited) SELECT 'wallet', $1::bigint + u, 1000000, u % $3 = 0
       FROM generate_series(0, $2::bigint - 1) u""",
    """INSERT INTO player_limits (user_id, kind, period, amount)
       SELECT user_id, 'loss', 'day', 100000 FROM accounts WHERE limited""",
    """INSERT INTO player_limit_usage (user_id, period, starts_at, wagered, paid)
       SELECT l.user_id, p, date_trunc(p, now()), 500, 100
       FROM player_limits l, unnest(ARRAY['day', 'week', 'month']) p""",
    """INSERT INTO player_exclusions (user_id, kind, until)
       SELECT user_id, 'cool_off', now() + interval '1 day' FROM player_limits WHERE user_id % (10 * $1) = 0""",
    "ANALYZE",
]


async def timed(run: Callable[[], Awaitable[None]], iterations: int) -> float:
    """Median seconds of ``run()`` over ``iterations`` calls."""
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        await run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def bench(database_url: str, users: int, limited_percent: float, flagged: list[int], iterations: int,
                rounds: int) -> None:  # fmt: skip
    await migrate_schema(database_url)
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            every = max(1, round(100 / limited_percent))
            await conn.execute(_FILL[0], FIRST_USER, users)
            await conn.execute(_FILL[1], FIRST_USER, users, every)
            await conn.execute(_FILL[2])
            await conn.execute(_FILL[3])
            await conn.execute(_FILL[4], every)
            await conn.execute(_FILL[5])
            limited = [row["user_id"] for row in await conn.fetch("SELECT user_id FROM player_limits")]
            excluded = await conn.fetchval("SELECT count(*) FROM player_exclusions")
            print(f"{users:,} players, {len(limited):,} with a loss limit ({excluded:,} of them in a cool-off)")
            ceiling = statistics.median([await timed(lambda: _select_one(conn), iterations) for _ in range(rounds)])
            print(f"ceiling, SELECT 1: {ceiling * 1e6:.0f} µs")
            for count in flagged:
                results = await _interleaved(conn, limited, count, iterations, rounds)
                med = {name: statistics.median(values) * 1e6 for name, values in results.items()}
                stakes, paid = med["stakes"] - med["empty"], med["paid"] - med["empty"]
                print(
                    f"{count} flagged in a batch: limits read {med['read']:.0f} µs, stakes counted {stakes:.0f} µs, "
                    f"payouts counted at settlement {paid:.0f} µs (the empty transaction {med['empty']:.0f} µs)"
                )
    finally:
        await pool.close()
    print("a batch or settlement without flagged players: no statement more (the flag comes with the wallet row)")


async def _select_one(conn: Connection) -> None:
    await conn.fetchval("SELECT 1")


async def _interleaved(conn: Connection, limited: list[int], count: int, iterations: int,
                       rounds: int) -> dict[str, list[float]]:  # fmt: skip
    rng = random.Random(7)
    calendar = Calendar()
    now = dt.datetime.now(dt.UTC)

    def sample() -> list[int]:
        return sorted(rng.sample(limited, count))

    async def read() -> None:
        read_batch_limits(await conn.fetchval(BATCH_LIMITS, sample()))

    async def rolled_back(work: Callable[[list[int]], Awaitable[None]]) -> None:
        ids = sample()
        transaction = conn.transaction()
        await transaction.start()
        await work(ids)
        await transaction.rollback()

    async def stakes() -> None:
        await rolled_back(lambda ids: count_stakes(conn, [(user, 10) for user in ids], now, calendar))

    async def paid() -> None:
        await rolled_back(lambda ids: count_paid_back(conn, [(user, 20) for user in ids]))

    async def empty() -> None:
        await rolled_back(lambda ids: _select_one(conn))

    results: dict[str, list[float]] = {"read": [], "stakes": [], "paid": [], "empty": []}
    for _ in range(rounds):
        for name, run in (("empty", empty), ("read", read), ("stakes", stakes), ("paid", paid)):
            results[name].append(await timed(run, iterations))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--limited", type=float, default=1.0, help="percent of players with a loss limit")
    parser.add_argument("--flagged", type=int, nargs="+", default=[1, 10], help="flagged players in a batch")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: embedded)")
    args = parser.parse_args()
    with bench_database(args.database_url) as url:
        asyncio.run(bench(url, args.users, args.limited, args.flagged, args.iterations, args.rounds))


if __name__ == "__main__":
    main()
