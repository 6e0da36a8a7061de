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
``/metrics``), each node's CPU, Redis's time inside its commands (``INFO commandstats``) and its CPU
(``INFO cpu``), both summed over a cluster's masters, and PostgreSQL's commits; then prints the model's
prediction beside each figure, with the ratio measured / predicted. The game's own randomness (how long
rounds run, which reach the cash-out target) is taken from the observer, so the predictions test the model's
unit costs and per-player accounting, not the luck of the crash points. The bettors join in ``STAGGER``
groups a round apart (see :func:`run`), and the Redis servers started here run at real-time priority
(``--redis-realtime``).

    .venv/bin/python -m loadtest.capacity_check --nodes 2 --sockets 2000 --bettors 0.2 --seconds 60
    .venv/bin/python -m loadtest.capacity_check --nodes 2 --sockets 2000 --redis-cluster 3

Server, load generator, Redis and PostgreSQL share the machine: compare ratios, and read the node CPU
per frame as an upper bound of a node that has a core to itself. Unit costs differ between machines: pass
``--frame-us`` with what ``bench_compression`` measures on this one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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


@dataclass(frozen=True, slots=True)
class RedisCosts:
    """Microseconds inside Redis's commands of each unit of work (``loadtest/bench_redis_units``)."""

    game_event: float
    """One game event published with history (``PUBLISH``, ``XADD``, ``PEXPIRE`` in one pipeline), no node
    following."""
    follower: float
    """And per node following the game channel."""
    user_event: float
    """One user event (the outbox relay's ``PUBLISH``, one node following, in batches); taken for a cash-out
    forwarded to the driving node and its reply too."""
    lease: float
    """One lease of request tokens (the quota's ``EVALSHA``)."""
    leaderboard_row: float = 24.0
    """The leaderboard relay per settled bet (23-25 us: docs/performance.md, "Leaderboard updates", whose
    batches keep Redis busy for their length)."""


BUSY = RedisCosts(game_event=3.6, follower=3.9, user_event=1.1, lease=37.0)
"""Units back to back, as a shard sized to half a core runs them: its caches warm."""
IDLE = RedisCosts(game_event=35.6, follower=3.1, user_event=1.3, lease=133.0)
"""Units 10 ms apart, as a Redis idle 99.9% of the time runs them (this check's): each command starts with cold
caches and takes 3-10 times as long."""
LEASE_SECONDS = 30.0
"""How long a lease of request tokens lasts (``server.edge.userlimits.LEASE_SECONDS``)."""


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
    """Rounds whose multiplier reached the cash-out target in the window and went on past the next tick (one
    cash-out per bettor each; :attr:`Observer.near`)."""

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
    """Time inside Redis's commands."""


def predict(shape: Shape, *, sockets: int, bettors: int, nodes: int, costs: RedisCosts = IDLE,
            frame_us: float = FRAME_US) -> Prediction:  # fmt: skip
    """docs/capacity.md's formulas with the round shape the observer measured (how long the multiplier
    climbed, how many rounds opened and reached the cash-out target: the luck of the crash points)."""
    per_round = 1 / shape.round_seconds
    game = sockets * (TICKS_PER_SECOND * shape.running_share + ROUND_EVENTS * per_round)
    bets, cashouts = bettors * shape.opened / shape.seconds, bettors * shape.reached / shape.seconds
    user = bets * USER_FRAMES_ALWAYS + cashouts * USER_FRAMES_CASHED_OUT
    cores = ((game + user) * frame_us + (bets + cashouts) * REQUEST_US) / 1e6 / nodes
    redis = redis_us_per_second(shape, costs, bets=bets, cashouts=cashouts, bettors=bettors, nodes=nodes)
    return Prediction(game, user, bets, cashouts, cores, redis / max(sockets, 1))


def redis_us_per_second(shape: Shape, costs: RedisCosts, *, bets: float, cashouts: float, bettors: int,
                        nodes: int) -> float:  # fmt: skip
    """Microseconds inside Redis's commands a second: the game's events (once for the cluster, delivered to
    every node), the user events (a bet's balance, its ``bet_settled``, a win's balance), a cash-out made on a
    node that does not drive the round (forwarded and answered: two publishes), the leases of request tokens
    (a betting player takes one when the last has run out: every ``LEASE_SECONDS`` plus the wait for the next
    request, half the time between two) and the leaderboard relay (per settled bet)."""
    game_events = TICKS_PER_SECOND * shape.running_share + ROUND_EVENTS / shape.round_seconds
    user_events = 2 * bets + cashouts + 2 * cashouts * (nodes - 1) / nodes
    requests_per_bettor = (bets + cashouts) / max(bettors, 1)
    leases = bettors / (LEASE_SECONDS + 0.5 / requests_per_bettor) if requests_per_bettor else 0.0
    return (game_events * (costs.game_event + costs.follower * nodes) + user_events * costs.user_event
            + leases * costs.lease + bets * costs.leaderboard_row)  # fmt: skip


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
    near: int = 0
    """Rounds that crashed on the tick after the one that reached the target: the cash-outs sent on that tick
    race the crash and lose (every one, in the runs so far), so :attr:`reached` less these is what the model
    is given (the luck of a crash point just past the target is not the model's to predict)."""
    target: int = 0
    past_target: int = 0
    """Ticks at or above the target in the round in flight."""
    stray_ticks: int = 0
    """Ticks of a round the observer did not see start running: the climbing time is then short of what the
    ticks cover, and every prediction that uses it is off (0 since :meth:`start_from`)."""
    running_since: float | None = None
    running_seconds: float = 0.0
    betting: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a round's betting opens; :func:`play` clears it."""
    opening: asyncio.Event = field(default_factory=asyncio.Event)
    """The same for :func:`run`."""
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
            self.past_target += self.target <= self.multiplier
            self.tick.set()
        elif message["t"] == "round":
            self.round, self.phase = message["round"], message["phase"]
            if self.phase == "betting":
                self.multiplier = self.past_target = 0
                self.opened += 1
                self.betting.set()
                self.opening.set()
            elif self.phase == "running":
                self.running_since = now
            elif self.phase == "settled":
                self.settled += 1
                self.near += self.past_target == 1
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


STAGGER = 3
"""Bettors join in this many groups, one a round (see :func:`run`)."""

Bettor = tuple[CountingClient, int]
"""A betting socket and its user."""


async def play(observer: Observer, bettors: list[Bettor], cashout: int, stop: asyncio.Event) -> None:
    """Each round: every bettor (those in ``bettors`` when betting opens) bets 10 as betting opens (in 10 waves
    over 0.5 s, from 50 ms after the observer heard of it), and cashes out by hand on the first tick at
    ``cashout`` or above (a round that crashes before gets no cash-out)."""
    while not stop.is_set():
        observer.betting.clear()
        await observer.betting.wait()
        round_id = observer.round
        playing = list(bettors)
        for wave in range(10):
            # after the pause: the other nodes hear of the round through Redis a moment after the observer's, and
            # a bet there before it is refused (about 6% of the bets were, in the first wave, before the pause)
            await asyncio.sleep(0.05)
            for client, user in playing[wave::10]:
                send(client, {"t": "bet", "id": f"b{round_id}", "game": "crash", "round": round_id, "amount": 10,
                              "params": {}, "key": f"{user}-{round_id}"})  # fmt: skip
        while observer.round == round_id and observer.phase != "settled" and observer.multiplier < cashout:
            observer.tick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(observer.tick.wait(), 1.0)
        if observer.round == round_id and observer.phase == "running":
            for i, (client, _) in enumerate(playing):
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
    """Per Redis command: calls and microseconds inside Redis so far (``INFO commandstats``, summed over a
    cluster's masters)."""
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
    opened, reached = observer.opened, observer.reached - observer.near
    scrapes, redis, commands, committed = await asyncio.gather(
        asyncio.gather(*(scrape(port) for port in ports)), redis_cpu_seconds(servers), redis_commands(servers),
        commits(database_url))  # fmt: skip
    return Snapshot(now, cpu, list(scrapes), frames, ticks, settled, running, opened, reached, redis, commands,
                    committed)  # fmt: skip


def command_usec(commands: dict[str, tuple[int, int]]) -> int:
    """Microseconds inside Redis's commands, this script's own ``INFO`` left out."""
    return sum(usec for name, (_, usec) in commands.items() if name != "info")


@dataclass(frozen=True, slots=True)
class Idle:
    """What the nodes and Redis cost with no player connected (timers, pings, the driver's rounds to nobody, a
    cluster client's topology refresh): taken out of the window's figures to get what the players cost."""

    node_cores: list[float]
    redis_cpu_us: float | None
    """Redis's CPU, us a second."""
    redis_command_us: float
    """Time inside Redis's commands, us a second."""


async def idle_cost(pids: list[int], servers: list[str] | None, seconds: float) -> Idle:
    """Measure :class:`Idle` over ``seconds``."""
    cpu, started = [process_cpu_seconds(pid) for pid in pids], time.monotonic()
    redis, commands = await asyncio.gather(redis_cpu_seconds(servers), redis_commands(servers))
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    nodes = [(process_cpu_seconds(pid) - before) / elapsed for pid, before in zip(pids, cpu, strict=True)]
    after, commands_after = await asyncio.gather(redis_cpu_seconds(servers), redis_commands(servers))
    redis_cpu = (after - redis) * 1e6 / elapsed if after is not None and redis is not None else None
    return Idle(nodes, redis_cpu, (command_usec(commands_after) - command_usec(commands)) / elapsed)


async def realtime(servers: list[str] | None) -> list[int]:
    """Give the Redis servers of this machine (the run's own) the first real-time priority (``SCHED_FIFO``):
    they then run the moment they have work instead of waiting for a core behind the nodes and the load
    generator, so the time ``INFO commandstats`` counts inside a command is the command's, not a wait for the
    CPU. Redis uses a few percent of a core here, so nothing else starves. Returns the PIDs so raised (none
    without the privilege)."""
    raised = []
    for url in servers or ():
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            continue
        pid = int((await _info(url, "server"))["process_id"])
        try:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(1))
        except (PermissionError, ProcessLookupError, OSError):
            continue
        raised.append(pid)
    return raised


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
    raised = await realtime(servers) if args.redis_realtime else []
    idle = await idle_cost(pids, servers, args.baseline)
    idle_nodes, idle_redis = idle.node_cores, idle.redis_cpu_us
    first_user, betting = 100_000, int(args.sockets * args.bettors)
    clients: list[CountingClient] = []
    started = time.perf_counter()
    for start in range(betting, args.sockets, 200):  # the watchers first, in waves of 200, spread over the nodes
        wave = range(start, min(args.sockets, start + 200))
        clients += await asyncio.gather(*(join(ports[i % len(ports)], token, first_user + i) for i in wave))
    joined = time.perf_counter() - started
    bettors: list[Bettor] = []
    stop = asyncio.Event()
    player = asyncio.create_task(play(observer, bettors, args.cashout, stop))
    try:
        # The bettors in STAGGER groups, one a round: a socket takes its first lease of request tokens as it
        # joins (its subscribe is a request) and renews it at its first request after LEASE_SECONDS; players who
        # all joined at once would renew together, every third round or so, and a 60 s window would hold one or
        # two such bursts by luck (6.7 or 13.3 leases a second in two runs). Staggered, a group renews each round.
        for group in range(STAGGER):
            users = [first_user + i for i in range(group, betting, STAGGER)]
            for start in range(0, len(users), 200):
                wave = users[start : start + 200]
                sockets = await asyncio.gather(*(join(ports[user % len(ports)], token, user) for user in wave))
                clients += sockets
                bettors += zip(sockets, wave, strict=True)
            observer.opening.clear()
            await observer.opening.wait()
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
    model = predict(shape, sockets=len(clients), bettors=len(bettors), nodes=len(ports), frame_us=args.frame_us)
    busy = predict(shape, sockets=len(clients), bettors=len(bettors), nodes=len(ports), costs=BUSY)
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
    redis_cpu_us = (
        ((after.redis_cpu - before.redis_cpu) * 1e6 / seconds - (idle_redis or 0.0)) / len(clients)
        if after.redis_cpu is not None and before.redis_cpu is not None else None
    )  # fmt: skip
    redis_us = (
        ((command_usec(after.redis_commands) - command_usec(before.redis_commands)) / seconds - idle.redis_command_us)
        / len(clients) if servers else None
    )  # fmt: skip
    user_types = {t for b, a in pairs for t in a.label_values("croupier_frames_out_total", "type")} - {"tick", "round"}
    by_type = {
        t: sum(_delta(b, a, "croupier_frames_out_total", type=t) for b, a in pairs) / seconds for t in user_types
    }
    return {
        "nodes": len(ports), "sockets": len(clients), "bettors": len(bettors), "joined_seconds": joined,
        "seconds": seconds, "rounds": shape.rounds, "round_seconds": shape.round_seconds,
        "running_share": shape.running_share, "stray_ticks": observer.stray_ticks, "near_rounds": observer.near,
        "observer_ticks_per_running_second":
            shape.ticks / shape.running_seconds if shape.running_seconds else float("nan"),
        "delivered_client_side": (after.frames - before.frames) / seconds,
        "idle_node_cores": idle_nodes, "idle_redis_us_per_second": idle_redis,
        "idle_redis_command_us_per_second": idle.redis_command_us, "redis_realtime_pids": raised,
        "busy_redis_us_per_player_second": busy.redis_us_per_player_second,
        "user_frames_by_type": {t: rate for t, rate in sorted(by_type.items()) if rate > 0},
        "redis_commands": _commands(before.redis_commands, after.redis_commands, seconds),
        "measured": {"game_frames": game_frames / seconds, "user_frames": (all_frames - game_frames) / seconds,
                     "bets": bets / seconds, "cashouts": actions / seconds, "errors": errors / seconds,
                     "dropped": dropped / seconds, "node_cores": cores, "node_us_per_frame": per_frame,
                     "redis_us_per_player_second": redis_us, "redis_cpu_us_per_player_second": redis_cpu_us,
                     "postgres_commits": (after.commits - before.commits) / seconds},
        "predicted": {"game_frames": model.game_frames, "user_frames": model.user_frames, "bets": model.bets,
                      "cashouts": model.cashouts, "node_cores": model.node_cores, "node_us_per_frame": args.frame_us,
                      "redis_us_per_player_second": model.redis_us_per_player_second},
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
          f"{result['stray_ticks']} ticks outside a running phase seen, {result['near_rounds']} rounds crashed on "
          "the tick after the target (no cash-out predicted)")  # fmt: skip

    def ratio(measured: float | None, predicted: float) -> str:
        return f"{measured / predicted:.2f}" if measured is not None and predicted else "-"

    rows: list[tuple[str, float | None, float]] = [
        ("game frames delivered/s (ticks, rounds)", m["game_frames"], p["game_frames"]),
        ("user frames delivered/s (replies, pushes)", m["user_frames"], p["user_frames"]),
        ("bets committed/s", m["bets"], p["bets"]),
        ("cash-outs/s", m["cashouts"], p["cashouts"]),
        ("Redis inside commands, us a player-second", m["redis_us_per_player_second"], p["redis_us_per_player_second"]),
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
    cpu_us = m["redis_cpu_us_per_player_second"]
    print(f"Redis CPU (idle taken out): {fmt(cpu_us)} us per player-second, "
          f"{cpu_us / m['redis_us_per_player_second']:.1f}x its time inside commands" if cpu_us is not None and
          m["redis_us_per_player_second"] else "Redis CPU: n/a", "; a busy shard's unit costs would predict "
          f"{fmt(result['busy_redis_us_per_player_second'])} us inside commands; Redis at real-time priority: "
          + (", ".join(f"pid {pid}" for pid in result["redis_realtime_pids"]) or "no"))  # fmt: skip
    print(f"idle before the players (taken out of the per-frame and Redis figures): nodes {idle} cores, Redis "
          f"{fmt(result['idle_redis_us_per_second'])} us/s of CPU and "
          f"{fmt(result['idle_redis_command_us_per_second'])} us/s inside commands; user frames/s by type: "
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
    parser.add_argument("--frame-us", type=float, default=FRAME_US,
                        help="node CPU per frame to predict with: bench_compression's figure on this machine "
                             "(default: docs/capacity.md's)")  # fmt: skip
    parser.add_argument("--redis-realtime", action=argparse.BooleanOptionalAction, default=True,
                        help="run the Redis servers of this machine at real-time priority (needs root)")  # fmt: skip
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
