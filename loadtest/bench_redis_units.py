"""Benchmark: the time inside Redis of each unit of work the capacity model counts (docs/capacity.md).

On an otherwise idle Redis (an embedded Valkey, or ``--redis-url``), each unit is done ``--count`` times by
the node's own code, and Redis says what it cost: the microseconds inside its commands (``INFO
commandstats``, the time Redis spent executing them, not the client's round trips) and its CPU (``INFO
cpu``, which also holds reading the requests and writing replies and pub/sub deliveries to sockets):

- **game event**: one ``publish`` with history by :class:`~server.broker.redis.RedisBroker` (its pipeline of
  ``PUBLISH``, ``XADD`` to the channel's history, ``PEXPIRE``), one event per pipeline as a tick is, with
  0 and ``--nodes`` other brokers subscribed to the channel: the cost per event and per node that follows it;
- **user event**: ``publish_batch`` of the outbox relay (one ``PUBLISH`` each, no history) in batches of
  ``--batch``, each user channel followed by one node;
- **lease**: :meth:`~server.broker.quota.RedisQuota.take_tokens` of a user's lease of request tokens (one
  ``EVALSHA``: ``TIME``, ``HMGET``, ``HSET``, ``PEXPIRE``), each call for another user as in a crowd.

Each is measured twice: **back to back** (the next unit as soon as Redis answered the last: what a busy
shard pays, its caches warm) and **spaced** by ``--gap-ms`` (what a Redis that sleeps between commands pays:
the CPU's caches went cold meanwhile; a command then takes 3-5 times as long). A small deployment's Redis
is the second kind (``capacity_check``'s is idle 99.9% of the time), a shard sized to half a core the
first. Each is run ``--runs`` times; the medians are printed, and the spread. The leaderboards' cost per
settled bet comes from ``bench_leaderboard`` (time inside Redis of the relay's scripts).

    .venv/bin/python -m loadtest.bench_redis_units
    .venv/bin/python -m loadtest.bench_redis_units --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import uvloop

from server.broker.base import HistoryPolicy
from server.broker.quota import RedisQuota
from server.broker.redis import RedisBroker
from tests.services import redis_server

TICK = b'{"t":"tick","game":"crash","round":1234,"m":1873,"ts":1764770000123}' + b" " * 30
"""About a crash tick's size (the payload Redis copies into the stream and to each subscriber)."""
BALANCE = b'{"t":"balance","balance":1000000,"reason":"bet","offset":12,"bet":987654}'
IGNORED = {"config|resetstat", "info", "ping", "hello", "client|setinfo", "subscribe", "unsubscribe", "script|load"}


async def inside_redis(admin: aioredis.Redis) -> int:
    """Microseconds Redis spent in commands since the last reset, the bookkeeping of this script left out."""
    stats = await admin.info("commandstats")
    return sum(int(v["usec"]) for k, v in stats.items() if k.removeprefix("cmdstat_") not in IGNORED)


async def cpu_seconds(admin: aioredis.Redis) -> float:
    info = await admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


Cost = tuple[float, float]
"""Microseconds a unit: inside Redis's commands, and of Redis's CPU."""


async def measure(admin: aioredis.Redis, count: int, work: Callable[[], Awaitable[None]]) -> Cost:
    """Microseconds inside Redis and of its CPU per unit of ``work`` (which does ``count`` units)."""
    await admin.config_resetstat()
    cpu = await cpu_seconds(admin)
    await work()
    return await inside_redis(admin) / count, (await cpu_seconds(admin) - cpu) * 1e6 / count


async def game_events(url: str, admin: aioredis.Redis, count: int, followers: int, gap: float) -> Cost:
    prefix = f"units-{secrets.token_hex(4)}:"
    publisher = RedisBroker(url, prefix=prefix)
    others = [RedisBroker(url, prefix=prefix) for _ in range(followers)]
    received = asyncio.Event()
    seen = [0]

    def got(_channel: str, _payload: bytes) -> None:
        seen[0] += 1
        if seen[0] == followers:
            received.set()

    try:
        for other in others:
            await other.subscribe("game:crash", got)
        history = HistoryPolicy(500, 300.0)

        async def work() -> None:
            for _ in range(count):  # one event per pipeline, as a tick: the next after every follower had it
                seen[0] = 0
                received.clear()
                await publisher.publish("game:crash", TICK, history)
                if followers:
                    await asyncio.wait_for(received.wait(), 5)
                await asyncio.sleep(gap or (0 if followers else 0.0005))
            await asyncio.sleep(0.05)

        return await measure(admin, count, work)
    finally:
        for broker in (publisher, *others):
            await broker.close()
        await admin.delete(f"{prefix}game:crash:history")


async def user_events(url: str, admin: aioredis.Redis, count: int, batch: int, gap: float) -> Cost:
    prefix = f"units-{secrets.token_hex(4)}:"
    relay, node = RedisBroker(url, prefix=prefix), RedisBroker(url, prefix=prefix)
    users = [f"user:{n}" for n in range(batch)]
    try:
        for channel in users:
            await node.subscribe(channel, lambda _c, _p: None)

        async def work() -> None:
            for _ in range(count // batch):
                await relay.publish_batch([(channel, BALANCE) for channel in users])
                await asyncio.sleep(gap)

        return await measure(admin, count // batch * batch, work)
    finally:
        await relay.close()
        await node.close()


async def leases(url: str, admin: aioredis.Redis, count: int, gap: float) -> Cost:
    prefix = f"units-{secrets.token_hex(4)}:"
    quota = RedisQuota(url, prefix=prefix)
    try:
        await quota.take_tokens(0, 1, 20.0, 40)  # loads the script

        async def work() -> None:
            for user in range(1, count + 1):
                await quota.take_tokens(user, 20, 20.0, 40)
                await asyncio.sleep(gap)

        return await measure(admin, count, work)
    finally:
        await quota.close()
        keys = [key async for key in admin.scan_iter(f"{prefix}*", count=1000)]
        for first in range(0, len(keys), 1000):
            await admin.delete(*keys[first : first + 1000])


async def run(url: str, args: argparse.Namespace, gap: float, count: int) -> dict[str, list[Cost]]:
    admin = aioredis.Redis.from_url(url)
    results: dict[str, list[Cost]] = {"game event, no node following": [],
                                      f"game event, {args.nodes} nodes following": [],
                                      f"user event, batches of {args.batch}": [], "lease": []}  # fmt: skip
    try:
        for _ in range(args.runs):
            samples = (
                await game_events(url, admin, count, 0, gap),
                await game_events(url, admin, count, args.nodes, gap),
                await user_events(url, admin, count * args.batch if gap else count, args.batch, gap),
                await leases(url, admin, count, gap),
            )
            for name, value in zip(results, samples, strict=True):
                results[name].append(value)
    finally:
        await admin.aclose()
    return results


def report(results: dict[str, list[Cost]], nodes: int) -> None:
    print(f"  {'':<40}{'inside commands':>24}{'Redis CPU':>24}")
    medians = {}
    for name, values in results.items():
        inside, cpu = [v[0] for v in values], [v[1] for v in values]
        medians[name] = (statistics.median(inside), statistics.median(cpu))
        print(f"  {name:<40}{medians[name][0]:10.2f} ({min(inside):5.2f}-{max(inside):5.2f})"
              f"{medians[name][1]:10.2f} ({min(cpu):5.2f}-{max(cpu):5.2f})")  # fmt: skip
    no_node, following = list(medians.values())[:2]
    print(f"  {'per node following a game event':<40}{(following[0] - no_node[0]) / nodes:10.2f}{'':14}"
          f"{(following[1] - no_node[1]) / nodes:10.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=None, help="redis:// of an idle server (default: an embedded Valkey)")
    parser.add_argument("--count", type=int, default=2000, help="units of each kind a run, back to back")
    parser.add_argument("--spaced", type=int, default=300, help="units of each kind a run, spaced")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="the pause between spaced units")
    parser.add_argument("--nodes", type=int, default=2, help="nodes following the game channel")
    parser.add_argument("--batch", type=int, default=100, help="user events a relay batch")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with redis_server(args.redis_url) as url:
        hot = uvloop.run(run(url, args, 0.0, args.count))
        cold = uvloop.run(run(url, args, args.gap_ms / 1000, args.spaced))
    print(f"microseconds per unit ({args.runs} runs): median (min-max)")
    print(f"back to back ({args.count:,} units a run):")
    report(hot, args.nodes)
    print(f"spaced by {args.gap_ms:g} ms ({args.spaced:,} units a run; user events: {args.spaced:,} batches):")
    report(cold, args.nodes)


if __name__ == "__main__":
    main()
