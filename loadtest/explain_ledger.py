"""Print the query plans of the ledger's hot-path lookups on a populated database.

    .venv/bin/python -m loadtest.explain_ledger [--database-url URL] [--users 20000] [--bets 200000]

Fills a fresh database (embedded PostgreSQL by default) with users, wallets, bets and deposits through
the real schema, runs ANALYZE, and prints EXPLAIN (ANALYZE, BUFFERS off) for each lookup the
bet path, settlement and deposits make. docs/ledger.md quotes its output.
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg

from loadtest.common import bench_database
from server.db.migrations import migrate

LOOKUPS: list[tuple[str, str, tuple[object, ...]]] = [
    (
        "bet batch: lock the house shard and the bettors' wallets",
        "SELECT id, user_id, balance, version FROM accounts WHERE user_id = ANY($1::bigint[]) OR id = $2 "
        "ORDER BY id FOR UPDATE",
        ([1000, 2000, 3000], 1),
    ),
    (
        "bet batch: find bets already placed with these idempotency keys",
        "SELECT b.id FROM unnest($1::bigint[], $2::text[]) AS k(user_id, idem_key) CROSS JOIN LATERAL "
        "(SELECT id FROM bets WHERE bets.user_id = k.user_id AND bets.idem_key = k.idem_key LIMIT 1) AS b",
        ([1000, 2000], ["k-1000-5", "k-2000-5"]),
    ),
    ("balance request / welcome", "SELECT balance, version FROM accounts WHERE user_id = $1", (1000,)),
    (
        "settlement: open bets of a round (the round's newest, still open)",
        "SELECT id, user_id, amount, params, cashout FROM bets WHERE round_id = $1 AND status = 'accepted' ORDER BY id",
        (666,),
    ),
    (
        "betting closes: the client seeds of a round's bets",
        "SELECT coalesce(array_agg(client_seed ORDER BY id), '{}') FROM bets "
        "WHERE game = $1 AND round_id = $2 AND status = 'accepted' AND client_seed IS NOT NULL",
        ("dice", 666),
    ),
    (
        "settlement: close bets by id",
        "SELECT id FROM bets WHERE id = ANY($1::bigint[]) AND status = 'accepted'",
        ([10, 20, 30],),
    ),
    (
        "deposit: was this payment already credited?",
        "SELECT 1 FROM ledger_txns WHERE kind = 'deposit' AND ref = $1",
        ("charge-42",),
    ),
    ("history: a user's recent bets", "SELECT id FROM bets WHERE user_id = $1 ORDER BY id DESC LIMIT 20", (1000,)),
]


async def populate(conn: asyncpg.Connection, users: int, bets: int) -> None:
    await migrate(conn)
    await conn.execute("INSERT INTO users (id, first_name) SELECT g, 'u' || g FROM generate_series(1, $1) AS g", users)
    await conn.execute(
        "INSERT INTO accounts (kind, user_id, balance) SELECT 'wallet', g, 0 FROM generate_series(1, $1) g", users
    )
    await conn.execute(
        """INSERT INTO ledger_txns (id, kind, ref) SELECT g, 'bet', g::text FROM generate_series(1, $1) g;""", bets
    )
    await conn.execute(
        """INSERT INTO bets (id, user_id, game, round_id, amount, idem_key, status, balance_after, version_after,
                             stake_txn)
           SELECT g, 1 + g % $2, (ARRAY['crash','dice','roulette'])[1 + g % 3], g / 300, 1,
                  'k-' || (1 + g % $2) || '-' || g,
                  CASE WHEN g > $1 - 900 THEN 'accepted' ELSE 'lost' END, 0, 0, g
           FROM generate_series(1, $1) g""",
        bets,
        users,
    )
    # A deposit per user (ledger transactions after the bets' ids), so the deposit lookup meets a real index.
    await conn.execute(
        "INSERT INTO ledger_txns (id, kind, ref) "
        "SELECT $1 + g, 'deposit', 'charge-' || g FROM generate_series(1, $2) g",
        bets,
        users,
    )
    await conn.execute("ANALYZE")


async def explain(database_url: str, users: int, bets: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await populate(conn, users, bets)
        print(f"-- {users} users with wallets, {bets} bets; PostgreSQL {await conn.fetchval('SHOW server_version')}")
        for title, query, args in LOOKUPS:
            async with conn.transaction():
                explain = "EXPLAIN (ANALYZE, BUFFERS OFF, COSTS OFF, TIMING OFF, SUMMARY ON)"
                rows = await conn.fetch(f"{explain} {query}", *args)
            print(f"\n### {title}\n    {query}")
            for row in rows:
                print(f"    {row[0]}")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--bets", type=int, default=200_000)
    args = parser.parse_args()
    with bench_database(args.database_url) as url:
        asyncio.run(explain(url, args.users, args.bets))


if __name__ == "__main__":
    main()
