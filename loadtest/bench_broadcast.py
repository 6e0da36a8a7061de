"""Benchmark: broadcast fan-out to N sockets, against two ceilings measured in the same run.

Croupier: a real ``croupier serve`` process with N authenticated sockets subscribed to dice. M
round events are pushed into Redis at once on ``game:dice`` (the channel every node follows);
the node relays each to its N sockets (encoded once, one bounded queue per socket). Ceilings: the
``websockets`` library's own server (``loadtest/broadcast_ceiling.py``) with N connections calls
``websockets.broadcast`` M times with the same bytes; and a bare server (``loadtest/transport_ceiling.py``)
that completes the same handshake and writes one prebuilt frame straight to each uvloop transport M times.
The same light client process (``loadtest/rawws.py``) holds the N sockets in all three and measures the
time until every socket got all M events.

    .venv/bin/python -m loadtest.bench_broadcast --sockets 1000 5000 --events 200 --runs 3
    .venv/bin/python -m loadtest.bench_broadcast --sockets 5000 --runs 3 --workers 1 2   # and with two workers

Prints delivered events/s, server CPU and the ratios to the ceilings, per N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import uvloop

from loadtest.bench_fanout import _resp
from loadtest.broadcast_ceiling import EVENT
from loadtest.common import bench_database, free_port, node_process, process_cpu_seconds, tree_cpu_seconds
from loadtest.rawws import CountingClient, open_client
from server.auth import sign_init_data
from server.broker.pubsub import BATCH
from tests.services import redis_server


async def connect_all(port: int, count: int, token: str | None) -> list[CountingClient]:
    """``count`` sockets, authenticated and subscribed to dice (waves of 200)."""

    async def one(user_id: int) -> CountingClient:
        client = await open_client("127.0.0.1", port)
        if token is not None:
            welcome = await client.request({"t": "auth", "id": 1, "init_data": sign_init_data(token, user_id=user_id)})
            assert welcome["t"] in ("welcome", "ok"), welcome
        subscribed = await client.request({"t": "subscribe", "id": 2, "game": "dice"})
        assert subscribed["t"] in ("subscribed", "ok"), subscribed
        return client

    clients: list[CountingClient] = []
    for start in range(0, count, 200):
        clients += await asyncio.gather(*(one(50_000 + i) for i in range(start, min(count, start + 200))))
    return clients


async def deliver(clients: list[CountingClient], events: int, send: object, pid: int,
                  cpu_seconds: Callable[[int], float] = process_cpu_seconds) -> tuple[float, float]:  # fmt: skip
    """Have the server push ``events`` (``send()`` starts it); return (delivered events/s, server cores)."""
    waits = [client.expect(events) for client in clients]
    cpu, started = cpu_seconds(pid), time.perf_counter()
    await send()  # type: ignore[operator]
    try:
        await asyncio.wait_for(asyncio.gather(*waits), 120)
    except TimeoutError:
        got = sorted(client.frames for client in clients)
        closed = {client.close_code for client in clients if client.close_code is not None}
        raise RuntimeError(
            f"not every socket got the events: frames min {got[0]}, max {got[-1]}; closed with {closed or 'nothing'}"
        ) from None
    elapsed = time.perf_counter() - started
    return len(clients) * events / elapsed, (cpu_seconds(pid) - cpu) / elapsed


async def croupier_runs(url: str, pid: int, redis_url: str, token: str, sockets: int, events: int,
                        runs: int) -> list[tuple[float, float]]:  # fmt: skip
    port = urlsplit(url).port or 80
    clients = await connect_all(port, sockets, token)
    address = urlsplit(redis_url)
    _, writer = await asyncio.open_connection(address.hostname, address.port or 6379)  # replies left unread
    origin = secrets.token_bytes(8)
    burst = _resp(b"PUBLISH", b"croupier:game:dice", origin + EVENT.encode()) * events

    async def send() -> None:
        writer.write(burst)
        await writer.drain()

    results = []
    for _ in range(runs):
        results.append(await deliver(clients, events, send, pid, tree_cpu_seconds))  # the node and its workers
        await asyncio.sleep(0.5)
    writer.close()
    closed = sum(client.close_code is not None for client in clients)
    for client in clients:
        client.close()
    if closed:
        print(f"  warning: {closed} sockets were closed by the server during the runs")
    return results


@contextlib.contextmanager
def ceiling_process(port: int, module: str, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *extra],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        yield process
    finally:
        process.terminate()
        process.wait(10)


async def ceiling_runs(module: str, sockets: int, events: int, runs: int, *extra: str) -> list[tuple[float, float]]:
    port = free_port()
    with ceiling_process(port, module, *extra) as process:
        clients = await connect_all(port, sockets, None)
        assert process.stdin is not None and process.stdout is not None

        async def send() -> None:
            process.stdin.write(f"broadcast {events}\n".encode())  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]

        results = []
        for _ in range(runs):
            results.append(await deliver(clients, events, send, process.pid))
            await asyncio.to_thread(process.stdout.readline)
            await asyncio.sleep(0.5)
        for client in clients:
            client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--events", type=int, default=200, help="events per run (below the send queue's 256)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: embedded)")
    parser.add_argument("--redis-url", default=None, help="a Redis server (default: an embedded Valkey)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="croupier serve --workers N, each measured in turn (the first is the one the ratios to "
                             "the ceilings use)")  # fmt: skip
    args = parser.parse_args()
    token = f"{secrets.randbelow(10**9) + 10**9}:{secrets.token_urlsafe(26)}"
    print(f"{args.events} events per run, {len(EVENT)} bytes each; client, server and Redis share the machine")
    with bench_database(args.database_url) as database_url, redis_server(args.redis_url) as redis_url:
        for sockets in args.sockets:
            bare = uvloop.run(ceiling_runs("loadtest.transport_ceiling", sockets, args.events, args.runs))
            coalesced = uvloop.run(ceiling_runs("loadtest.transport_ceiling", sockets, args.events, args.runs,
                                                "--batch", str(BATCH)))  # fmt: skip
            ceiling = uvloop.run(ceiling_runs("loadtest.broadcast_ceiling", sockets, args.events, args.runs))
            by_workers: dict[int, list[tuple[float, float]]] = {}
            for workers in args.workers:
                node_env = {"REDIS_URL": redis_url, "CROUPIER_GAMES": "dice", "CROUPIER_BETTING_MS": "3600000",
                            "CROUPIER_WORKERS": str(workers)}  # fmt: skip
                with node_process(database_url, token, **node_env) as (url, pid):
                    by_workers[workers] = uvloop.run(croupier_runs(url, pid, redis_url, token, sockets, args.events,
                                                                   args.runs))  # fmt: skip
            ours = by_workers[args.workers[0]]
            labelled = [(f"croupier --workers {w}", results) for w, results in by_workers.items()]
            for label, results in (("bare transport writes", bare), (f"bare, {BATCH} frames a write", coalesced),
                                   ("websockets.broadcast", ceiling), *labelled):  # fmt: skip
                rates = ", ".join(f"{rate:,.0f}" for rate, _ in results)
                print(f"{sockets} sockets, {label}: {rates} events/s delivered; server cores "
                      f"{', '.join(f'{cpu:.2f}' for _, cpu in results)}")  # fmt: skip
            ours_median = statistics.median(rate for rate, _ in ours)
            ceiling_median = statistics.median(rate for rate, _ in ceiling)
            bare_median = statistics.median(rate for rate, _ in bare)
            coalesced_median = statistics.median(rate for rate, _ in coalesced)
            print(f"{sockets} sockets: croupier {ours_median:,.0f} events/s = {ours_median / bare_median:.2f}x the "
                  f"bare transport ceiling ({bare_median:,.0f}; target >= 0.9x at 5,000), "
                  f"{ours_median / coalesced_median:.2f}x the bare one writing {BATCH} frames at once "
                  f"({coalesced_median:,.0f}), {ours_median / ceiling_median:.2f}x websockets.broadcast "
                  f"({ceiling_median:,.0f})")  # fmt: skip
            for workers in args.workers[1:]:
                median = statistics.median(rate for rate, _ in by_workers[workers])
                print(f"{sockets} sockets: croupier --workers {workers} {median:,.0f} events/s = "
                      f"{median / ours_median:.2f}x --workers {args.workers[0]} (target >= 1.6x with 2, where the "
                      f"client is not the limit: it takes {coalesced_median:,.0f} events/s from the coalescing bare "
                      f"server)")  # fmt: skip


if __name__ == "__main__":
    main()
