"""Benchmark: a player's history pages (``my_bets``, ``my_transactions``) with millions of bets in the table.

On a fresh database (embedded PostgreSQL with fsync on, or ``--database-url``'s server), the schema is
migrated and filled in bulk with SQL: ``--users`` players, ``--bets`` bets spread evenly over them and over
``--rounds`` settled dice rounds (one seed chain), one ledger transaction per stake and the wallets' legs.
Then ``--queries`` first pages (and as many second pages, from the first's cursor) for random players are
read through :class:`server.players.PlayerHistory`, the code the socket requests run, one at a time over a
pool, and their times summarised. The ceiling printed beside them is the same pool's ``SELECT 1``: what any
query costs here before it reads anything. The plans (``EXPLAIN (ANALYZE, BUFFERS)``) are printed last:
docs/ledger.md quotes them.

    .venv/bin/python -m loadtest.bench_history --bets 10000000

The fill takes a few minutes for 10 million bets (about 1.5 GB on disk).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from loadtest.common import bench_database, latency_summary
from server.db.pool import create_pool
from server.db.provision import migrate_schema
from server.players import PlayerHistory
from server.players.history import BETS, GAME_BETS, TRANSACTIONS
from server.rounds.fair import generate_chain, sha256_hex

FIRST_USER = 10_000_000

_FILL = [
    # Players and their wallets.
    """INSERT INTO users (id, first_name) SELECT $1::bigint + u, 'p' || u FROM generate_series(0, $2::bigint - 1) u""",
    """INSERT INTO accounts (kind, user_id, balance) SELECT 'wallet', $1::bigint + u, 1000000
       FROM generate_series(0, $2::bigint - 1) u""",
    # Rounds: settled dice rounds over the chain's seeds.
    """INSERT INTO rounds (game, phase, chain_id, chain_idx, seed_hash, outcome, closes_at, started_at, settled_at)
       SELECT 'dice', 'settled', $1, i, $2, '{"roll": 4200}', now(), now(), now() FROM generate_series(1, $3::int) i""",
]

_STAKES = """
INSERT INTO ledger_txns (id, kind, ref, created_at)
SELECT i, 'bet', i::text, now() - make_interval(secs => ($1::bigint - i) / 100.0)
FROM generate_series(1, $1::bigint) i
"""

_BETS = """
INSERT INTO bets (id, user_id, game, round_id, amount, params, status, payout, balance_after, version_after,
                  stake_txn, created_at, settled_at)
SELECT i, $2::bigint + (i % $3::bigint), CASE WHEN i % 3 = 0 THEN 'roulette' ELSE 'dice' END,
       $4::bigint + ((i - 1) * $5::bigint / $1::bigint), 10, '{"target": 5000, "side": "over"}', 'lost', 0,
       1000000, i / $3::bigint, i, now() - make_interval(secs => ($1::bigint - i) / 100.0), now()
FROM generate_series(1, $1::bigint) i
"""

_LEGS = """
INSERT INTO ledger_legs (txn_id, account_id, amount)
SELECT b.id, a.id, -b.amount FROM bets b JOIN accounts a ON a.user_id = b.user_id
"""


async def fill(dsn: str, users: int, bets: int, rounds: int) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2, command_timeout=None)
    try:
        await migrate_schema(pool)
        async with pool.acquire() as conn:
            seeds = generate_chain(rounds)
            chain = await conn.fetchval(
                "INSERT INTO seed_chains (game, terminating_hash, salt, length, next_index) "
                "VALUES ('dice', $1, $1, $2, $2 + 1) RETURNING id", sha256_hex(seeds[0]), rounds)  # fmt: skip
            await conn.copy_records_to_table("seeds", records=[(chain, i + 1, s) for i, s in enumerate(seeds)],
                                             columns=["chain_id", "idx", "seed"])  # fmt: skip
            await conn.execute(_FILL[0], FIRST_USER, users)
            await conn.execute(_FILL[1], FIRST_USER, users)
            await conn.execute(_FILL[2], chain, "0" * 64, rounds)
            first_round = await conn.fetchval("SELECT min(id) FROM rounds")
            step = time.perf_counter()
            # Bulk ids above every id the sequences gave; the sequences then move past them.
            await conn.execute(_STAKES, bets)
            await conn.execute("SELECT setval('ledger_txns_id_seq', $1)", bets + 1)
            print(f"  {bets:,} stake transactions in {time.perf_counter() - step:.0f} s", flush=True)
            step = time.perf_counter()
            await conn.execute(_BETS, bets, FIRST_USER, users, first_round, rounds)
            await conn.execute("SELECT setval('bets_id_seq', $1)", bets + 1)
            print(f"  {bets:,} bets in {time.perf_counter() - step:.0f} s", flush=True)
            step = time.perf_counter()
            await conn.execute(_LEGS)
            print(f"  {bets:,} wallet legs in {time.perf_counter() - step:.0f} s", flush=True)
            await conn.execute("VACUUM ANALYZE")
    finally:
        await pool.close()


async def measure(dsn: str, users: int, queries: int, seed: int) -> None:
    pool = await create_pool(dsn, min_size=2, max_size=2)
    history = PlayerHistory(pool)
    rng = random.Random(seed)
    try:
        floor: list[float] = []
        for _ in range(queries):
            started = time.perf_counter()
            await pool.fetchval("SELECT 1")
            floor.append((time.perf_counter() - started) * 1000)
        print(f"ceiling (SELECT 1 over the same pool): {latency_summary(floor)}")

        async def timed(kind: str) -> None:
            first: list[float] = []
            second: list[float] = []
            for _ in range(queries):
                user = FIRST_USER + rng.randrange(users)
                started = time.perf_counter()
                game = "dice" if kind == "my_bets game=dice" else None
                if kind == "my_transactions":
                    cursor = (await history.transactions(user, None, 20)).next
                else:
                    cursor = (await history.bets(user, game, None, 20)).next
                first.append((time.perf_counter() - started) * 1000)
                assert cursor is not None, "a player with fewer than two pages"
                started = time.perf_counter()
                if kind == "my_transactions":
                    await history.transactions(user, cursor, 20)
                else:
                    await history.bets(user, game, cursor, 20)
                second.append((time.perf_counter() - started) * 1000)
            print(f"{kind}: first page {latency_summary(first)}; second page {latency_summary(second)}")

        for kind in ("my_bets", "my_bets game=dice", "my_transactions"):
            await timed(kind)
        user = FIRST_USER + rng.randrange(users)
        for name, query, args in (("my_bets", BETS, (user, 2**63 - 1, 20)),
                                  ("my_bets game=dice", GAME_BETS, (user, 2**63 - 1, 20, "dice")),
                                  ("my_transactions", TRANSACTIONS, (user, 2**63 - 1, 20))):  # fmt: skip
            plan = await pool.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {query}", *args)
            print(f"\nplan of {name}:")
            print("\n".join(row[0] for row in plan))
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--bets", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to create the bench database on")
    args = parser.parse_args()
    if args.bets < args.users * 61:
        parser.error("--bets must give each player at least 61 bets (two full pages of dice, two thirds of them)")
    with bench_database(args.database_url) as dsn:
        started = time.perf_counter()
        print(f"filling: {args.users:,} players, {args.bets:,} bets over {args.rounds:,} rounds", flush=True)
        asyncio.run(fill(dsn, args.users, args.bets, args.rounds))
        print(f"filled in {time.perf_counter() - started:.0f} s", flush=True)
        asyncio.run(measure(dsn, args.users, args.queries, args.seed))


if __name__ == "__main__":
    main()
