"""Capacity check: the capacity model of docs/capacity.md against real nodes, at a small scale.

docs/capacity.md sizes a crash deployment from the unit costs measured by the benchmarks of
docs/performance.md (node CPU per frame delivered and per request, Redis time per event). This runs
the model's workload for real: N ``croupier serve`` processes on this machine (as the benchmarks run a
node: ``loadtest/common.py``), one Redis (an embedded Valkey, ``--redis-url``, or ``--redis-cluster 3``:
a Redis Cluster of 3 masters started for the run), one PostgreSQL, and S sockets spread evenly over the
nodes, each authenticated and subscribed to crash; a fraction of them (``--bettors``) bet once a round and
cash out by hand at ``--cashout``. One observer socket decodes the game channel to know the round, its
phase and the multiplier; the other sockets only count their frames (``loadtest/rawws.py``).

Over a window of ``--seconds`` after every socket joined it measures: frames delivered to the sockets
per second (game frames and user pushes), bets committed and cash-outs per second (the nodes'
``/metrics``), each node's CPU, Redis's CPU (``INFO cpu``, summed over a cluster's masters) and
PostgreSQL's commits; then prints the model's prediction beside each figure, with the ratio measured /
predicted. The game's own randomness (how long rounds run) is taken from the observer, so the predictions test the
model's unit costs and per-player accounting, not the luck of the crash points.

    .venv/bin/python -m loadtest.capacity_check --nodes 2 --sockets 2000 --bettors 0.2 --seconds 60
    .venv/bin/python -m loadtest.capacity_check --nodes 2 --sockets 2000 --redis-cluster 3

Server, load generator, Redis and PostgreSQL share the machine: compare ratios, and read the node CPU
per frame as an upper bound of a node that has a core to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import uvloop

from loadtest.bench_compression import WireClient
from loadtest.common import bench_database, node_process, process_cpu_seconds
from loadtest.rawws import CountingClient, open_client, text_frame
from server.auth import sign_init_data
from tests.metrics.scrape import Scrape, scrape
from tests.services import RedisClusterServers, redis_cluster_binary, redis_server

# ------------------------------------------------------------------------------------------ the model
# Every figure below is docs/capacity.md's, with the measurement of docs/performance.md it comes from.

TICKS_PER_SECOND = 10.0
"""Crash sends a tick every 100 ms while the multiplier climbs (``Crash.tick_ms``)."""
ROUND_EVENTS = 3
"""Game-channel ``round`` events per round: betting, running, settled."""
USER_FRAMES_ALWAYS = 3
"""Frames a betting player gets each round whatever happens: bet_ok, the ``balance`` after the bet, bet_settled."""
USER_FRAMES_CASHED_OUT = 2
"""And when the cash-out is in time: action_ok, and the ``balance`` of the win."""
FRAME_US = 14.5
"""Node CPU per frame delivered, crash, JSON (docs/performance.md, "WebSocket compression": all the node's
CPU over whole crash rounds divided by the frames it delivered, 500 sockets)."""
REQUEST_US = 55.0
"""Node CPU per bet, its reply and balance push included (docs/performance.md, "Bets": ~55 us a bet);
taken for a cash-out too."""
REDIS_COMMAND_US = 2.7
"""Redis time per simple command: the bare pipelined ZINCRBY ceiling, 9 a row at 38,000-43,000 rows/s
(docs/performance.md, "Leaderboard updates")."""
LEADERBOARD_ROW_US = 24.0
"""Redis time of the leaderboard relay per settled bet (23-25 us, same table)."""
USER_EVENTS_PER_ROUND = 3.0
"""User events a betting player's round publishes through Redis: balance after the bet, bet_settled and the
winning balance (the outbox relay: one PUBLISH each)."""
GAME_EVENT_COMMANDS = 3
"""Redis commands per game event published: PUBLISH, XADD to the channel's history, PEXPIRE; then one
delivery per node following the channel."""


@dataclass(frozen=True, slots=True)
class Shape:
    """What the observer saw of the game over the window."""

    seconds: float
    rounds: float
    """Rounds settled in the window (a fraction for the round in flight at either end is not counted)."""
    running_seconds: float
    """Time the multiplier climbed (between ``running`` and ``settled``) within the window."""
    ticks: int
    opened: int
    """Rounds whose betting opened in the window (one bet per bettor each)."""
    reached: int
    """Rounds whose multiplier reached the cash-out target in the window (one cash-out per bettor each)."""

    @property
    def round_seconds(self) -> float:
        return self.seconds / max(self.rounds, 1e-9)

    @property
    def running_share(self) -> float:
        return self.running_seconds / self.seconds


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's figures for ``sockets`` players of whom ``bettors`` bet, on ``nodes`` nodes."""

    game_frames: float
    user_frames: float
    bets: float
    cashouts: float
    node_cores: float
    """Per node."""
    redis_us_per_player_second: float


def predict(shape: Shape, *, sockets: int, bettors: int, nodes: int) -> Prediction:
    """docs/capacity.md's formulas with the round shape the observer measured (how long the multiplier
    climbed, how many rounds opened and reached the cash-out target: the luck of the crash points)."""
    per_round = 1 / shape.round_seconds
    game = sockets * (TICKS_PER_SECOND * shape.running_share + ROUND_EVENTS * per_round)
    bets, cashouts = bettors * shape.opened / shape.seconds, bettors * shape.reached / shape.seconds
    user = bets * USER_FRAMES_ALWAYS + cashouts * USER_FRAMES_CASHED_OUT
    cores = ((game + user) * FRAME_US + (bets + cashouts) * REQUEST_US) / 1e6 / nodes
    per_player = bets * (USER_EVENTS_PER_ROUND * REDIS_COMMAND_US + LEADERBOARD_ROW_US)
    game_events = TICKS_PER_SECOND * shape.running_share + ROUND_EVENTS * per_round  # one game: once per cluster
    fixed = game_events * (GAME_EVENT_COMMANDS + nodes) * REDIS_COMMAND_US
    return Prediction(game, user, bets, cashouts, cores, (per_player + fixed) / max(sockets, 1))


# ------------------------------------------------------------------------------------------ the run


@dataclass
class Observer:
    """Reads the game channel on one socket: the current round, its phase, the multiplier, the counts."""

    round: int = 0
    phase: str = ""
    multiplier: int = 0
    ticks: int = 0
    settled: int = 0
    opened: int = 0
    """Rounds whose betting opened (each bettor bets once in each)."""
    reached: int = 0
    """Rounds whose multiplier reached the cash-out target (each bettor cashes out once in each)."""
    target: int = 0
    stray_ticks: int = 0
    """Ticks of a round the observer did not see start running: the climbing time is then short of what the
    ticks cover, and every prediction that uses it is off (0 since :meth:`start_from`)."""
    running_since: float | None = None
    running_seconds: float = 0.0
    betting: asyncio.Event = field(default_factory=asyncio.Event)
    tick: asyncio.Event = field(default_factory=asyncio.Event)

    def see(self, message: dict[str, Any], _payload: bytes) -> None:
        if message.get("ch") != "game:crash":
            return
        now = time.monotonic()
        if message["t"] == "tick":
            self.ticks += 1
            if self.running_since is None or message.get("round") != self.round:
                self.stray_ticks += 1  # a tick outside the running phase the observer saw announced
            was, self.multiplier = self.multiplier, message.get("multiplier", 0)
            self.reached += was < self.target <= self.multiplier
            self.tick.set()
        elif message["t"] == "round":
            self.round, self.phase = message["round"], message["phase"]
            if self.phase == "betting":
                self.multiplier = 0
                self.opened += 1
                self.betting.set()
            elif self.phase == "running":
                self.running_since = now
            elif self.phase == "settled":
                self.settled += 1
                if self.running_since is not None:
                    self.running_seconds += now - self.running_since
                self.running_since = None

    def start_from(self, snapshot: dict[str, Any] | None) -> None:
        """The round in flight when the observer subscribed (``subscribed.round``): its ``running`` event came
        before the observer did, so without this its ticks would count with no climbing time under them."""
        if snapshot is not None and snapshot.get("phase") == "running":
            self.round, self.phase, self.running_since = snapshot["round"], "running", time.monotonic()

    def running_until(self, now: float) -> float:
        """Running time so far, the round in flight included."""
        return self.running_seconds + (now - self.running_since if self.running_since is not None else 0.0)


def send(client: CountingClient, message: dict[str, Any]) -> None:
    """Write ``message`` without waiting for its reply (replies are counted as frames, and in /metrics)."""
    assert client.transport is not None
    client.transport.write(text_frame(orjson.dumps(message)))


async def join(port: int, token: str, user_id: int) -> CountingClient:
    """A socket authenticated as ``user_id`` and subscribed to crash."""
    client = await open_client("127.0.0.1", port)
    welcome = await client.request({"t": "auth", "id": 1, "init_data": sign_init_data(token, user_id=user_id)})
    assert welcome["t"] == "welcome", welcome
    subscribed = await client.request({"t": "subscribe", "id": 2, "game": "crash"})
    assert subscribed["t"] == "subscribed", subscribed
    return client


async def play(observer: Observer, bettors: list[CountingClient], first_user: int, cashout: int,
               stop: asyncio.Event) -> None:  # fmt: skip
    """Each round: every bettor bets 10 as betting opens (in 10 waves over 0.5 s), and cashes out by hand on
    the first tick at ``cashout`` or above (a round that crashes before gets no cash-out)."""
    while not stop.is_set():
        observer.betting.clear()
        await observer.betting.wait()
        round_id = observer.round
        for wave in range(10):
            for i in range(wave, len(bettors), 10):
                send(bettors[i], {"t": "bet", "id": f"b{round_id}", "game": "crash", "round": round_id, "amount": 10,
                                  "params": {}, "key": f"{first_user + i}-{round_id}"})  # fmt: skip
            await asyncio.sleep(0.05)
        while observer.round == round_id and observer.phase != "settled" and observer.multiplier < cashout:
            observer.tick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(observer.tick.wait(), 1.0)
        if observer.round == round_id and observer.phase == "running":
            for i, client in enumerate(bettors):
                send(client, {"t": "action", "id": f"c{round_id}", "game": "crash", "round": round_id,
                              "action": "cashout", "params": {}})  # fmt: skip
                if i % 200 == 199:
                    await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    cpu: list[float]
    scrapes: list[Scrape]
    frames: int
    ticks: int
    settled: int
    running: float
    opened: int
    reached: int
    redis_cpu: float | None
    redis_commands: dict[str, tuple[int, int]]
    """Per Redis command: calls and microseconds inside Redis so far (``INFO commandstats``; empty for a cluster)."""
    commits: int


async def redis_servers(url: str) -> list[str] | None:
    """The Redis servers whose CPU and commands to read: the one server of a ``redis://`` URL, every master of
    a ``redis+cluster://`` one (``CLUSTER NODES`` of its first start node); None for Sentinels."""
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return [url]
    if scheme != "redis+cluster":
        return None
    import redis.asyncio as aioredis

    first = urlsplit(url).netloc.split(",")[0]
    client = aioredis.from_url(f"redis://{first}")
    try:
        nodes = await client.execute_command("CLUSTER", "NODES")
    finally:
        await client.aclose()
    text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
    masters = [line.split()[1].split("@")[0] for line in text.splitlines() if "master" in line.split()[2].split(",")]
    return [f"redis://{address}" for address in sorted(masters)]


async def _info(url: str, section: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        info: dict[str, Any] = await client.info(section)
        return info
    finally:
        await client.aclose()


async def redis_cpu_seconds(servers: list[str] | None) -> float | None:
    """The Redis servers' own CPU seconds together (``INFO cpu``: user + system of each), None for Sentinels."""
    if servers is None:
        return None
    infos = await asyncio.gather(*(_info(url, "cpu") for url in servers))
    return sum(float(info["used_cpu_sys"]) + float(info["used_cpu_user"]) for info in infos)


async def redis_commands(servers: list[str] | None) -> dict[str, tuple[int, int]]:
    """``INFO commandstats`` of the Redis servers together: calls and microseconds per command."""
    total: dict[str, tuple[int, int]] = {}
    for info in await asyncio.gather(*(_info(url, "commandstats") for url in servers or ())):
        for name, v in info.items():
            calls, usec = total.get(name.removeprefix("cmdstat_"), (0, 0))
            total[name.removeprefix("cmdstat_")] = (calls + int(v["calls"]), usec + int(v["usec"]))
    return total


async def commits(database_url: str) -> int:
    """PostgreSQL's committed transactions in the database so far."""
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return count
    finally:
        await conn.close()


async def snapshot(ports: list[int], pids: list[int], clients: list[CountingClient], observer: Observer,
                   servers: list[str] | None, database_url: str) -> Snapshot:  # fmt: skip
    """Everything counted so far: what this process counts and the CPU clocks read at one instant, the
    servers' own counters read at once right after (their skew is a few ms over a window of a minute)."""
    now = time.monotonic()
    cpu = [process_cpu_seconds(pid) for pid in pids]
    frames, ticks, settled, running = (sum(c.frames for c in clients), observer.ticks, observer.settled,
                                       observer.running_until(now))  # fmt: skip
    opened, reached = observer.opened, observer.reached
    scrapes, redis, commands, committed = await asyncio.gather(
        asyncio.gather(*(scrape(port) for port in ports)), redis_cpu_seconds(servers), redis_commands(servers),
        commits(database_url))  # fmt: skip
    return Snapshot(now, cpu, list(scrapes), frames, ticks, settled, running, opened, reached, redis, commands,
                    committed)  # fmt: skip


async def idle_cpu(pids: list[int], servers: list[str] | None, seconds: float) -> tuple[list[float], float | None]:
    """Each node's cores and Redis's us of CPU per second with no player connected (timers, pings, the
    driver's rounds to nobody): taken out of the window's figures to get what the players cost."""
    cpu, started = [process_cpu_seconds(pid) for pid in pids], time.monotonic()
    redis = await redis_cpu_seconds(servers)
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    nodes = [(process_cpu_seconds(pid) - before) / elapsed for pid, before in zip(pids, cpu, strict=True)]
    after = await redis_cpu_seconds(servers)
    return nodes, (after - redis) * 1e6 / elapsed if after is not None and redis is not None else None


def _delta(before: Scrape, after: Scrape, metric: str, **labels: str) -> float:
    return after.value(metric, **labels) - before.value(metric, **labels)


async def run(args: argparse.Namespace, urls: list[str], pids: list[int], token: str, redis_url: str,
              database_url: str) -> dict[str, Any]:  # fmt: skip
    ports = [urlsplit(url).port or 80 for url in urls]
    observer = Observer(target=args.cashout)
    loop = asyncio.get_running_loop()
    _, watcher = await loop.create_connection(lambda: WireClient("127.0.0.1", ports[0], "croupier.v1.json", False),
                                              "127.0.0.1", ports[0])  # fmt: skip
    await watcher.upgraded
    welcome = await watcher.request({"t": "auth", "id": 1, "init_data": sign_init_data(token, user_id=1)})
    assert welcome["t"] == "welcome", welcome
    watcher.on_message = observer.see
    subscribed = await watcher.request({"t": "subscribe", "id": 2, "game": "crash"})
    assert subscribed["t"] == "subscribed", subscribed
    observer.start_from(subscribed.get("round"))
    servers = await redis_servers(redis_url)
    idle_nodes, idle_redis = await idle_cpu(pids, servers, args.baseline)
    first_user = 100_000
    clients: list[CountingClient] = []
    started = time.perf_counter()
    for start in range(0, args.sockets, 200):  # waves of 200, spread over the nodes
        wave = range(start, min(args.sockets, start + 200))
        clients += await asyncio.gather(*(join(ports[i % len(ports)], token, first_user + i) for i in wave))
    joined = time.perf_counter() - started
    bettors = clients[: int(len(clients) * args.bettors)]
    stop = asyncio.Event()
    player = asyncio.create_task(play(observer, bettors, first_user, args.cashout, stop))
    try:
        await asyncio.sleep(args.warmup)
        before = await snapshot(ports, pids, clients, observer, servers, database_url)
        await asyncio.sleep(args.seconds)
        after = await snapshot(ports, pids, clients, observer, servers, database_url)
    finally:
        stop.set()
        observer.betting.set()
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player
        for client in clients:
            client.close()
        if watcher.transport is not None:
            watcher.transport.close()
    seconds = after.at - before.at
    shape = Shape(seconds, after.settled - before.settled, after.running - before.running, after.ticks - before.ticks,
                  after.opened - before.opened, after.reached - before.reached)  # fmt: skip
    model = predict(shape, sockets=len(clients), bettors=len(bettors), nodes=len(ports))
    pairs = list(zip(before.scrapes, after.scrapes, strict=True))
    game_frames = sum(_delta(b, a, "croupier_frames_out_total", type=t) for b, a in pairs for t in ("tick", "round"))
    all_frames = sum(_delta(b, a, "croupier_frames_out_total") for b, a in pairs)
    bets = sum(_delta(b, a, "croupier_bets_committed_total") for b, a in pairs)
    actions = sum(_delta(b, a, "croupier_frames_out_total", type="action_ok") for b, a in pairs)
    errors = sum(_delta(b, a, "croupier_frames_out_total", type="error") for b, a in pairs)
    dropped = sum(_delta(b, a, "croupier_frames_dropped_total") for b, a in pairs)
    requests = [_delta(b, a, "croupier_frames_in_total", type="bet") + _delta(b, a, "croupier_frames_in_total",
                type="action") for b, a in pairs]  # fmt: skip
    node_frames = [_delta(b, a, "croupier_frames_out_total") for b, a in pairs]
    cores = [(a - b) / seconds for b, a in zip(before.cpu, after.cpu, strict=True)]
    per_frame = [  # the players' share: the node's idle CPU and the requests (at the model's cost) taken out
        ((core - idle) * seconds * 1e6 - req * REQUEST_US) / frames if frames else float("nan")
        for core, idle, req, frames in zip(cores, idle_nodes, requests, node_frames, strict=True)
    ]
    redis_us = (
        ((after.redis_cpu - before.redis_cpu) * 1e6 / seconds - (idle_redis or 0.0)) / len(clients)
        if after.redis_cpu is not None and before.redis_cpu is not None else None
    )  # fmt: skip
    user_types = {t for b, a in pairs for t in a.label_values("croupier_frames_out_total", "type")} - {"tick", "round"}
    by_type = {
        t: sum(_delta(b, a, "croupier_frames_out_total", type=t) for b, a in pairs) / seconds for t in user_types
    }
    return {
        "nodes": len(ports), "sockets": len(clients), "bettors": len(bettors), "joined_seconds": joined,
        "seconds": seconds, "rounds": shape.rounds, "round_seconds": shape.round_seconds,
        "running_share": shape.running_share, "stray_ticks": observer.stray_ticks,
        "observer_ticks_per_running_second":
            shape.ticks / shape.running_seconds if shape.running_seconds else float("nan"),
        "delivered_client_side": (after.frames - before.frames) / seconds,
        "idle_node_cores": idle_nodes, "idle_redis_us_per_second": idle_redis,
        "user_frames_by_type": {t: rate for t, rate in sorted(by_type.items()) if rate > 0},
        "redis_commands": _commands(before.redis_commands, after.redis_commands, seconds),
        "measured": {"game_frames": game_frames / seconds, "user_frames": (all_frames - game_frames) / seconds,
                     "bets": bets / seconds, "cashouts": actions / seconds, "errors": errors / seconds,
                     "dropped": dropped / seconds, "node_cores": cores, "node_us_per_frame": per_frame,
                     "redis_us_per_player_second": redis_us,
                     "postgres_commits": (after.commits - before.commits) / seconds},
        "predicted": {"game_frames": model.game_frames, "user_frames": model.user_frames, "bets": model.bets,
                      "cashouts": model.cashouts, "node_cores": model.node_cores,
                      "node_us_per_frame": FRAME_US, "redis_us_per_player_second": model.redis_us_per_player_second},
    }  # fmt: skip


def _commands(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
              seconds: float) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Redis commands over the window: calls per second and microseconds per call inside Redis, busiest first."""
    rates = {}
    for name, (calls, usec) in after.items():
        was_calls, was_usec = before.get(name, (0, 0))
        if calls > was_calls:
            rates[name] = ((calls - was_calls) / seconds, (usec - was_usec) / (calls - was_calls))
    return dict(sorted(rates.items(), key=lambda item: -item[1][0] * item[1][1]))


def report(result: dict[str, Any]) -> None:
    """Print the measurement beside the model's prediction."""
    m, p = result["measured"], result["predicted"]

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"

    print(f"{result['nodes']} nodes, {result['sockets']:,} sockets on crash ({result['bettors']:,} betting), joined "
          f"in {result['joined_seconds']:.1f} s; window {result['seconds']:.0f} s: {result['rounds']} rounds, "
          f"{result['round_seconds']:.1f} s a round, multiplier climbing {result['running_share']:.0%} of the time, "
          f"{result['observer_ticks_per_running_second']:.1f} ticks per climbing second, "
          f"{result['stray_ticks']} ticks outside a running phase seen")  # fmt: skip

    def ratio(measured: float | None, predicted: float) -> str:
        return f"{measured / predicted:.2f}" if measured is not None and predicted else "-"

    rows: list[tuple[str, float | None, float]] = [
        ("game frames delivered/s (ticks, rounds)", m["game_frames"], p["game_frames"]),
        ("user frames delivered/s (replies, pushes)", m["user_frames"], p["user_frames"]),
        ("bets committed/s", m["bets"], p["bets"]),
        ("cash-outs/s", m["cashouts"], p["cashouts"]),
        ("Redis CPU, us per player-second", m["redis_us_per_player_second"], p["redis_us_per_player_second"]),
    ]
    for i, (cores, per_frame) in enumerate(zip(m["node_cores"], m["node_us_per_frame"], strict=True)):
        rows.append((f"node {i + 1} CPU, cores (idle included)", cores, p["node_cores"]))
        rows.append((f"node {i + 1} CPU per frame, us (idle, requests taken out)", per_frame,
                     p["node_us_per_frame"]))  # fmt: skip
    print(f"{'':<62}{'predicted':>12}{'measured':>12}{'ratio':>8}")
    for name, measured, predicted in rows:
        print(f"{name:<62}{fmt(predicted):>12}{fmt(measured):>12}{ratio(measured, predicted):>8}")
    print(f"frames counted by the sockets: {result['delivered_client_side']:,.0f}/s; error replies "
          f"{m['errors']:,.1f}/s; frames dropped for slow sockets {m['dropped']:,.1f}/s; "
          f"PostgreSQL commits {m['postgres_commits']:,.0f}/s")  # fmt: skip
    idle = ", ".join(f"{cores:.3f}" for cores in result["idle_node_cores"])
    print(f"idle before the players (taken out of the per-frame and Redis figures): nodes {idle} cores, Redis "
          f"{fmt(result['idle_redis_us_per_second'])} us/s; user frames/s by type: "
          + ", ".join(f"{t} {rate:,.1f}" for t, rate in result["user_frames_by_type"].items()))  # fmt: skip
    if result["redis_commands"]:
        print(
            "Redis commands (calls/s, us a call inside Redis), busiest first: "
            + ", ".join(
                f"{name} {calls:,.1f}/s {usec:.1f}"
                for name, (calls, usec) in list(result["redis_commands"].items())[:8]
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--sockets", type=int, default=1000, help="players, spread evenly over the nodes")
    parser.add_argument("--bettors", type=float, default=0.2, help="the share of players betting every round")
    parser.add_argument("--cashout", type=int, default=130, help="cash out by hand at this multiplier (hundredths)")
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of play before the window")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of idle nodes measured first")
    parser.add_argument("--betting-ms", type=int, default=2000)
    parser.add_argument("--pause-ms", type=int, default=1000)
    parser.add_argument("--growth", type=float, default=0.00012,
                        help="crash's growth_per_ms: 0.00012 reaches 2.00x in 5.8 s, rounds of ~10 s")  # fmt: skip
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: embedded, fsync on)")
    parser.add_argument("--redis-url", default=None,
                        help="redis://, redis+sentinel://, redis+cluster:// (default: an embedded Valkey)")  # fmt: skip
    parser.add_argument("--redis-cluster", type=int, default=0, metavar="MASTERS",
                        help="start a Redis Cluster of this many masters (redis-server) and use it")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    token = f"{secrets.randbelow(10**9) + 10**9}:{secrets.token_urlsafe(26)}"
    env = {"CROUPIER_GAMES": "crash", "CROUPIER_BETTING_MS": str(args.betting_ms),
           "CROUPIER_ROUND_PAUSE_MS": str(args.pause_ms), "CROUPIER_WELCOME_CREDIT": "1000000",
           "CROUPIER_GAME_PARAMS": json.dumps({"crash": {"growth_per_ms": args.growth}})}  # fmt: skip
    with bench_database(args.database_url) as database_url, contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(_cluster(args.redis_cluster) if args.redis_cluster else
                                        redis_server(args.redis_url))  # fmt: skip
        nodes = [stack.enter_context(node_process(database_url, token, REDIS_URL=redis_url,
                                                  CROUPIER_NODE_ID=f"capacity-{i + 1}", **env))
                 for i in range(args.nodes)]  # fmt: skip
        result = uvloop.run(run(args, [url for url, _ in nodes], [pid for _, pid in nodes], token, redis_url,
                                database_url))  # fmt: skip
    report(result)
    if args.json:
        print(json.dumps(result, indent=1))


@contextlib.contextmanager
def _cluster(masters: int) -> Iterator[str]:
    """A Redis Cluster of ``masters`` masters for the run (its URL), stopped after it."""
    binary = redis_cluster_binary()
    if binary is None:
        raise SystemExit("redis-server not found (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="croupier-capacity-cluster-") as root:
        cluster = RedisClusterServers(binary, Path(root), masters=masters)
        cluster.start()
        try:
            yield cluster.url()
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
