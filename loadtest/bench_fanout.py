"""Benchmark: events crossing nodes through Redis, into the sockets of one node.

Cross-node mode (``--mode cross-node``, the default): a real ``croupier serve`` process (node B)
runs on PostgreSQL and Redis with N authenticated sockets, one user each. Three processes of the
benchmark's own take the other parts, so none of them measures another's work:

- the publisher (a child process) plays node A: it writes ``balance`` events as PUBLISH commands,
  pipelined on a raw Redis connection, R a second in one batch per millisecond, round-robin over
  the N users' channels; each event carries its publish time;
- this process holds the N sockets (``loadtest/rawws.py``: no ``websockets`` client per frame) and
  measures each event's delay when it arrives;
- the floor: the same events read straight from Redis into this process (no node, no WebSocket),
  the delay of the path without node B, measured in the same run.

1. Delivery latency: R events a second for T seconds (``--rate``, ``--seconds``).
2. Relay throughput: K events published into Redis as fast as Redis takes them on a game
   channel node B follows (the engine subscribes every game's channel), then a marker on a
   user channel; the time until the marker reaches its socket is the time node B took to
   read and dispatch all K (Redis pub/sub keeps one connection's order).

    .venv/bin/python -m loadtest.bench_fanout --sockets 1000 --rate 1000 --seconds 10
    .venv/bin/python -m loadtest.bench_fanout --sockets 100 --rate 20000 --seconds 10
    .venv/bin/python -m loadtest.bench_fanout --database-url postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0

Prints delivered events/s, latency p50/p99/max and the floor's, each process's CPU, and the relay rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import secrets
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import hiredis
import orjson
import uvloop

from loadtest.common import bench_database, latency_summary, node_process, p99, process_cpu_seconds
from loadtest.rawws import CountingClient, open_client
from server.auth import sign_init_data
from server.broker.pubsub import PubSubConnection
from tests.services import redis_server

MARKER_OFFSET = 10**12


class Receiver:
    """One authenticated socket: records the delay of every event that carries its publish time."""

    def __init__(self, client: CountingClient, user_id: int) -> None:
        self.client, self.user_id = client, user_id
        self.delays_ms: list[float] = []
        self.marker = asyncio.Event()
        client.on_frame = self._received

    def _received(self, frame: bytes) -> None:
        arrived = time.time_ns()
        event = orjson.loads(frame)
        if event.get("offset", 0) >= MARKER_OFFSET:
            self.marker.set()
        elif event.get("reason") == "bench":
            self.delays_ms.append((arrived - event["ref"]) / 1e6)


async def open_receivers(url: str, token: str, count: int, first_user: int) -> list[Receiver]:
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80

    async def one(user_id: int) -> Receiver:
        client = await open_client(host, port, address.path)
        welcome = await client.request({"t": "auth", "id": 0, "init_data": sign_init_data(token, user_id=user_id)})
        assert welcome["t"] == "welcome", welcome
        return Receiver(client, user_id)

    receivers: list[Receiver] = []
    for start in range(0, count, 100):  # in waves: the handshake is not what this measures
        receivers += await asyncio.gather(*(one(first_user + i) for i in range(start, min(count, start + 100))))
    return receivers


class Publisher:
    """Node A, in a child process: publishes paced ``balance`` events on the users' channels.

    Events are pre-encoded PUBLISH commands written in one batch per millisecond tick on a raw
    connection (replies read by a separate task), so the publisher's own cost stays far below the
    node's; the last offset per user is kept across runs (a node delivers each offset once)."""

    def __init__(self, redis_url: str, user_ids: list[int]) -> None:
        self.redis_url, self.user_ids = redis_url, user_ids
        self.offsets = dict.fromkeys(user_ids, 0)
        self.origin = secrets.token_bytes(8)  # not node B's: B relays them all

    async def run(self, rate: int, seconds: float) -> dict[str, float]:
        address = urlsplit(self.redis_url)
        reader, writer = await asyncio.open_connection(address.hostname, address.port or 6379)
        replies, answered = hiredis.Reader(), 0

        async def count_replies() -> None:
            nonlocal answered
            while data := await reader.read(65536):
                replies.feed(data)
                while replies.gets() is not False:
                    answered += 1

        counting = asyncio.create_task(count_replies())
        channels = [(user_id, f"croupier:user:{user_id}".encode()) for user_id in self.user_ids]
        offsets, origin = self.offsets, self.origin
        step = 0.001
        own_before, started = time.process_time(), time.perf_counter()
        published, index = 0, 0
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(rate * elapsed) - published
            if due > 0:
                ref, batch = time.time_ns(), []
                for _ in range(due):
                    user_id, channel = channels[index % len(channels)]
                    index += 1
                    offsets[user_id] += 1
                    batch.append(_resp(b"PUBLISH", channel, origin + bench_event(offsets[user_id], ref)))
                writer.write(b"".join(batch))
                published += due
            await asyncio.sleep(step)  # a full step: shorter sleeps round to 0 in the loop's ms timers and spin
        counting.cancel()  # the rest read here: the replies to the last batches
        with contextlib.suppress(asyncio.CancelledError):
            await counting
        while answered < published:
            replies.feed(await reader.read(65536))
            while replies.gets() is not False:
                answered += 1
        wall = time.perf_counter() - started
        writer.close()
        return {"published": published, "cpu": (time.process_time() - own_before) / wall}


def bench_event(offset: int, ref: int) -> bytes:
    return orjson.dumps({"t": "balance", "ch": "user", "offset": offset, "epoch": "bench", "balance": 0, "delta": 0,
                         "reason": "bench", "ref": ref})  # fmt: skip


def publisher_process(redis_url: str, user_ids: list[int], orders: Connection) -> None:
    """The child's entry point: runs each ``(rate, seconds)`` order it receives, answers with the result."""
    publisher = Publisher(redis_url, user_ids)
    while (order := orders.recv()) is not None:
        orders.send(uvloop.run(publisher.run(*order)))


class RawSubscriber:
    """The floor: the same events read straight from Redis in this process (no node, no WebSocket)."""

    def __init__(self, redis_url: str, user_ids: list[int]) -> None:
        self.delays_ms: list[float] = []
        self.connection = PubSubConnection(redis_url, self._received, lambda: None)
        for user_id in user_ids:
            self.connection.subscribe(f"croupier:user:{user_id}".encode())
        self.connection.start()

    def _received(self, channel: bytes, data: bytes) -> None:
        arrived = time.time_ns()
        event = orjson.loads(data[8:])
        if event.get("reason") == "bench":
            self.delays_ms.append((arrived - event["ref"]) / 1e6)


async def latency_phase(orders: Connection, receivers: list[Receiver], rate: int, seconds: float, pid: int,
                        raw: RawSubscriber) -> dict[str, Any]:  # fmt: skip
    """Have the publisher send ``rate`` events a second for ``seconds``; gather the delays."""
    loop = asyncio.get_running_loop()
    cpu_before, own_before, started = process_cpu_seconds(pid), time.process_time(), time.perf_counter()
    orders.send((rate, seconds))
    published = await loop.run_in_executor(None, orders.recv)
    await asyncio.sleep(1.0)  # let the last ones land
    wall = time.perf_counter() - started
    cpu = process_cpu_seconds(pid) - cpu_before
    delays = [d for r in receivers for d in r.delays_ms]
    floor = raw.delays_ms[:]
    raw.delays_ms.clear()
    return {"floor": latency_summary(floor), "floor_p99": p99(floor), "published": published["published"],
            "delivered": len(delays), "delivered_per_s": len(delays) / seconds, "latency": latency_summary(delays),
            "node_cpu": cpu / wall, "receiver_cpu": (time.process_time() - own_before) / wall,
            "publisher_cpu": published["cpu"], "delays": delays}  # fmt: skip


async def relay_phase(redis_url: str, receiver: Receiver, events: int, pid: int, run: int) -> dict[str, Any]:
    """Push ``events`` into Redis as fast as it takes them, on a channel node B follows; then a marker.

    The publisher writes pre-encoded PUBLISH commands in pipelined chunks on a raw connection (redis-py
    would be the bottleneck), so what is measured is Redis and node B."""
    origin = secrets.token_bytes(8)  # not node B's: B relays them all
    tick = origin + orjson.dumps({"t": "tick", "game": "dice", "round": -1, "multiplier": 100, "ch": "game:dice",
                                  "offset": 0, "epoch": "bench"})  # fmt: skip
    marker = origin + orjson.dumps({"t": "balance", "ch": "user", "offset": MARKER_OFFSET + run, "epoch": "bench",
                                    "balance": 0, "delta": 0, "reason": "marker", "ref": 0})  # fmt: skip
    address = urlsplit(redis_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port or 6379)
    replies = hiredis.Reader()
    chunk = _resp(b"PUBLISH", b"croupier:game:dice", tick) * 5000

    async def await_replies(count: int) -> None:
        while count:
            replies.feed(await reader.read(65536))
            while count and replies.gets() is not False:
                count -= 1

    cpu_before, started = process_cpu_seconds(pid), time.perf_counter()
    sent = 0
    while sent < events:
        writer.write(chunk)
        await await_replies(5000)
        sent += 5000
    pushed = time.perf_counter() - started
    writer.write(_resp(b"PUBLISH", f"croupier:user:{receiver.user_id}".encode(), marker))
    await await_replies(1)
    await asyncio.wait_for(receiver.marker.wait(), 120)
    relayed = time.perf_counter() - started
    cpu = process_cpu_seconds(pid) - cpu_before
    writer.close()
    return {"events": sent, "pushed_per_s": sent / pushed, "relayed_per_s": sent / relayed,
            "node_cpu": cpu / relayed}  # fmt: skip


def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


async def cross_node(args: argparse.Namespace, token: str, url: str, pid: int, redis_url: str) -> None:
    receivers = await open_receivers(url, token, args.sockets, first_user=10_000)
    gc.collect()
    gc.freeze()  # the sockets live for the whole run: keep the collector from walking them over and over
    user_ids = [r.user_id for r in receivers]
    orders, child_end = multiprocessing.get_context("spawn").Pipe()
    publisher = multiprocessing.get_context("spawn").Process(
        target=publisher_process, args=(redis_url, user_ids, child_end), daemon=True
    )
    publisher.start()
    print(f"node B: pid {pid}, {len(receivers)} sockets; Redis {'given' if args.redis_url else 'embedded'}; "
          f"publisher pid {publisher.pid}; {os.cpu_count()} cores shared by node, Redis, publisher, "
          "receiver")  # fmt: skip
    runs = []
    raw = RawSubscriber(redis_url, user_ids)
    await raw.connection.connected.wait()
    for run in range(args.runs):
        for receiver in receivers:
            receiver.delays_ms.clear()
        result = await latency_phase(orders, receivers, args.rate, args.seconds, pid, raw)
        runs.append(result)
        print(f"latency run {run + 1}: {result['published']} published at {args.rate}/s, "
              f"{result['delivered']} delivered ({result['delivered_per_s']:.0f}/s), {result['latency']}, "
              f"CPU: node {result['node_cpu']:.0%}, publisher {result['publisher_cpu']:.0%}, "
              f"receiver {result['receiver_cpu']:.0%}; "
              f"floor (Redis straight into this process) {result['floor']}")  # fmt: skip
    relays = []
    for run in range(args.runs):
        receivers[0].marker.clear()
        relay = await relay_phase(redis_url, receivers[0], args.relay_events, pid, run)
        relays.append(relay)
        print(f"relay run {run + 1}: {relay['events']} events pushed into Redis at "
              f"{relay['pushed_per_s']:.0f}/s, relayed into node B at {relay['relayed_per_s']:.0f}/s, "
              f"node CPU {relay['node_cpu']:.0%}")  # fmt: skip
    orders.send(None)
    publisher.join(10)
    if publisher.is_alive():
        publisher.kill()
    await raw.connection.close()
    for receiver in receivers:
        receiver.client.close()
    p99s = sorted(p99(r["delays"]) for r in runs)
    rates = sorted(r["relayed_per_s"] for r in relays)
    floors = sorted(r["floor_p99"] for r in runs)
    print(f"median of {args.runs}: cross-node delivery p99 {p99s[len(p99s) // 2]:.2f} ms at {args.rate} events/s to "
      f"{args.sockets} sockets (target <= 2 ms at 20,000/s), floor p99 {floors[len(floors) // 2]:.2f} ms; "
      f"relay into one node {rates[len(rates) // 2]:.0f} events/s "
      f"(target >= 40,000)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["cross-node"], default="cross-node")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=1000, help="events a second in the latency phase")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--relay-events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: embedded)")
    parser.add_argument("--redis-url", default=None, help="a Redis server (default: an embedded Valkey)")
    args = parser.parse_args()
    token = f"{secrets.randbelow(10**9) + 10**9}:{secrets.token_urlsafe(26)}"
    with (
        bench_database(args.database_url) as database_url,
        redis_server(args.redis_url) as redis_url,
        node_process(
            database_url,
            token,
            REDIS_URL=redis_url,
            CROUPIER_GAMES="dice",
            CROUPIER_BETTING_MS="3600000",
            CROUPIER_RATE_LIMIT="100000",
        ) as (url, pid),  # fmt: skip
    ):
        uvloop.run(cross_node(args, token, url, pid, redis_url))  # the load generator as lean as the node


if __name__ == "__main__":
    main()
