"""Benchmark: durable bets per second through the server, against a naive baseline.

N sockets authenticate on a real ``croupier serve`` process and bet as fast as acks allow
(each socket sends its next bet when the previous ``bet_ok`` arrives) for T seconds. An ack
means the bet's transaction committed (fsync and synchronous_commit on). Then, on the same
database, the naive baseline: one transaction per bet from plain asyncpg, first as a single
loop, then with as many concurrent connections as the pool allows.

    .venv/bin/python -m loadtest.bench_bets --sockets 200 --seconds 10
    .venv/bin/python -m loadtest.bench_bets --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python -m loadtest.bench_bets --statements   # PostgreSQL's time per bet, by statement
    .venv/bin/python -m loadtest.bench_bets --workers 2    # croupier serve --workers 2 (and Redis)
    .venv/bin/python -m loadtest.bench_bets --redis        # one worker, on Redis too: the comparison
    .venv/bin/python -m loadtest.bench_bets --fresh-wal    # the embedded server's WAL as a new cluster's

Prints bets/s, ack latency (p50/p99/max), the baselines and the ratios; the cores and the CPU per bet of
the server, the load generator and PostgreSQL (the backends serving connections apart from its background
processes), the WAL written per bet and the server's read and write system calls per bet; the single naive
loop's own CPU per bet (this process, which runs asyncpg's client side of one transaction a bet, and
PostgreSQL's backends) and the server's and PostgreSQL's per bet as ratios to it: the same-run reference for
the CPU figures, whose absolute µs move with the machine's speed (2.5x between its periods here). With
``--statements`` (the embedded server only: it loads ``pg_stat_statements``) also every statement the
server ran in the measured window: calls and rows per bet, execution time per bet, planning included.

On the embedded server, WAL segments are recycled before the run (:func:`loadtest.common.recycle_wal`), as
on a server that has been running: a new cluster creates, zero-fills and syncs a 16 MB file each time the
WAL reaches a new segment, about every 0.6 s at this load, and every commit waits ~55 ms for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import secrets
import time
import urllib.parse
from dataclasses import dataclass

import asyncpg
import psutil
import uvloop

from loadtest.common import (
    WAL_SEGMENT_MB,
    bench_database,
    latency_summary,
    node_process,
    postgres_cpu_seconds,
    recycle_wal,
    recycled_wal_settings,
    tree_cpu_seconds,
    tree_system_calls,
)
from loadtest.rawws import CountingClient, open_client
from server.auth import sign_init_data
from tests.services import redis_server

BET_AMOUNT = 1


async def current_round(client: CountingClient) -> int:
    """The dice round taking bets (the bench's node keeps one open for the whole run)."""
    for _ in range(200):
        reply = await client.request({"t": "subscribe", "id": "s", "game": "dice"})
        await client.request({"t": "unsubscribe", "id": "u", "game": "dice"})
        if reply["round"] is not None and reply["round"]["phase"] == "betting":
            return int(reply["round"]["round"])
        await asyncio.sleep(0.05)
    raise RuntimeError("no dice round is taking bets")


@dataclass
class Bettor:
    """One socket, authenticated as ``user_id``, betting on ``round_id``; ``placed`` bets so far (their keys)."""

    client: CountingClient
    user_id: int
    round_id: int
    placed: int = 0

    async def bet_until(self, stop_at: float, latencies: list[float]) -> int:
        """Bet as fast as acks allow until ``stop_at`` (monotonic); returns the bets acknowledged."""
        acked = 0
        while time.monotonic() < stop_at:
            self.placed += 1
            request_id = self.placed
            sent = time.perf_counter()
            reply = await self.client.request({"t": "bet", "id": request_id, "game": "dice", "round": self.round_id,
                                               "amount": BET_AMOUNT, "params": {"target": 5000, "side": "over"},
                                               "key": f"{self.user_id}-{request_id}"})  # fmt: skip
            if reply.get("id") != request_id or reply["t"] != "bet_ok":
                raise RuntimeError(f"bet refused: {reply}")
            latencies.append((time.perf_counter() - sent) * 1000)
            acked += 1
        return acked


async def open_bettor(url: str, token: str, user_id: int) -> Bettor:
    """A socket on the node at ``url`` (the load generator's raw client: :mod:`loadtest.rawws`), signed in."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    client = await open_client(parts.hostname, parts.port, parts.path or "/ws")
    welcome = await client.request({"t": "auth", "id": 0, "init_data": sign_init_data(token, user_id=user_id)})
    assert welcome["t"] == "welcome", welcome
    return Bettor(client, user_id, await current_round(client))


@dataclass
class SocketRun:
    rate: float
    latencies: list[float]
    cpu: dict[str, float]  # cores used during the measured window, by process group
    wal_bytes: int  # WAL PostgreSQL wrote during the measured window
    system_calls: tuple[int, int]  # the server's read and write system calls during the measured window


async def run_sockets(url: str, server_pid: int, token: str, sockets: int, seconds: float, database_url: str,
                      statements: bool = False) -> SocketRun:  # fmt: skip
    """Open ``sockets`` bettors, warm up for 2 s, then measure ``seconds`` of betting on the same sockets;
    ``statements``: reset ``pg_stat_statements`` of ``database_url`` when the measured window starts.

    The sockets are :mod:`loadtest.rawws` clients: the ``websockets`` client cost the load generator ~70 µs of
    CPU per bet, on the cores the server and PostgreSQL share."""
    latencies: list[float] = []
    base = 10**9 + secrets.randbelow(10**6) * 10**3
    bettors = await asyncio.gather(*(open_bettor(url, token, base + i) for i in range(sockets)))
    conn = await asyncpg.connect(database_url)
    try:
        warm_stop = time.monotonic() + 2
        await asyncio.gather(*(bettor.bet_until(warm_stop, []) for bettor in bettors))
        if statements:
            await conn.execute("SELECT pg_stat_statements_reset()")
        wal_before = await conn.fetchval(_WAL_POSITION)
        postmaster = _postmaster(await conn.fetchval("SELECT pg_backend_pid()"))
        before, calls_before = cpu_snapshot(server_pid, postmaster), tree_system_calls(server_pid)
        start = time.monotonic()
        counts = await asyncio.gather(*(bettor.bet_until(start + seconds, latencies) for bettor in bettors))
        elapsed = time.monotonic() - start
        after, calls_after = cpu_snapshot(server_pid, postmaster), tree_system_calls(server_pid)
        wal_bytes = await conn.fetchval(_WAL_POSITION) - wal_before
    finally:
        await conn.close()
        for bettor in bettors:
            bettor.client.close()
    cpu = {name: (after[name] - before[name]) / elapsed for name in before}
    calls = (calls_after[0] - calls_before[0], calls_after[1] - calls_before[1])
    return SocketRun(sum(counts) / elapsed, latencies, cpu, int(wal_bytes), calls)


_WAL_POSITION = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
"""Bytes of WAL written since the cluster began (a numeric)."""


def _postmaster(backend: int) -> int | None:
    """The server's PostgreSQL: the parent of the benchmark's backend (its processes' titles name the cluster,
    not the port); None when that backend is not a process of this machine (a remote ``--database-url``)."""
    try:
        process = psutil.Process(backend)
        return process.ppid() if process.name() == "postgres" else None
    except psutil.Error:
        return None


def cpu_snapshot(server_pid: int, postmaster: int | None) -> dict[str, float]:
    """CPU seconds so far of the server, this load generator, and the PostgreSQL server's processes (when it
    runs on this machine)."""
    return {"server": tree_cpu_seconds(server_pid), **_own_cpu_snapshot(postmaster)}


def _own_cpu_snapshot(postmaster: int | None) -> dict[str, float]:
    """CPU seconds so far of this process (``load generator``) and of the PostgreSQL server's processes."""
    cpu = {"load generator": time.process_time()}
    if postmaster is not None:
        postgres = postgres_cpu_seconds(postmaster)
        cpu.update({"postgres backends": postgres["backends"], "postgres background": postgres["background"]})
    return cpu


NAIVE_BET = """
WITH w AS (
    UPDATE accounts SET balance = balance - $2, version = version + 1 WHERE user_id = $1 AND balance >= $2
    RETURNING id, balance
), t AS (
    INSERT INTO ledger_txns (kind, ref) SELECT 'bet', 'naive' FROM w RETURNING id
), legs AS (
    INSERT INTO ledger_legs (txn_id, account_id, amount)
    SELECT t.id, w.id, -$2 FROM t, w UNION ALL SELECT t.id, $3, $2 FROM t
), h AS (
    UPDATE accounts SET balance = balance + $2, version = version + 1 WHERE id = $3 AND EXISTS (SELECT 1 FROM w)
)
INSERT INTO bets (user_id, game, round_id, amount, params, balance_after, version_after, stake_txn)
SELECT $1, 'dice', 1, $2, '{}', w.balance, 0, t.id FROM w, t
"""


@dataclass
class NaiveRun:
    """The naive baseline's rate, and its CPU per bet: this process (asyncpg's client side of one transaction
    a bet) and PostgreSQL's backends (None for a remote server)."""

    rate: float
    client_us: float
    postgres_us: float | None


async def naive(database_url: str, user_ids: list[int], seconds: float, connections: int) -> NaiveRun:
    """One transaction per bet: lock-free conditional debit, txn, legs, house, bet; then commit."""
    pool = await asyncpg.create_pool(database_url, min_size=connections, max_size=connections)
    house = await pool.fetchval("SELECT id FROM accounts WHERE kind = 'house' AND shard = 0")
    postmaster = _postmaster(await pool.fetchval("SELECT pg_backend_pid()"))
    stop_at = time.monotonic() + seconds
    done = 0

    async def loop(user_id: int) -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while time.monotonic() < stop_at:
                async with conn.transaction():
                    await conn.execute(NAIVE_BET, user_id, BET_AMOUNT, house)
                done += 1

    before = _own_cpu_snapshot(postmaster)
    start = time.monotonic()
    await asyncio.gather(*(loop(user_ids[i % len(user_ids)]) for i in range(connections)))
    elapsed = time.monotonic() - start
    after = _own_cpu_snapshot(postmaster)
    await pool.close()
    per_bet = {name: (after[name] - before[name]) / max(done, 1) * 1e6 for name in before}
    return NaiveRun(done / elapsed, per_bet["load generator"], per_bet.get("postgres backends"))


async def statements_report(database_url: str, bets: int) -> list[str]:
    """What ``pg_stat_statements`` recorded since the reset, per acknowledged bet, costliest first."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT calls, rows, total_exec_time + total_plan_time AS ms, query FROM pg_stat_statements
               WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY ms DESC"""
        )
    finally:
        await conn.close()
    total = sum(row["ms"] for row in rows)
    lines = [f"PostgreSQL statements, per acknowledged bet ({bets:,} bets): {total * 1000 / bets:.1f} µs of "
             "execution in all (wall time inside the executor, not CPU; commits' WAL flush not included)"]  # fmt: skip
    for row in rows[:15]:
        query = " ".join(row["query"].split())
        lines.append(f"  {row['ms'] * 1000 / bets:7.1f} µs  {row['calls'] / bets:6.3f} calls  "
                     f"{row['rows'] / bets:6.2f} rows  {query[:110]}")  # fmt: skip
    return lines


async def settings_line(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        fsync = await conn.fetchval("SHOW fsync")
        sync = await conn.fetchval("SHOW synchronous_commit")
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return f"PostgreSQL {version}, fsync={fsync}, synchronous_commit={sync}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--database-url", default=None, help="server to create the bench database on "
                        "(default: an embedded PostgreSQL with fsync on)")  # fmt: skip
    parser.add_argument("--naive-connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="croupier serve --workers N (more than one: Redis)")
    parser.add_argument("--redis", action="store_true", help="run the node on an embedded Redis (implied by workers)")
    parser.add_argument("--statements", action="store_true", help="report PostgreSQL's time per bet by "
                        "statement (pg_stat_statements; embedded server only)")  # fmt: skip
    parser.add_argument("--fresh-wal", action="store_true", help="leave the embedded server's WAL as a new "
                        "cluster's: every segment a new file, zero-filled and synced when first reached "
                        "(by default segments are recycled first, as on a server that has been running)")  # fmt: skip
    args = parser.parse_args()
    if args.workers > 1 and not args.redis:
        args.redis = True  # workers share the node's rounds and pushes through Redis
    if args.statements and args.database_url:
        parser.error("--statements loads pg_stat_statements into the embedded server: leave out --database-url")
    token = f"{secrets.randbelow(10**9) + 10**9}:{secrets.token_urlsafe(26)}"
    # Enough recycled WAL for the warm-up, the run and the baselines, at up to 48 MB a second (the node writes
    # ~2.1 KB per bet): more than the run writes, or the stalls come back when they run out.
    segments = math.ceil((2 + args.seconds + 2 * min(args.seconds, 5)) * 48 / WAL_SEGMENT_MB)
    recycled = not args.database_url and not args.fresh_wal  # the embedded server's WAL, as a running server's
    settings = {**({"shared_preload_libraries": "pg_stat_statements"} if args.statements else {}),
                **(recycled_wal_settings(segments) if recycled else {})}  # fmt: skip
    with (
        bench_database(args.database_url, settings) as database_url,
        redis_server(None) if args.redis else contextlib.nullcontext("") as redis_url,
    ):
        if args.statements:
            asyncio.run(_create_extension(database_url))
        if recycled:
            asyncio.run(recycle_wal(database_url, segments))
        print(asyncio.run(settings_line(database_url)))
        if recycled:
            print(f"  {segments} WAL segments recycled before the run, as on a server that has "
                  "been running (--fresh-wal: a new cluster's)")  # fmt: skip
        else:
            print("  WAL as the server has it: a segment reached for the first time is a new file, zero-filled "
                  "and synced while commits wait")  # fmt: skip
        # One dice round that stays open for the whole run: the bench measures the bet path, not round turnover.
        env = {"CROUPIER_WELCOME_CREDIT": str(10**12), "CROUPIER_MAX_BET": "1000", "CROUPIER_GAMES": "dice",
               "CROUPIER_BETTING_MS": "3600000", "CROUPIER_SEED_CHAIN_LENGTH": "1000",
               # The round's exposure cap stays on (its lock is part of the measured path), out of reach.
               "CROUPIER_GAME_PARAMS": '{"dice": {"max_exposure": 1000000000000000}}',
               "CROUPIER_WORKERS": str(args.workers), **({"REDIS_URL": redis_url} if redis_url else {})}  # fmt: skip
        with node_process(database_url, token, **env) as (url, pid):
            run = uvloop.run(run_sockets(url, pid, token, args.sockets, args.seconds, database_url, args.statements))
            if args.statements:  # before the node stops (its shutdown voids the open round: not the bet path)
                print("\n".join(asyncio.run(statements_report(database_url, len(run.latencies)))))
        rate = run.rate
        shape = f"{args.workers} worker{'s' if args.workers > 1 else ''}, {'Redis' if redis_url else 'no Redis'}"
        print(f"server ({shape}): "
              f"{args.sockets} sockets, {args.seconds:.0f} s: {rate:,.0f} acknowledged durable bets/s; "
              f"ack latency {latency_summary(run.latencies)}")  # fmt: skip
        print("  cores used: " + ", ".join(f"{name} {cores:.2f}" for name, cores in run.cpu.items())
              + f" (machine: {psutil.cpu_count()} cores)")  # fmt: skip
        per_bet = {name: cores / rate * 1e6 for name, cores in run.cpu.items()}
        print("  CPU per bet: " + ", ".join(f"{name} {us:.0f} µs" for name, us in per_bet.items())
              + f"; WAL {run.wal_bytes / len(run.latencies):,.0f} bytes per bet; server system calls per bet: "
              f"{run.system_calls[0] / len(run.latencies):.2f} reads, {run.system_calls[1] / len(run.latencies):.2f} "
              "writes (sockets and PostgreSQL)")  # fmt: skip
        user_ids = asyncio.run(_bench_users(database_url))
        loop = asyncio.run(naive(database_url, user_ids, min(args.seconds, 5), 1))
        print(f"naive baseline, one asyncpg loop, one transaction per bet: {loop.rate:,.0f} bets/s "
              f"(server is {rate / loop.rate:.1f}x)")  # fmt: skip
        # The same-run reference for CPU per bet (absolute µs move with the machine's period, ratios less): the
        # naive loop's client is Python and asyncpg doing nothing but one bet's transaction.
        postgres = f", PostgreSQL backends {loop.postgres_us:.0f} µs" if loop.postgres_us is not None else ""
        relative = (f"; server per bet {per_bet['server'] / loop.client_us:.2f}x the naive client's"
                    + (f", PostgreSQL per bet {per_bet['postgres backends'] / loop.postgres_us:.2f}x the naive loop's"
                       if loop.postgres_us and "postgres backends" in per_bet else ""))  # fmt: skip
        print(f"  its CPU per bet: this process (asyncpg's client) {loop.client_us:.0f} µs{postgres}{relative}")
        wide = asyncio.run(naive(database_url, user_ids, min(args.seconds, 5), args.naive_connections))
        print(f"naive baseline, {args.naive_connections} concurrent connections: {wide.rate:,.0f} bets/s "
              f"(server is {rate / wide.rate:.1f}x)")  # fmt: skip


async def _create_extension(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await conn.close()


async def _bench_users(database_url: str) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT user_id FROM accounts WHERE kind = 'wallet' ORDER BY balance DESC LIMIT 64")
    finally:
        await conn.close()
    return [row["user_id"] for row in rows]


if __name__ == "__main__":
    main()
