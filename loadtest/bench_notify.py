"""Benchmark: the notification sender against Telegram's flood limits, and how fast it honours a 429.

Real ``croupier serve`` processes (two by default, sharing one flood gate in Redis) send through the
Bot API test server (``tests/telegram/botapi.py``), which enforces Telegram's limits (30 messages a
second per bot, 1 a second per private chat) and answers 429 past them. N users are made reachable
and one announcement is queued for all of them, as ``croupier notify --all`` does; the nodes'
senders deliver it.

1. Delivery: the rate achieved (messages the test server took, over the time from the first to the
   last), its ratio to the ceiling (30/s), and the 429s the test server answered (should be none).
2. Honouring a 429: while the nodes send a second announcement, the test server is made to answer
   one message 429 with ``retry_after`` 1 s (``--pauses`` times). Every node must hold its messages
   until the pause ends (the messages that reached the server during it are counted), then resume:
   the time from the pause's end to the next message the server took is printed.

    .venv/bin/python -m loadtest.bench_notify --users 10000      # ~6 minutes at 30/s
    .venv/bin/python -m loadtest.bench_notify --users 600        # ~20 s, to check it works
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import asyncpg

from loadtest.common import bench_database, node_process
from server.db.migrations import migrate
from server.telegram.announcements import Announcement, open_announcement, progress, progress_line, queue_batch
from tests.services import redis_server
from tests.telegram.botapi import DEFAULT_TOKEN, BotApiServer

CEILING = 30.0
"""Telegram's limit per bot, messages a second (the test server enforces it)."""
RETRY_AFTER = 1


async def make_reachable(dsn: str, users: int, first: int) -> None:
    """Users ``first`` .. ``first + users - 1`` are the only reachable ones (as if they pressed /start)."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.execute("UPDATE notify_recipients SET reachable = false")
        await conn.execute("INSERT INTO notify_recipients (user_id, reachable, source) "
                           "SELECT id, true, 'start' FROM generate_series($1::bigint, $2::bigint) AS id "
                           "ON CONFLICT DO NOTHING", first, first + users - 1)  # fmt: skip
    finally:
        await conn.close()


async def announce(dsn: str, key: str, text: str) -> Announcement:
    """Queue an announcement to every reachable user (as ``croupier notify --all --no-wait``)."""
    conn = await asyncpg.connect(dsn)
    try:
        announcement = await open_announcement(conn, key, text)
        while not announcement.done_queueing:
            async with conn.transaction():
                announcement = await queue_batch(conn, announcement)
        return announcement
    finally:
        await conn.close()


async def wait_sent(dsn: str, announcement: Announcement, label: str, limit: float) -> None:
    """Until every notification of the announcement is done, a progress line a second."""
    conn = await asyncpg.connect(dsn)
    try:
        started, deadline = time.monotonic(), time.monotonic() + limit
        first = None
        while True:
            state = await progress(conn, announcement.id)
            done = state.sent + state.dropped + state.dead
            first = done if first is None else first
            elapsed = time.monotonic() - started
            rate = (done - first) / elapsed if elapsed >= 1 else None
            print(f"\r  {label}: {progress_line(state, rate=rate)}", end="", flush=True)
            if state.pending == 0:
                print()
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"\n{label}: not sent within {limit:.0f} s")
            await asyncio.sleep(1.0)
    finally:
        await conn.close()


def sends(calls: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The sendMessage calls of one announcement (its text), by arrival."""
    return sorted((c for c in calls if c["params"].get("text") == text), key=lambda c: c["time"])


def busiest(times: list[float], window: float = 1.0) -> int:
    """The most messages the server took in any ``window`` seconds (as it counts: half-open)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def deliver(api: BotApiServer, dsn: str, users: int) -> None:
    text = "Benchmark: the tables are open."
    started = time.monotonic()
    announcement = await announce(dsn, "bench-delivery", text)
    print(f"  queued {users:,} notifications in {time.monotonic() - started:.1f} s")
    await wait_sent(dsn, announcement, "delivery", limit=users / CEILING * 2 + 60)
    calls = sends(await api.calls("sendMessage"), text)
    ok = [c["time"] for c in calls if c["status"] == 200]
    throttled = sum(1 for c in calls if c["status"] == 429)
    achieved = (len(ok) - 1) / (ok[-1] - ok[0]) if len(ok) > 1 else float("nan")
    print(f"  ceiling:  {CEILING:.1f} messages/s (Telegram's limit per bot)")
    print(f"  achieved: {achieved:.1f} messages/s ({len(ok):,} taken in {ok[-1] - ok[0]:.1f} s)"
          f"   ratio {achieved / CEILING:.3f}")  # fmt: skip
    print(f"  429s from the test server: {throttled}   busiest second: {busiest(ok)} messages")


async def honour(api: BotApiServer, dsn: str, pauses: int) -> None:
    text = "Benchmark: a 429 on the way."
    users = int(CEILING * (pauses + 1))  # half a second of sending, the pause, half a second, ...
    await make_reachable(dsn, users, first=200_000_000)
    await api.clear_calls()
    announcement = await announce(dsn, "bench-pause", text)
    for _ in range(pauses):
        seen = len(await api.calls("sendMessage"))
        await api.calls("sendMessage", wait=30, min_count=seen + int(CEILING // 2))
        await api.fail_next("sendMessage", retry_after=RETRY_AFTER)
        await asyncio.sleep(RETRY_AFTER + 0.5)
    await wait_sent(dsn, announcement, "pauses", limit=users / CEILING * 2 + 60)
    calls = sends(await api.calls("sendMessage"), text)
    forced = [c["time"] for c in calls if c["status"] == 429]
    print(f"  forced 429s (retry_after {RETRY_AFTER} s): {len(forced)}")
    for start in forced:
        end = start + RETRY_AFTER
        during = [c["time"] - start for c in calls if start < c["time"] < end]
        after = [c["time"] for c in calls if c["time"] >= end]
        resumed = f"+{(after[0] - end) * 1000:.1f} ms after it ended" if after else "never resumed"
        in_flight = f" ({', '.join(f'+{d * 1000:.0f} ms' for d in during)} after the 429)" if during else ""
        print(f"    messages during the pause: {len(during)}{in_flight}; first message: {resumed}")


@contextlib.contextmanager
def nodes(count: int, dsn: str, redis_url: str, api_url: str) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for n in range(count):
            stack.enter_context(node_process(dsn, DEFAULT_TOKEN, REDIS_URL=redis_url, CROUPIER_TELEGRAM_API_URL=api_url,
                                             CROUPIER_NODE_ID=f"notify-{n}", CROUPIER_GAMES="dice"))  # fmt: skip
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="reachable users, one notification each")
    parser.add_argument("--nodes", type=int, default=2, help="croupier serve processes sending (one Redis gate)")
    parser.add_argument("--pauses", type=int, default=3, help="forced 429s in the second part")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: embedded)")
    parser.add_argument("--redis-url", default=None, help="a Redis server (default: an embedded Valkey)")
    args = parser.parse_args()
    print(f"notifications: {args.users:,} reachable users, {args.nodes} nodes sharing a Redis flood gate, "
          f"the Bot API test server at Telegram's limits")  # fmt: skip
    with BotApiServer.start(DEFAULT_TOKEN) as api, bench_database(args.database_url) as dsn, \
            redis_server(args.redis_url) as redis_url:  # fmt: skip
        asyncio.run(make_reachable(dsn, args.users, first=100_000_000))
        with nodes(args.nodes, dsn, redis_url, api.base_url):
            asyncio.run(deliver(api, dsn, args.users))
            if args.pauses:
                asyncio.run(honour(api, dsn, args.pauses))


if __name__ == "__main__":
    main()
