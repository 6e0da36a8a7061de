"""Benchmark: a connect storm, and the memory an idle authenticated socket costs.

A real ``croupier serve`` process (in-process broker). Connect storm: N sockets connect,
authenticate (initData HMAC check, user upsert, wallet) and subscribe, as fast as the
light client (``loadtest/rawws.py``) opens them; the time until the last is subscribed.
Run twice: first as new users (each opens a wallet), then as the same users returning.
Memory: the node's RSS with the N sockets idle minus its RSS before they came, per socket;
beside it the same for the ``websockets`` library's own server (``loadtest/broadcast_ceiling.py``)
holding N idle connections, its ceiling.

    .venv/bin/python -m loadtest.bench_connect --sockets 5000 --runs 3
    .venv/bin/python -m loadtest.bench_connect --sockets 5000 --runs 3 --workers 2   # Redis: embedded Valkey

Prints the storm's duration and rate, and KiB per idle socket with the ratio to the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import secrets
import statistics
import time
from urllib.parse import urlsplit

import uvloop

from loadtest.bench_broadcast import ceiling_process
from loadtest.common import bench_database, free_port, node_process, process_cpu_seconds, tree_cpu_seconds, tree_rss
from loadtest.rawws import CountingClient, open_client
from server.auth import sign_init_data
from tests.services import redis_server

WAVE = 500
"""Sockets opened at once: more than the listen backlog at once would only measure SYN retries."""


async def storm(port: int, count: int, token: str | None, first_user: int) -> tuple[float, list[CountingClient]]:
    """Open ``count`` sockets (auth + subscribe when ``token``); return the seconds it took and them."""

    async def one(user_id: int) -> CountingClient:
        client = await open_client("127.0.0.1", port)
        if token is not None:
            welcome = await client.request({"t": "auth", "id": 1, "init_data": sign_init_data(token, user_id=user_id)})
            assert welcome["t"] in ("welcome", "ok"), welcome  # "ok": the ceiling server answers every frame so
        subscribed = await client.request({"t": "subscribe", "id": 2, "game": "dice"})
        assert subscribed["t"] in ("subscribed", "ok"), subscribed
        return client

    started = time.perf_counter()
    clients: list[CountingClient] = []
    pending: set[asyncio.Task[CountingClient]] = set()
    for index in range(count):
        pending.add(asyncio.create_task(one(first_user + index)))
        if len(pending) >= WAVE:  # keep WAVE handshakes in flight
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            clients += [task.result() for task in done]
    clients += await asyncio.gather(*pending)
    return time.perf_counter() - started, clients


async def settled_rss(pid: int) -> int:
    """The RSS of the process (and its workers) once it stopped moving (after allocations from the last
    connects settle)."""
    last = tree_rss(pid)
    for _ in range(20):
        await asyncio.sleep(0.5)
        rss = tree_rss(pid)
        if abs(rss - last) < 64 * 1024:
            return rss
        last = rss
    return last


async def croupier(url: str, pid: int, token: str, sockets: int, first_user: int) -> dict[str, float]:
    """One fresh node: RSS per idle socket (memory freed by closed sockets would be reused by a second
    storm in the same process, so each run gets its own), then the storm again as returning users."""
    port = urlsplit(url).port or 80
    _, warm_clients = await storm(port, 20, token, first_user - 100)  # load every code path once
    for client in warm_clients:
        client.close()
    before = await settled_rss(pid)
    generator = os.getpid()  # its own CPU only: its children are the benchmark's PostgreSQL and Valkey
    cpu = tree_cpu_seconds(pid), process_cpu_seconds(generator)
    new, clients = await storm(port, sockets, token, first_user)
    new_cpu = tree_cpu_seconds(pid) - cpu[0], process_cpu_seconds(generator) - cpu[1]
    kib = (await settled_rss(pid) - before) / sockets / 1024
    for client in clients:
        client.close()
    await asyncio.sleep(1.0)
    returning, clients = await storm(port, sockets, token, first_user)
    for client in clients:
        client.close()
    return {"new": new, "returning": returning, "kib": kib, "node_cpu": new_cpu[0], "generator_cpu": new_cpu[1]}


async def ceiling(pid: int, port: int, sockets: int, token: str) -> tuple[float, float]:
    """The websockets library's server: the storm's seconds (the same two exchanges, answered without
    looking at them: no initData check, no database) and KiB per idle socket."""
    before = await settled_rss(pid)
    seconds, clients = await storm(port, sockets, token, 0)
    kib = (await settled_rss(pid) - before) / sockets / 1024
    for client in clients:
        client.close()
    return seconds, kib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: embedded)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="croupier serve --workers N (more than 1: with Redis, an embedded Valkey by default)",
    )
    parser.add_argument("--redis-url", default=None, help="the Redis for --workers (default: an embedded Valkey)")
    args = parser.parse_args()
    gc.freeze()
    token = f"{secrets.randbelow(10**9) + 10**9}:{secrets.token_urlsafe(26)}"
    ceiling_kib: list[float] = []
    ceiling_storm: list[float] = []
    results: list[dict[str, float]] = []
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(bench_database(args.database_url))
        node_env = {"CROUPIER_GAMES": "dice", "CROUPIER_BETTING_MS": "3600000", "CROUPIER_WELCOME_CREDIT": "100",
                    "CROUPIER_WORKERS": str(args.workers)}  # fmt: skip
        if args.workers > 1:
            node_env["REDIS_URL"] = stack.enter_context(redis_server(args.redis_url))
        for run in range(args.runs):
            port = free_port()
            with ceiling_process(port, "loadtest.broadcast_ceiling") as process:
                seconds, kib = uvloop.run(ceiling(process.pid, port, args.sockets, token))
                ceiling_storm.append(seconds)
                ceiling_kib.append(kib)
            with node_process(database_url, token, **node_env) as (url, pid):
                results.append(uvloop.run(croupier(url, pid, token, args.sockets, 1_000_000 * (run + 1))))
    ours = {key: [r[key] for r in results] for key in ("new", "returning", "kib", "node_cpu", "generator_cpu")}
    n = args.sockets
    workers = f", croupier serve --workers {args.workers}" if args.workers > 1 else ""
    print(f"connect storm, {n} sockets (connect + auth + subscribe, {WAVE} in flight{workers}):")
    for label in ("new", "returning"):
        times = ours[label]
        print(f"  {label} users: {', '.join(f'{t:.2f}' for t in times)} s; median {statistics.median(times):.2f} s "
              f"= {n / statistics.median(times):,.0f} sockets/s (target: {n} in <= 3 s)")  # fmt: skip
    print(f"  CPU during the new-user storm (median): node {statistics.median(ours['node_cpu']):.2f} s, "
          f"load generator {statistics.median(ours['generator_cpu']):.2f} s (PostgreSQL not counted)")  # fmt: skip
    raw = statistics.median(ceiling_storm)
    print(f"  websockets library server, the same connects and two exchanges answered blindly: "
          f"{', '.join(f'{t:.2f}' for t in ceiling_storm)} s; median {raw:.2f} s; croupier takes "
          f"{statistics.median(ours['new']) / raw:.1f}x (new) and {statistics.median(ours['returning']) / raw:.1f}x "
          f"(returning) as long")  # fmt: skip
    kib, ceiling_median = statistics.median(ours["kib"]), statistics.median(ceiling_kib)
    print(f"memory per idle authenticated socket: croupier {', '.join(f'{k:.1f}' for k in ours['kib'])} KiB, "
          f"median {kib:.1f} KiB (target <= 24 KiB); websockets library server "
          f"{', '.join(f'{k:.1f}' for k in ceiling_kib)} KiB, median {ceiling_median:.1f} KiB; "
          f"ratio {kib / ceiling_median:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
