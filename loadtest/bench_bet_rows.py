"""Benchmark: PostgreSQL's CPU per bet in the ledger's batch write, and what each part of the schema costs.

The node's bet path (``server/ledger/bets.py``, ``commit_bets``) is run directly on one connection, in
batches of B bets a transaction (fsync and synchronous_commit on), for K batches; the CPU of the
PostgreSQL backend serving that connection (``/proc``, both user and system time, commit included) and
of this process's ``commit_bets`` are divided by the bets written. Tables are not analyzed before
(as on a fresh deployment); analyzed while empty, the plans PostgreSQL caches for the referential
checks read whole tables (several hundred µs per bet, growing). Then the same on a fresh database
without one part of the schema at a time, to price it:

- ``as is``: the schema the migrations build;
- ``with the foreign keys``: the referential checks migration 0021 dropped put back (legs ->
  transactions and accounts, bets -> users and transactions): each is a lookup and a row lock per
  inserted row;
- ``with the open-bets index``: ``bets_open_by_round`` put back (migration 0023 dropped it: the round
  index serves its queries);
- ``no secondary bet indexes``: only the bets' primary key and idempotency index kept (history and
  round indexes dropped): the index entries each bet row adds.

These variants are measurements, not proposals: the node needs its indexes, and docs/ledger.md says
what proves the references the foreign keys used to guard (``croupier audit``).

    .venv/bin/python -m loadtest.bench_bet_rows --batch 64 --batches 300 --runs 3
    .venv/bin/python -m loadtest.bench_bet_rows --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import asyncpg

from loadtest.common import bench_database, process_cpu_seconds
from server.db.migrations import migrate
from server.ledger.bets import BetRequest, commit_bets

VARIANTS: dict[str, list[str]] = {
    "as is": [],
    "with the foreign keys (before migration 0021)": [
        "ALTER TABLE ledger_legs ADD FOREIGN KEY (txn_id) REFERENCES ledger_txns (id)",
        "ALTER TABLE ledger_legs ADD FOREIGN KEY (account_id) REFERENCES accounts (id)",
        "ALTER TABLE bets ADD FOREIGN KEY (user_id) REFERENCES users (id)",
        "ALTER TABLE bets ADD FOREIGN KEY (stake_txn) REFERENCES ledger_txns (id)",
        "ALTER TABLE bets ADD FOREIGN KEY (settle_txn) REFERENCES ledger_txns (id)",
    ],
    "with the open-bets index (before migration 0023)": [
        "CREATE INDEX bets_open_by_round ON bets (game, round_id) WHERE status = 'accepted'",
    ],
    "no secondary bet indexes": [
        "DROP INDEX bets_by_user",
        "DROP INDEX bets_by_user_game",
        "DROP INDEX bets_by_round",
    ],
}
USERS = 2000


async def prepare(conn: asyncpg.Connection, variant: str) -> tuple[int, int]:
    """A fresh schema with USERS funded wallets and one dice round taking bets; returns (house, round)."""
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    await migrate(conn)
    for statement in VARIANTS[variant]:
        await conn.execute(statement)
    await conn.execute("INSERT INTO users (id, first_name) SELECT g, 'u' || g FROM generate_series(1, $1) g", USERS)
    await conn.execute(
        "INSERT INTO accounts (kind, user_id, balance) SELECT 'wallet', g, 1000000000 FROM generate_series(1, $1) g",
        USERS,
    )
    chain = await conn.fetchval(
        "INSERT INTO seed_chains (game, terminating_hash, length, next_index) VALUES ('dice', repeat('0', 64), 1, 2) "
        "RETURNING id"
    )
    round_id: int = await conn.fetchval(
        "INSERT INTO rounds (game, phase, chain_id, chain_idx, seed_hash, closes_at) "
        "VALUES ('dice', 'betting', $1, 1, repeat('0', 64), now() + interval '1 hour') RETURNING id",
        chain,
    )
    house: int = await conn.fetchval("SELECT id FROM accounts WHERE kind = 'house' AND shard = 0")
    # no ANALYZE: as on a fresh deployment
    return house, round_id


async def measure(database_url: str, variant: str, batch: int, batches: int) -> dict[str, float]:
    conn = await asyncpg.connect(database_url)
    try:
        house, round_id = await prepare(conn, variant)
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        written = 0

        async def write(count: int) -> None:
            nonlocal written
            for _ in range(count):
                keys = range(written, written + batch)
                params = {"target": 5000, "side": "over"}
                requests = [BetRequest(1 + k % USERS, "dice", round_id, 1, params, key=f"k{k}") for k in keys]
                async with conn.transaction():
                    await commit_bets(conn, requests, house, "bench")
                written += batch

        await write(max(1, batches // 10))  # warm-up: statements prepared, plans cached
        bets_before, pg_before, own_before = written, process_cpu_seconds(backend), time.process_time()
        started = time.perf_counter()
        await write(batches)
        wall = time.perf_counter() - started
        bets = written - bets_before
        return {"pg_us": (process_cpu_seconds(backend) - pg_before) / bets * 1e6,
                "client_us": (time.process_time() - own_before) / bets * 1e6, "rate": bets / wall}  # fmt: skip
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="bets per transaction")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: embedded, fsync on)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    with bench_database(args.database_url) as database_url:
        for run in range(args.runs):
            for variant in VARIANTS:  # interleaved: each run measures every variant once
                result = asyncio.run(measure(database_url, variant, args.batch, args.batches))
                results[variant].append(result)
                print(f"run {run + 1}, {variant}: PostgreSQL backend {result['pg_us']:.1f} µs CPU per bet, "
                      f"commit_bets (this process) {result['client_us']:.1f} µs, {result['rate']:,.0f} bets/s "
                      f"on one connection")  # fmt: skip
    base = statistics.median(r["pg_us"] for r in results["as is"])
    print(f"medians of {args.runs}, {args.batch} bets a transaction:")
    for variant, runs in results.items():
        pg = statistics.median(r["pg_us"] for r in runs)
        client = statistics.median(r["client_us"] for r in runs)
        print(f"  {variant}: PostgreSQL {pg:.1f} µs per bet ({pg - base:+.1f}), commit_bets {client:.1f} µs")


if __name__ == "__main__":
    main()
