"""Benchmark: relay throughput into one node from a Redis Cluster of 1 and of 3 shards (sharded pub/sub).

One process (the receiver, a child) follows ``--channels`` user channels the way a node does; this process
publishes ``--events`` events spread over those channels as fast as the cluster takes them (``SPUBLISH``
pipelined straight to each channel's master, pre-encoded: the publisher costs little CPU). The receiver
counts what it gets; the rate is events over the time from the first to the last one delivered (Redis
keeps each connection's order, and the servers run with no pub/sub output-buffer limit, so the receiver
reads as fast as it can and nothing is dropped). Receivers:

- ``croupier``: :class:`~server.broker.cluster.ClusterBroker`, the node's broker: one hiredis connection per
  master it needs, each message handed to the channel's local subscriber (a counting handler);
- ``hiredis``: the ceiling for one Python process: the same connections and hiredis parser, each message
  only counted (no broker, no dispatch);
- ``redis-py``: redis-py 8's asyncio ``ClusterPubSub`` (``ssubscribe`` + ``get_sharded_message``), the
  library's own sharded reader.

Each shard count gets its own cluster (``redis-server --cluster-enabled yes`` on free loopback ports, 1 or
3 masters), every receiver runs ``--repeat`` times on it, the best run is printed.

    .venv/bin/python -m loadtest.bench_relay_shards --events 200000 --channels 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hiredis
import uvloop

from loadtest.common import process_cpu_seconds
from server.broker.cluster import ClusterBroker, SlotMap
from tests.services import RedisClusterServers, redis_cluster_binary

PREFIX = "bench:"
PAYLOAD = b"x" * 100
"""About a ``balance`` event's size."""
RECEIVERS = ("croupier", "hiredis", "redis-py")


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _shard_channel(name: str) -> bytes:
    return f"{PREFIX}{{{name}}}".encode()


async def _slots(port: int) -> SlotMap:
    import redis.asyncio as aioredis

    async with aioredis.Redis(port=port) as server:
        return SlotMap(await server.execute_command("CLUSTER", "SLOTS"))


# The receiver (a child process) -----------------------------------------------------------------------


class _Counter:
    def __init__(self, expected: int) -> None:
        self.expected, self.count = expected, 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    def hit(self, n: int = 1) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
        self.count += n
        if self.count >= self.expected:
            self.last = time.perf_counter()
            self.done.set()


class _Counting(asyncio.Protocol):
    """A bare sharded subscriber: hiredis parses, each ``smessage`` is counted and nothing more."""

    def __init__(self, counter: _Counter, confirmed: Callable[[], None]) -> None:
        self.reader, self.counter, self.confirmed = hiredis.Reader(), counter, confirmed

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        n = 0
        while (reply := self.reader.gets()) is not False:
            if reply[0] == b"smessage":
                n += 1
            elif reply[0] == b"ssubscribe":
                self.confirmed()
        if n:
            self.counter.hit(n)


async def _by_master(url: str, channels: list[str]) -> dict[tuple[str, int], list[bytes]]:
    slots = await _slots(int(url.rsplit(":", 1)[1].strip("/")))
    by_master: dict[tuple[str, int], list[bytes]] = {}
    for name in channels:
        master = slots.master_of(_shard_channel(name))
        assert master is not None
        by_master.setdefault(master, []).append(_shard_channel(name))
    return by_master


async def _receive(kind: str, url: str, channels: list[str], expected: int, backlog: bool) -> dict[str, Any]:
    counter = _Counter(expected)
    closers: list[Callable[[], Any]] = []
    if kind == "croupier":
        broker = ClusterBroker(url, prefix=PREFIX)
        for name in channels:
            await broker.subscribe(name, lambda _, __: counter.hit())
        closers.append(broker.close)
    elif kind == "hiredis":
        pending = [len(channels)]
        all_confirmed = asyncio.Event()

        def confirmed() -> None:
            pending[0] -= 1
            if pending[0] == 0:
                all_confirmed.set()

        loop = asyncio.get_running_loop()
        for (host, port), names in (await _by_master(url, channels)).items():
            transport, _ = await loop.create_connection(lambda: _Counting(counter, confirmed), host, port)
            transport.write(b"".join(_command(b"SSUBSCRIBE", name) for name in names))
            closers.append(transport.close)
        await all_confirmed.wait()
    else:  # redis-py's own pub/sub reader, one per master (its ClusterPubSub polls the masters in turn)
        import redis.asyncio as aioredis

        async def read(pubsub: Any) -> None:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "smessage":
                    counter.hit()

        for (host, port), names in (await _by_master(url, channels)).items():
            client = aioredis.Redis(host=host, port=port)
            pubsub = client.pubsub()
            for name in names:  # one a command: the channels of one SSUBSCRIBE must share a slot
                await pubsub.ssubscribe(name)
            while await pubsub.get_message(timeout=0.5) is not None:
                pass  # the confirmations
            reader = asyncio.create_task(read(pubsub))

            async def close(reader: asyncio.Task[None] = reader, pubsub: Any = pubsub, client: Any = client) -> None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                await pubsub.aclose()
                await client.aclose()

            closers.append(close)
    print("ready", flush=True)
    if backlog:  # hold the loop (nothing is read) until every event is in Redis's buffers: then read them all
        sys.stdin.readline()
    cpu = process_cpu_seconds(os.getpid())
    try:
        await asyncio.wait_for(counter.done.wait(), 120)
    except TimeoutError:
        return {"error": f"got {counter.count} of {expected} within 120 s"}
    finally:
        for close in closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result
    elapsed = counter.last - counter.first
    return {"events": counter.count, "seconds": elapsed, "rate": counter.count / elapsed,
            "cpu": process_cpu_seconds(os.getpid()) - cpu}  # fmt: skip


# The publisher (this process) -------------------------------------------------------------------------


async def _publish(slots: SlotMap, channels: list[str], events: int) -> float:
    """Send ``events`` SPUBLISHes round-robin over ``channels``, pipelined to each channel's master; the
    seconds until every master answered them all."""
    frames: dict[tuple[str, int], list[bytes]] = {}
    for i in range(events):
        name = _shard_channel(channels[i % len(channels)])
        master = slots.master_of(name)
        assert master is not None
        frames.setdefault(master, []).append(_command(b"SPUBLISH", name, b"%08d" % i + PAYLOAD))

    async def one(master: tuple[str, int], commands: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(*master)
        parser = hiredis.Reader()

        async def drain_replies() -> None:
            left = len(commands)
            while left:
                parser.feed(await reader.read(65536))
                while parser.gets() is not False:
                    left -= 1

        replies = asyncio.create_task(drain_replies())
        for start in range(0, len(commands), 2000):
            writer.write(b"".join(commands[start : start + 2000]))
            await writer.drain()
        await replies
        writer.close()
        await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(one(master, commands) for master, commands in frames.items()))
    return time.perf_counter() - started


async def _run_one(kind: str, cluster: RedisClusterServers, channels: int, events: int,
                   backlog: bool) -> dict[str, Any]:  # fmt: skip
    names = [f"user:{n}" for n in range(1, channels + 1)]
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.bench_relay_shards", "--receiver", kind, "--url", cluster.url(),
        "--channels", str(channels), "--events", str(events), *(["--backlog"] if backlog else []),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert receiver.stdout is not None and receiver.stdin is not None
        line = await receiver.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the {kind} receiver did not start: {line!r}")
        sent = await _publish(await _slots(cluster.master_ports[0]), names, events)
        receiver.stdin.write(b"go\n")
        await receiver.stdin.drain()
        out, _ = await asyncio.wait_for(receiver.communicate(), 180)
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        result["publish_rate"] = events / sent
        return result
    finally:
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()


async def _bench(args: argparse.Namespace) -> None:
    binary = redis_cluster_binary()
    if binary is None:
        raise SystemExit("redis-server not found (apt-get install redis-server)")
    mode = "published first, then drained" if args.backlog else "published while received"
    print(f"relay into one node: {args.events} events of {len(PAYLOAD) + 8} B over {args.channels} channels "
          f"({mode}), best of {args.repeat}; {os.cpu_count()} cores")  # fmt: skip
    for shards in args.shards:
        with tempfile.TemporaryDirectory(prefix="croupier-bench-cluster-") as root:
            cluster = RedisClusterServers(binary, Path(root), masters=shards,
                                          extra_args=("--client-output-buffer-limit", "pubsub 0 0 0"))  # fmt: skip
            cluster.start()
            try:
                for kind in args.receivers:
                    runs = [await _run_one(kind, cluster, args.channels, args.events, args.backlog)
                            for _ in range(args.repeat)]  # fmt: skip
                    good = [run for run in runs if "rate" in run]
                    if not good:
                        print(f"  {shards} shard(s)  {kind:9} failed: {runs[-1].get('error')}")
                        continue
                    best = max(good, key=lambda run: run["rate"])
                    print(f"  {shards} shard(s)  {kind:9} {best['rate']:>9,.0f} events/s delivered "
                          f"(median {statistics.median(r['rate'] for r in good):,.0f}); receiver CPU "
                          f"{best['cpu'] / best['seconds']:.0%} of a core; published at "
                          f"{best['publish_rate']:,.0f}/s", flush=True)  # fmt: skip
            finally:
                cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--receivers", nargs="+", choices=RECEIVERS, default=list(RECEIVERS))
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="publish every event first (the receiver reads nothing meanwhile), then time the "
        "receiver draining them: its ceiling, free of the publisher's share of the CPU",
    )
    parser.add_argument("--receiver", choices=RECEIVERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        names = [f"user:{n}" for n in range(1, args.channels + 1)]
        result = uvloop.run(_receive(args.receiver, args.url, names, args.events, args.backlog))
        print(json.dumps(result), flush=True)
        return
    asyncio.run(_bench(args))


if __name__ == "__main__":
    main()
