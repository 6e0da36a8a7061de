"""A randomized fault soak: real nodes, real PostgreSQL and Redis, faults, players that retry by key.

Run it (minutes long on demand; ``tests/test_soak.py`` runs a short version in ``make test``)::

    .venv/bin/python -m loadtest.soak --seconds 300 --nodes 3 --players 40 --seed 7

What it does:

- :class:`Cluster` starts an embedded PostgreSQL it can restart (fast shutdown, then start on
  the same data dir), a Valkey (Redis protocol) it can stop and start on the same port, and
  ``--nodes`` ``croupier serve`` processes on fixed ports (logs in files under the work dir).
- :class:`FaultScheduler`, driven by ``random.Random(seed)``, injects one fault after another:
  ``kill9`` (SIGKILL a node, often the driver of a game, then restart it), ``term`` (SIGTERM, the
  node drains, then restart it), ``stop`` (SIGSTOP a node for a few seconds, then SIGCONT),
  ``redis`` (stop Redis for a few seconds, then start it) and ``postgres`` (restart it).
- :class:`Player` s (asyncio WebSocket clients, JSON subprotocol) connect to a random node,
  subscribe to every game and bet on the current betting round with a unique key per bet. On any
  non-answer (socket dropped, ``unavailable``, timeout) a bet is sent again with the SAME key,
  round, amount and params, on a reconnect to another node, until it is answered (``bet_ok`` or
  a definite refusal). Crash players set ``auto_cashout`` or cash out by hand while the round runs,
  and some hold two crash bets in one round (one with a low ``auto_cashout``, one by hand).
- Then the faults stop, every round with bets settles, the nodes stop, and :class:`Checker`
  verifies in PostgreSQL: (1) every acknowledged bet exists exactly once, (2) none is still
  ``accepted``, (3) each is settled by the game's rule (the handler's ``payout`` on the stored
  outcome and cash-out; voided rounds refund), (4) every wallet equals credits - stakes + payouts
  + refunds, (5) ``croupier audit`` passes, (6) no bet refused to its player was placed, and
  (7) every acknowledged cash-out is recorded, and none was refused while the player still had
  a bet in the round.

The figures (faults by kind, bets sent, acknowledged, retried, refused by kind, cash-outs,
settled / won / lost / refunded) and a result per invariant are printed at the end; the exit
status is 1 when an invariant fails (the work dir with every log is then kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from server.auth import sign_init_data
from server.db.embedded import EmbeddedPostgres
from server.games import configure_games
from server.rounds.fair import FairRng
from server.rounds.handler import BetInfo, InvalidBet, RoundHandler
from tests.services import EmbeddedRedis, free_port

BOT_TOKEN = "424242:SOAK-token-for-the-croupier-fault-soak"
GAMES = ("crash", "dice", "roulette")
FAULT_KINDS = ("kill9", "term", "stop", "redis", "postgres")
COVER_GRACE = 60.0
"""Seconds past the soak's window the scheduler may take to inject the kinds of fault it has not yet."""
Message = dict[str, Any]

# Answers that say nothing about whether a bet was placed: send the same bet again.
RETRYABLE_CODES = frozenset({"unavailable", "internal", "rate_limited"})


# ---------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SoakConfig:
    """What one soak run does. ``seconds`` of play under faults, then settlement and the checks."""

    seconds: float = 300.0
    nodes: int = 3
    players: int = 40
    seed: int = 1
    betting_ms: int = 1500
    pause_ms: int = 300
    welcome_credit: int = 100_000
    max_payout: int = 100_000_000
    crash_growth_per_ms: float = 0.001
    """Faster than the default curve (2.00x after ~0.7 s) so that rounds stay short."""
    fault_gap: tuple[float, float] = (2.0, 6.0)
    """Seconds between the end of one fault and the start of the next (uniform)."""
    warmup: float = 3.0
    """Seconds of play before the first fault."""
    bet_probability: float = 0.6
    """Chance a player bets on a given betting round of a given game."""
    request_timeout: float = 2.0
    """Seconds a request may go unanswered before the player drops the socket and retries elsewhere."""
    resolve_timeout: float = 45.0
    """After the faults: how long players may take to get an answer for their unanswered bets."""
    settle_timeout: float = 45.0
    """After the players: how long rounds with bets may take to settle."""
    workdir: Path | None = None
    keep: bool = False
    """Keep the work dir (logs, PostgreSQL data) even when every invariant holds."""
    verbose: bool = True

    def node_env(self, *, database_url: str, redis_url: str, state: Path, node_id: str) -> dict[str, str]:
        """The environment of one ``croupier serve`` process."""
        ours = ("DATABASE_URL", "REDIS_URL")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_") and k not in ours}
        env.update(
            CROUPIER_BOT_TOKEN=BOT_TOKEN,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            CROUPIER_DATA_DIR=str(state),
            CROUPIER_NODE_ID=node_id,
            CROUPIER_GAMES=",".join(GAMES),
            CROUPIER_BETTING_MS=str(self.betting_ms),
            CROUPIER_ROUND_PAUSE_MS=str(self.pause_ms),
            CROUPIER_HANDOVER_SECONDS="1",
            CROUPIER_DRAIN_SECONDS="0.3",
            CROUPIER_WELCOME_CREDIT=str(self.welcome_credit),
            CROUPIER_MAX_PAYOUT=str(self.max_payout),
            CROUPIER_SEED_CHAIN_LENGTH="5000",
            CROUPIER_GAME_PARAMS=json.dumps(self.game_params()),
        )
        return env

    def game_params(self) -> dict[str, dict[str, Any]]:
        return {"crash": {"growth_per_ms": self.crash_growth_per_ms}}

    def handlers(self) -> dict[str, RoundHandler]:
        """The games' handlers with the nodes' params: the rule every settlement is checked against."""
        handlers, _ = configure_games(GAMES, self.game_params(), min_bet=1, max_bet=1_000_000,
                                      max_payout=self.max_payout)  # fmt: skip
        return handlers


def log_line(config: SoakConfig, text: str) -> None:
    if config.verbose:
        print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---------------------------------------------------------------------------------------------- the cluster


@dataclass
class NodeSlot:
    """One node of the cluster: a fixed port, its log file, and its current process (if any)."""

    index: int
    port: int
    log_path: Path
    state: Path
    generation: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    held_down: bool = False
    """A fault stopped (or is restarting) it on purpose: the watchdog leaves it alone."""
    stopped: bool = False
    """SIGSTOPped right now."""

    @property
    def node_id(self) -> str:
        return f"n{self.index}-{self.generation}"


class Cluster:
    """PostgreSQL, Redis and the ``croupier serve`` nodes of one soak, in a world-traversable temp dir."""

    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        if config.workdir is not None:
            config.workdir.mkdir(parents=True, exist_ok=True)
            self.root = config.workdir
        else:
            self.root = Path(tempfile.mkdtemp(prefix="croupier-soak-"))
        self.root.chmod(0o755)  # PostgreSQL runs as the embedded_postgres user when we are root
        self.postgres = EmbeddedPostgres(self.root / "pg", fsync=False)
        self.redis = EmbeddedRedis(port=free_port(), logfile=self.root / "redis.log")
        self.nodes = [
            NodeSlot(i, free_port(), self.root / f"node-n{i}.log", self.root / f"state-n{i}")
            for i in range(1, config.nodes + 1)
        ]
        self.dsn = ""
        self.unexpected_exits: list[str] = []
        self._watchdog: asyncio.Task[None] | None = None

    # -- lifecycle

    async def start(self) -> None:
        self.dsn = await asyncio.to_thread(self.postgres.start)
        await asyncio.to_thread(self.redis.start)
        for node in self.nodes:  # the first node up drives every game
            await self.start_node(node)
        self._watchdog = asyncio.create_task(self._watch(), name="soak-watchdog")

    async def close(self) -> None:
        """Stop every process this cluster started (also after a failure)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        for node in self.nodes:
            await self.stop_node(node)
        await asyncio.to_thread(self.redis.stop)
        await asyncio.to_thread(self._stop_postgres)

    def remove_workdir(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- nodes

    def node_by_port(self, port: int) -> NodeSlot | None:
        return next((node for node in self.nodes if node.port == port), None)

    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    async def start_node(self, node: NodeSlot, ready_within: float = 30.0) -> bool:
        """Start (a new generation of) ``node`` on its port; True once ``/readyz`` answers 200."""
        self._spawn(node)
        ready = await wait_ready(node.port, ready_within, node.process)
        node.held_down = False
        return ready

    def _spawn(self, node: NodeSlot) -> None:
        node.generation += 1
        node.state.mkdir(parents=True, exist_ok=True)
        env = self.config.node_env(database_url=self.dsn, redis_url=self.redis.url, state=node.state,
                                   node_id=node.node_id)  # fmt: skip
        node.log = open(node.log_path, "ab")  # noqa: SIM115 - closed when the process is reaped
        node.log.write(f"===== soak: starting {node.node_id} on port {node.port} at {_now()} =====\n".encode())
        node.log.flush()
        node.process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--port", str(node.port), "--log-level", "info"],
            env=env, stdout=node.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        node.stopped = False

    def signal_node(self, node: NodeSlot, sig: signal.Signals) -> None:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(sig)
            node.stopped = sig == signal.SIGSTOP or (node.stopped and sig != signal.SIGCONT)

    async def wait_exit(self, node: NodeSlot, grace: float) -> int | None:
        """Wait for ``node``'s process to exit (SIGKILL after ``grace`` seconds); returns its status."""
        process = node.process
        if process is None:
            return None
        try:
            status = await asyncio.to_thread(process.wait, grace)
        except subprocess.TimeoutExpired:
            process.kill()
            status = await asyncio.to_thread(process.wait)
        self._reap(node)
        return status

    async def stop_node(self, node: NodeSlot) -> None:
        """Stop ``node`` for good (SIGCONT if stopped, SIGTERM, SIGKILL after 15 s)."""
        node.held_down = True
        if node.process is None:
            return
        if node.stopped:
            self.signal_node(node, signal.SIGCONT)
        self.signal_node(node, signal.SIGTERM)
        await self.wait_exit(node, 15)

    def _reap(self, node: NodeSlot) -> None:
        if node.process is not None and node.process.poll() is not None:
            node.process = None
        if node.process is None and node.log is not None:
            node.log.close()
            node.log = None

    async def _watch(self) -> None:
        """Restart a node that exited by itself (not by a fault), and count it."""
        while True:
            await asyncio.sleep(0.5)
            for node in self.nodes:
                process = node.process
                if node.held_down or process is None or process.poll() is None:
                    continue
                self.unexpected_exits.append(f"{node.node_id} exited with status {process.returncode} at {_now()}")
                log_line(self.config, f"node {node.node_id} exited by itself ({process.returncode}); restarting")
                self._reap(node)
                node.held_down = True  # no fault picks it while it starts again
                await self.start_node(node)

    async def driver_of(self, game: str) -> NodeSlot | None:
        """The node holding ``game``'s lease, per PostgreSQL (None when unknown or unreachable)."""
        try:
            conn = await asyncpg.connect(self.dsn, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        try:
            holder = await conn.fetchval("SELECT holder FROM game_leases WHERE game = $1", game, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        return next((node for node in self.nodes if node.node_id == holder), None)

    # -- Redis and PostgreSQL

    async def stop_redis(self) -> None:
        await asyncio.to_thread(self.redis.stop)

    async def start_redis(self) -> None:
        await asyncio.to_thread(self.redis.start)

    async def restart_postgres(self, down_seconds: float) -> None:
        """Fast shutdown, ``down_seconds`` of nothing, then start on the same data dir (same socket)."""
        await asyncio.to_thread(self._stop_postgres)
        await asyncio.sleep(down_seconds)
        dsn = await asyncio.to_thread(self.postgres.start)
        if dsn != self.dsn:
            raise RuntimeError(f"PostgreSQL came back at another address: {dsn} (was {self.dsn})")

    def _stop_postgres(self) -> None:
        self.postgres.stop()
        process: subprocess.Popen[bytes] | None = getattr(self.postgres, "_process", None)
        if process is not None:  # reap the child, so that nothing is left a zombie
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)


async def wait_ready(port: int, within: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll ``GET /readyz`` on ``port`` until it answers 200 (False after ``within`` s or if the process exits)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            async with asyncio.timeout(1.0):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    status = (await reader.readline()).split()
                finally:
                    writer.close()
                if len(status) >= 2 and status[1] == b"200":
                    return True
        await asyncio.sleep(0.1)
    return False


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------- faults


@dataclass
class FaultRecord:
    """One injected fault: what, on what, from when to when (wall clock), and how it went."""

    kind: str
    target: str
    started: float
    ended: float = 0.0
    note: str = ""

    def describe(self, t0: float) -> str:
        span = f"t={self.started - t0:6.1f}s..{self.ended - t0:6.1f}s"
        return f"{span} {self.kind:<8} {self.target}{(' (' + self.note + ')') if self.note else ''}"


class FaultScheduler:
    """Injects faults one after another, drawn from a seeded deck so that every kind comes up."""

    DECK = ("kill9", "kill9", "term", "stop", "redis", "postgres")

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.faults: list[FaultRecord] = []
        self.t0 = time.time()
        """Wall clock of the run's start: fault times are logged relative to it."""
        self._deck: list[str] = []

    def counts(self) -> Counter[str]:
        return Counter(fault.kind for fault in self.faults)

    async def run(self, until: float) -> None:
        """Inject faults until the loop clock reaches ``until`` (the last one finishes after it) and every kind
        was injected once: on a slow machine the faults of the window may not have covered the deck, and then
        the kinds still missing follow (for at most :data:`COVER_GRACE` seconds more)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.rng.uniform(*self.cluster.config.fault_gap))
            missing = [kind for kind in FAULT_KINDS if kind not in self.counts()]
            if loop.time() >= until - 1.0:
                if not missing or loop.time() >= until + COVER_GRACE:
                    return
                await self.inject(missing[0])
                continue
            if not self._deck:
                self._deck = list(self.DECK)
                self.rng.shuffle(self._deck)
            await self.inject(self._deck.pop())

    async def inject(self, kind: str) -> FaultRecord:
        record = FaultRecord(kind, "", time.time())
        self.faults.append(record)
        try:
            if kind == "redis":
                record.target = "redis"
                down = self.rng.uniform(2.0, 5.0)
                await self.cluster.stop_redis()
                await asyncio.sleep(down)
                await self.cluster.start_redis()
                record.note = f"down {down:.1f} s"
            elif kind == "postgres":
                record.target = "postgres"
                down = self.rng.uniform(0.2, 2.0)
                await self.cluster.restart_postgres(down)
                record.note = f"down {down:.1f} s + restart"
            else:
                await self._node_fault(kind, record)
        except Exception as exc:  # a fault that could not be applied is reported, the soak goes on
            record.note += f" FAILED: {type(exc).__name__}: {exc}"
        record.ended = time.time()
        log_line(self.cluster.config, f"fault {record.describe(self.t0)}")
        return record

    async def _node_fault(self, kind: str, record: FaultRecord) -> None:
        node, game = await self._pick_node()
        record.target = node.node_id if game is None else f"{node.node_id} (driver of {game})"
        if game is not None and kind in ("kill9", "term"):
            # The interesting moments: a round still taking bets (bets keep arriving on the other nodes while
            # a standby recovers it), or a round running (crash: cash-outs and auto cash-outs in flight).
            record.target += f" {await self._await_phase(game, self.rng.choice(('betting', 'running')))}"
        if kind == "stop":
            pause = self.rng.uniform(1.5, 4.0)
            self.cluster.signal_node(node, signal.SIGSTOP)
            await asyncio.sleep(pause)
            self.cluster.signal_node(node, signal.SIGCONT)
            record.note = f"stopped {pause:.1f} s"
            return
        node.held_down = True
        sig = signal.SIGKILL if kind == "kill9" else signal.SIGTERM
        self.cluster.signal_node(node, sig)
        status = await self.cluster.wait_exit(node, 10 if kind == "kill9" else 20)
        down = self.rng.uniform(0.3, 2.0)
        await asyncio.sleep(down)
        ready = await self.cluster.start_node(node)
        record.note = f"exit {status}, down {down:.1f} s, restarted as {node.node_id}" + ("" if ready else " NOT READY")

    async def _pick_node(self) -> tuple[NodeSlot, str | None]:
        """Often the driver of a random game (the interesting case; the game is returned too), else any node."""
        if self.rng.random() < 0.6:
            game = self.rng.choice(GAMES)
            driver = await self.cluster.driver_of(game)
            if driver is not None and driver.process is not None and not driver.held_down:
                return driver, game
        candidates = [n for n in self.cluster.nodes if n.process is not None and not n.held_down] or self.cluster.nodes
        return self.rng.choice(candidates), None

    async def _await_phase(self, game: str, phase: str, within: float = 6.0) -> str:
        """Wait until ``game``'s latest round is in ``phase`` (betting: with bets in it and at least 1 s
        of betting left, so that its recovery happens while the other nodes still take bets); says where."""
        deadline = time.monotonic() + within
        try:
            conn = await asyncpg.connect(self.cluster.dsn, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return "(round unknown)"
        try:
            while time.monotonic() < deadline:
                row = await conn.fetchrow(
                    "SELECT id, phase, extract(epoch FROM closes_at - now())::float8 AS left_s, "
                    "(SELECT count(*) FROM bets b WHERE b.round_id = r.id) AS bets "
                    "FROM rounds r WHERE game = $1 ORDER BY id DESC LIMIT 1",
                    game,
                    timeout=2,
                )
                if (
                    row is not None
                    and row["phase"] == phase
                    and (phase != "betting" or (row["left_s"] >= 1.0 and row["bets"] > 0))
                ):
                    return f"in round {row['id']} {phase} ({row['bets']} bets)"
                await asyncio.sleep(0.03)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        return f"(no {phase} round within {within:.0f} s)"

    async def heal(self) -> None:
        """Everything up again: Redis started, stopped nodes continued, missing nodes restarted."""
        if not self.cluster.redis.running:
            await self.cluster.start_redis()
        for node in self.cluster.nodes:
            if node.stopped:
                self.cluster.signal_node(node, signal.SIGCONT)
            if node.process is None:
                await self.cluster.start_node(node)


# ---------------------------------------------------------------------------------------------- players


class LinkDown(Exception):
    """A request got no answer: the socket closed, timed out or never opened. ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Link:
    """One authenticated WebSocket of a player: requests matched to replies by id, pushes queued."""

    def __init__(self, ws: ClientConnection, port: int) -> None:
        self.ws = ws
        self.port = port
        self.pushes: asyncio.Queue[Message | None] = asyncio.Queue()
        self.down: str | None = None
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self._next_id = 0
        self._reader = asyncio.create_task(self._read(), name=f"soak-link-{port}")

    @classmethod
    async def open(cls, port: int, user_id: int, reply_within: float) -> Link:
        """Connect to the node on ``port`` and authenticate as ``user_id`` (retrying ``unavailable``)."""
        try:
            ws = await connect(f"ws://127.0.0.1:{port}/ws", subprotocols=[Subprotocol("croupier.v1.json")],
                               open_timeout=3, close_timeout=0.5, ping_interval=None, max_queue=None)  # fmt: skip
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            raise LinkDown(f"connect: {type(exc).__name__}") from None
        link = cls(ws, port)
        try:
            for _ in range(10):
                init_data = sign_init_data(BOT_TOKEN, user_id=user_id, first_name=f"Soak{user_id}")
                reply = await link.request({"t": "auth", "init_data": init_data}, reply_within)
                if reply["t"] == "welcome":
                    return link
                if reply.get("code") not in RETRYABLE_CODES:
                    raise LinkDown(f"auth refused: {reply.get('code')}")
                await asyncio.sleep(0.3)
            raise LinkDown("auth: unavailable")
        except BaseException:
            await link.close()
            raise

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                message: Message = json.loads(frame)
                waiter = None if "ch" in message else self._waiting.pop(message.get("id"), None)  # type: ignore[arg-type]
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_result(message)
                elif "ch" in message:
                    self.pushes.put_nowait(message)
            self.down = f"closed {self.ws.close_code}"
        except ConnectionClosed:
            self.down = f"closed {self.ws.close_code}"
        except Exception as exc:
            self.down = f"reader: {type(exc).__name__}"
        finally:
            self.down = self.down or "closed"
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(LinkDown("dropped"))
            self._waiting.clear()
            self.pushes.put_nowait(None)

    async def request(self, message: Message, reply_within: float) -> Message:
        """Send ``message`` with a fresh id and wait ``reply_within`` s for its reply; :class:`LinkDown` if none."""
        if self.down is not None:
            raise LinkDown("dropped")
        self._next_id += 1
        request_id = self._next_id
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        try:
            await self.ws.send(json.dumps({**message, "id": request_id}))
            async with asyncio.timeout(reply_within):
                return await answer
        except ConnectionClosed:
            raise LinkDown("dropped") from None
        except TimeoutError:
            raise LinkDown("timeout") from None
        finally:
            self._waiting.pop(request_id, None)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        with contextlib.suppress(Exception):
            self.ws.transport.abort()


@dataclass
class SoakBet:
    """One bet as its player knows it: what was sent (the same on every retry) and how it ended."""

    key: str
    user_id: int
    game: str
    round_id: int
    amount: int
    params: dict[str, Any]
    manual_target: int | None = None
    """Crash: the multiplier at which the player cashes out by hand (None: it does not)."""
    attempts: int = 0
    nonanswers: list[str] = field(default_factory=list)
    vias: list[str] = field(default_factory=list)
    """The node (id and generation) each attempt went to."""
    outcome: str | None = None
    """``ok`` (bet_ok), a refusal code, or None while unanswered."""
    message: str = ""
    bet_id: int | None = None
    acked_ids: set[int] = field(default_factory=set)
    acked_status: str | None = None
    sent_at: float = 0.0
    cashout_acked: int | None = None
    """The multiplier an ``action_ok`` acknowledged for this bet."""

    def request(self) -> Message:
        return {"t": "bet", "game": self.game, "round": self.round_id, "amount": self.amount,
                "params": self.params, "key": self.key}  # fmt: skip

    def describe(self) -> str:
        return (f"key {self.key} user {self.user_id} {self.game} round {self.round_id} amount {self.amount} "
                f"params {json.dumps(self.params)} attempts {self.attempts} via {','.join(self.vias)}"
                + (f" non-answers {','.join(self.nonanswers)}" if self.nonanswers else ""))  # fmt: skip


@dataclass
class SoakCashout:
    """One manual crash cash-out: the round, what the player saw, and the answer."""

    user_id: int
    round_id: int
    multiplier_seen: int
    live_bets: list[int]
    """The player's bets in the round with no ``auto_cashout`` and no acknowledged cash-out when sent."""
    all_bets: list[int]
    attempts: int = 0
    nonanswers: list[str] = field(default_factory=list)
    outcome: str | None = None
    message: str = ""
    refused_field: str | None = None
    results: list[Message] = field(default_factory=list)
    sent_at: float = 0.0
    via: str = ""


@dataclass
class PlayStats:
    """Counters shared by every player."""

    sessions: int = 0
    connect_failures: Counter[str] = field(default_factory=Counter)
    link_downs: Counter[str] = field(default_factory=Counter)
    planned_too_late: int = 0


@dataclass
class _Plan:
    when: float
    game: str
    round_id: int
    closes_at: int


class Player:
    """One Telegram user: connects to a random node, bets on every game's rounds, retries by key."""

    STALE_AFTER = 6.0
    """Seconds without any game event before the player tries another node (its node may be cut off)."""

    def __init__(self, user_id: int, *, cluster: Cluster, seed: int, handlers: Mapping[str, RoundHandler],
                 stats: PlayStats) -> None:  # fmt: skip
        self.user_id = user_id
        self.cluster = cluster
        self.config = cluster.config
        self.rng = random.Random(f"{seed}:{user_id}")
        self.handlers = handlers
        self.stats = stats
        self.bets: list[SoakBet] = []
        self.cashouts: list[SoakCashout] = []
        self._pending: list[SoakBet] = []
        self._plans: list[_Plan] = []
        self._planned: set[tuple[str, int]] = set()
        self._crash_bets: dict[int, list[SoakBet]] = {}
        self._cashout_done: set[int] = set()
        self._retry_cashout: SoakCashout | None = None
        """A cash-out that got no answer: sent again after the reconnect if its round still runs."""
        self._running_crash: int | None = None
        self._last_port: int | None = None
        self._betting = True
        self._counter = 0

    # -- the loop

    async def run(self, bet_until: float, resolve_until: float) -> None:
        """Play until ``bet_until``, then only resolve unanswered bets until ``resolve_until``."""
        loop = asyncio.get_running_loop()
        while True:
            self._betting = loop.time() < bet_until
            if not self._betting and not self._pending:
                return
            if loop.time() >= resolve_until:
                return
            link = await self._connect(resolve_until)
            if link is None:
                return
            try:
                await self._session(link, bet_until, resolve_until)
            except LinkDown as exc:
                self.stats.link_downs[exc.reason] += 1
            finally:
                await link.close()

    async def _connect(self, deadline: float) -> Link | None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            ports = self.cluster.ports()
            others = [port for port in ports if port != self._last_port] or ports
            port = self.rng.choice(others)
            try:
                link = await Link.open(port, self.user_id, self.config.request_timeout)
            except LinkDown as exc:
                self.stats.connect_failures[exc.reason] += 1
                self._last_port = port
                await asyncio.sleep(0.2)
                continue
            self._last_port = port
            self.stats.sessions += 1
            return link
        return None

    async def _session(self, link: Link, bet_until: float, resolve_until: float) -> None:
        loop = asyncio.get_running_loop()
        for bet in list(self._pending):  # first, the bets that got no answer: the same bet again
            await self._place(link, bet)
        for game in GAMES:
            reply = await link.request({"t": "subscribe", "game": game}, self.config.request_timeout)
            if reply["t"] == "subscribed" and reply.get("round"):
                await self._on_round(link, {**reply["round"], "game": game})
        last_event = loop.time()
        while True:
            now = loop.time()
            self._betting = now < bet_until
            if not self._betting and not self._pending:
                return
            if now >= resolve_until:
                return
            for plan in [p for p in self._plans if p.when <= now]:
                self._plans.remove(plan)
                await self._bet_now(link, plan)
            for bet in list(self._pending):
                await self._place(link, bet)
            wait = min([0.25] + [max(0.0, p.when - now) for p in self._plans])
            try:
                push = await asyncio.wait_for(link.pushes.get(), wait)
            except TimeoutError:
                push = None
            if push is None:
                if link.down is not None and link.pushes.empty():
                    raise LinkDown(link.down)
                if loop.time() - last_event > self.STALE_AFTER:
                    raise LinkDown("stale (no game event)")
                continue
            last_event = loop.time()
            await self._on_push(link, push)

    # -- events

    async def _on_push(self, link: Link, push: Message) -> None:
        kind = push.get("t")
        if kind == "round":
            await self._on_round(link, push)
        elif kind == "tick" and push.get("game") == "crash":
            await self._on_tick(link, push)

    async def _on_round(self, link: Link, event: Message) -> None:
        game, round_id, phase = event.get("game"), event.get("round"), event.get("phase")
        if not isinstance(game, str) or not isinstance(round_id, int):
            return
        if phase == "betting" and self._betting and (game, round_id) not in self._planned:
            self._planned.add((game, round_id))
            closes_at = int(event.get("closes_at") or 0)
            left = closes_at / 1000 - time.time() - 0.25
            if left > 0 and self.rng.random() < self.config.bet_probability:
                # Bets spread over the whole betting window; in dice and roulette sometimes a second one.
                for _ in range(2 if game != "crash" and self.rng.random() < 0.35 else 1):
                    when = asyncio.get_running_loop().time() + self.rng.uniform(0, left)
                    self._plans.append(_Plan(when, game, round_id, closes_at))
        elif game == "crash" and phase == "running":
            self._running_crash = round_id
            retry = self._retry_cashout
            if retry is not None and retry.round_id == round_id:  # no answer yet, and the round still runs
                await self._cash_out(link, round_id, int(event.get("multiplier") or 100), retry)
        elif game == "crash" and phase == "settled":
            if self._running_crash == round_id:
                self._running_crash = None
            self._crash_bets.pop(round_id, None)
            if self._retry_cashout is not None and self._retry_cashout.round_id == round_id:
                self._retry_cashout = None

    async def _on_tick(self, link: Link, tick: Message) -> None:
        round_id, multiplier = tick.get("round"), int(tick.get("multiplier") or 0)
        if tick.get("crashed") or not isinstance(round_id, int) or round_id in self._cashout_done:
            return
        targets = [b.manual_target for b in self._crash_bets.get(round_id, ()) if b.manual_target is not None]
        if targets and multiplier >= min(targets):
            await self._cash_out(link, round_id, multiplier)

    # -- bets

    async def _bet_now(self, link: Link, plan: _Plan) -> None:
        if not self._betting or time.time() * 1000 > plan.closes_at - 100:
            self.stats.planned_too_late += 1
            return
        for game_params, target in self._draw(plan.game):
            self._counter += 1
            bet = SoakBet(f"soak{self.config.seed}-u{self.user_id}-{self._counter}", self.user_id, plan.game,
                          plan.round_id, self.rng.randint(1, 100), game_params, target)  # fmt: skip
            self.bets.append(bet)
            self._pending.append(bet)
            await self._place(link, bet)

    def _draw(self, game: str) -> list[tuple[dict[str, Any], int | None]]:
        """The params (and, for crash, a manual cash-out target) of the bets to place on a round."""
        rng = self.rng
        if game == "dice":
            while True:
                side = rng.choice(("under", "over"))
                params = {"target": rng.randint(100, 9800), "side": side}
                dice = self.handlers["dice"]
                with contextlib.suppress(InvalidBet):  # a target that cannot pay above the stake: draw again
                    return [(dice.bet_wire(dice.read_bet(params, 1)), None)]
        if game == "roulette":
            choice = rng.randrange(6)
            if choice == 0:
                return [({"type": "straight", "numbers": [rng.randint(0, 36)]}, None)]
            if choice == 1:
                return [({"type": rng.choice(("red", "black", "odd", "even", "low", "high")), "numbers": []}, None)]
            if choice == 2:
                return [({"type": rng.choice(("dozen", "column")), "numbers": [rng.randint(1, 3)]}, None)]
            if choice == 3:
                n = rng.randint(1, 33)
                return [({"type": "split", "numbers": [n, n + 3]}, None)]
            if choice == 4:
                row = rng.randint(0, 10)
                return [({"type": "line", "numbers": list(range(3 * row + 1, 3 * row + 7))}, None)]
            return [({"type": "corner", "numbers": [0, 1, 2, 3]}, None)]
        roll = rng.random()
        if roll < 0.35:
            return [({"auto_cashout": rng.randint(101, 400)}, None)]
        if roll < 0.75:
            return [({}, rng.randint(105, 300))]
        # Two bets in one round: a low auto_cashout, and one cashed out by hand above it.
        auto = rng.randint(101, 130)
        return [({"auto_cashout": auto}, None), ({}, auto + rng.randint(5, 100))]

    async def _place(self, link: Link, bet: SoakBet) -> None:
        """Send ``bet`` until it is answered on this link; :class:`LinkDown` leaves it pending."""
        unavailable = 0
        while bet.outcome is None:
            bet.attempts += 1
            node = self.cluster.node_by_port(link.port)
            bet.vias.append(node.node_id if node is not None else str(link.port))
            if not bet.sent_at:
                bet.sent_at = time.time()
            try:
                reply = await link.request(bet.request(), self.config.request_timeout)
            except LinkDown as exc:
                bet.nonanswers.append(exc.reason)
                raise
            if reply["t"] == "bet_ok":
                view = reply["bet"]
                bet.outcome, bet.bet_id, bet.acked_status = "ok", int(view["id"]), view.get("status")
                bet.acked_ids.add(bet.bet_id)
                if bet.game == "crash":
                    self._crash_bets.setdefault(bet.round_id, []).append(bet)
            elif reply["t"] == "error" and reply.get("code") in RETRYABLE_CODES:
                bet.nonanswers.append(str(reply["code"]))
                unavailable += 1
                if unavailable >= 3:
                    raise LinkDown(f"bet answered {reply['code']} 3 times")
                await asyncio.sleep(0.3)
                continue
            else:
                bet.outcome = str(reply.get("code", reply["t"]))
                bet.message = str(reply.get("message", ""))
            if bet in self._pending:
                self._pending.remove(bet)

    # -- cash-outs

    async def _cash_out(self, link: Link, round_id: int, multiplier: int, retry: SoakCashout | None = None) -> None:
        """Cash out every bet of the player in the running crash round (``retry``: the same cash-out again)."""
        mine = self._crash_bets.get(round_id, [])
        if retry is None:
            live = [b.bet_id for b in mine if b.bet_id is not None and not b.params.get("auto_cashout")
                    and b.cashout_acked is None]  # fmt: skip
            record = SoakCashout(self.user_id, round_id, multiplier, live, [b.bet_id for b in mine if b.bet_id])
            record.sent_at = time.time()
            self.cashouts.append(record)
        else:
            record = retry
        node = self.cluster.node_by_port(link.port)
        record.via += ("," if record.via else "") + (node.node_id if node is not None else str(link.port))
        self._cashout_done.add(round_id)
        self._retry_cashout = None
        request = {"t": "action", "game": "crash", "round": round_id, "action": "cashout"}
        for _ in range(3):
            record.attempts += 1
            try:
                reply = await link.request(request, self.config.request_timeout)
            except LinkDown as exc:
                record.nonanswers.append(exc.reason)
                self._retry_cashout = record  # again after the reconnect, if the round still runs
                self._cashout_done.discard(round_id)
                raise
            if reply["t"] == "action_ok":
                result = reply["result"]
                record.outcome = "ok"
                record.results = list(result.get("bets", [result]))
                by_id = {b.bet_id: b for b in mine}
                for entry in record.results:
                    acked = by_id.get(entry.get("bet"))
                    if acked is not None:
                        acked.cashout_acked = int(entry["multiplier"])
                return
            if reply["t"] == "error" and reply.get("code") in RETRYABLE_CODES:
                record.nonanswers.append(str(reply["code"]))
                await asyncio.sleep(0.2)
                continue
            record.outcome = str(reply.get("code", reply["t"]))
            record.message, record.refused_field = str(reply.get("message", "")), reply.get("field")
            return


# ---------------------------------------------------------------------------------------------- the checks


@dataclass
class Invariant:
    """One checked property: whether it holds, a one-line summary, and the evidence when it does not."""

    number: int
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)


@dataclass
class StoredBet:
    id: int
    user_id: int
    game: str
    round_id: int
    amount: int
    params: dict[str, Any]
    key: str | None
    status: str
    payout: int | None
    cashout: int | None
    created_at: float
    settled_at: float | None


@dataclass
class StoredRound:
    id: int
    game: str
    phase: str
    outcome: dict[str, Any] | None
    seed: str
    salt: str
    driver_token: int
    created_at: float
    started_at: float | None
    settled_at: float | None


class Checker:
    """Waits for every round with bets to close, then checks the invariants in PostgreSQL."""

    def __init__(self, cluster: Cluster, handlers: Mapping[str, RoundHandler], faults: list[FaultRecord],
                 t0: float) -> None:  # fmt: skip
        self.cluster = cluster
        self.config = cluster.config
        self.handlers = handlers
        self.faults = faults
        self.t0 = t0
        self.bets: dict[int, StoredBet] = {}
        self.rounds: dict[int, StoredRound] = {}

    async def wait_settled(self, within: float) -> str:
        """Until no round with bets is open and no bet is ``accepted`` (or, with rounds closed, 5 s pass)."""
        deadline = time.monotonic() + within
        closed_since: float | None = None
        state = "timeout"
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(self.cluster.dsn, timeout=3)
                try:
                    open_rounds = await conn.fetchval(
                        "SELECT count(*) FROM rounds r WHERE r.phase IN ('betting', 'running') "
                        "AND EXISTS (SELECT 1 FROM bets b WHERE b.round_id = r.id)"
                    )
                    accepted = await conn.fetchval("SELECT count(*) FROM bets WHERE status = 'accepted'")
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            if open_rounds == 0 and accepted == 0:
                return "every round with bets closed, no bet accepted"
            if open_rounds == 0:
                closed_since = closed_since or time.monotonic()
                if time.monotonic() - closed_since > 5:
                    return f"every round with bets closed, {accepted} bet(s) still accepted"
            state = f"timeout: {open_rounds} round(s) with bets open, {accepted} bet(s) accepted"
            await asyncio.sleep(0.5)
        return state

    async def load(self) -> tuple[list[asyncpg.Record], dict[str, int]]:
        """Read bets, rounds and wallets in one snapshot."""
        conn = await asyncpg.connect(self.cluster.dsn, timeout=10)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                for r in await conn.fetch(
                    "SELECT id, user_id, game, round_id, amount, params::text AS params, idem_key, status, payout, "
                    "cashout, extract(epoch FROM created_at)::float8 AS created, "
                    "extract(epoch FROM settled_at)::float8 AS settled FROM bets"
                ):
                    self.bets[r["id"]] = StoredBet(r["id"], r["user_id"], r["game"], r["round_id"], r["amount"],
                                                   json.loads(r["params"]), r["idem_key"], r["status"], r["payout"],
                                                   r["cashout"], r["created"], r["settled"])  # fmt: skip
                for r in await conn.fetch(
                    "SELECT r.id, r.game, r.phase, r.outcome::text AS outcome, s.seed, c.salt AS salt, "
                    "r.driver_token, extract(epoch FROM r.created_at)::float8 AS created, "
                    "extract(epoch FROM r.started_at)::float8 AS started, "
                    "extract(epoch FROM r.settled_at)::float8 AS settled FROM rounds r "
                    "JOIN seeds s ON s.chain_id = r.chain_id AND s.idx = r.chain_idx "
                    "JOIN seed_chains c ON c.id = r.chain_id"
                ):
                    outcome = None if r["outcome"] is None else json.loads(r["outcome"])
                    self.rounds[r["id"]] = StoredRound(r["id"], r["game"], r["phase"], outcome, r["seed"], r["salt"],
                                                       r["driver_token"], r["created"], r["started"],
                                                       r["settled"])  # fmt: skip
                wallets = await conn.fetch(
                    """SELECT a.user_id, a.balance,
                         coalesce((SELECT sum(l.amount) FROM ledger_legs l JOIN ledger_txns t ON t.id = l.txn_id
                                   WHERE l.account_id = a.id AND t.kind IN ('welcome', 'deposit', 'adjust')), 0)
                           AS credits,
                         coalesce((SELECT sum(b.amount) FROM bets b WHERE b.user_id = a.user_id), 0) AS stakes,
                         coalesce((SELECT sum(b.payout) FROM bets b WHERE b.user_id = a.user_id
                                   AND b.status IN ('won', 'lost')), 0) AS payouts,
                         coalesce((SELECT sum(b.payout) FROM bets b WHERE b.user_id = a.user_id
                                   AND b.status = 'refunded'), 0) AS refunds
                       FROM accounts a WHERE a.kind = 'wallet' ORDER BY a.user_id"""
                )
                kinds = {r["kind"]: r["n"] for r in await conn.fetch(
                    "SELECT kind, count(*) AS n FROM ledger_txns GROUP BY kind")}  # fmt: skip
        finally:
            await conn.close()
        return list(wallets), kinds

    async def check(self, bets: list[SoakBet], cashouts: list[SoakCashout]) -> list[Invariant]:
        wallets, _ = await self.load()
        acked = [b for b in bets if b.outcome == "ok"]
        results = [
            self._exists_once(acked),
            self._none_accepted(acked),
            self._settled_by_rule(acked),
            self._wallets(wallets),
            await self._audit(),
            self._refusals_not_placed(bets),
            self._cashouts(bets, cashouts),
        ]
        return results

    # -- the invariants

    def _exists_once(self, acked: list[SoakBet]) -> Invariant:
        by_key: dict[tuple[int, str], list[StoredBet]] = {}
        for stored in self.bets.values():
            if stored.key is not None:
                by_key.setdefault((stored.user_id, stored.key), []).append(stored)
        problems: list[str] = []
        for bet in acked:
            found = self.bets.get(bet.bet_id or -1)
            rows = by_key.get((bet.user_id, bet.key), [])
            if len(bet.acked_ids) != 1:
                problems.append(f"{bet.describe()}: acknowledged with several bet ids {sorted(bet.acked_ids)}")
            if found is None:
                problems.append(f"{bet.describe()}: acknowledged as bet {bet.bet_id}, which is not in PostgreSQL")
            elif (found.user_id, found.key, found.game, found.round_id, found.amount) != (
                bet.user_id, bet.key, bet.game, bet.round_id, bet.amount
            ):  # fmt: skip
                problems.append(f"{bet.describe()}: bet {found.id} in PostgreSQL differs: {found}")
            if len(rows) != 1:
                problems.append(f"{bet.describe()}: {len(rows)} rows with this (user, key): {[r.id for r in rows]}")
        return Invariant(1, "every acknowledged bet exists exactly once (by id and by (user, key))", not problems,
                         f"{len(acked)} acknowledged bets, {len(problems)} problem(s)", problems)  # fmt: skip

    def _none_accepted(self, acked: list[SoakBet]) -> Invariant:
        by_id = {bet.bet_id: bet for bet in acked}
        left = [b for b in self.bets.values() if b.status == "accepted"]
        details = []
        for round_id, stuck in self._by_round(left).items():
            round_ = self.rounds.get(round_id)
            lines = [
                f"bet {b.id} ({self._who(b, by_id)}) user {b.user_id} amount {b.amount}, committed at "
                f"t={b.created_at - self.t0:.3f}s"
                for b in stuck
            ]
            details.append(f"{stuck[0].game} round {round_id} ({round_.phase if round_ else '?'}): {len(stuck)} bet(s) "
                           f"left accepted" + self._bullets(lines) + self._round_evidence(round_id))  # fmt: skip
        acked_left = sum(1 for b in left if b.id in by_id)
        return Invariant(2, "no bet is still accepted", not left,
                         f"{acked_left} acknowledged and {len(left) - acked_left} other bet(s) still accepted, in "
                         f"{len(details)} round(s)", details)  # fmt: skip

    def _settled_by_rule(self, acked: list[SoakBet]) -> Invariant:
        by_id = {bet.bet_id: bet for bet in acked}
        unfair: list[str] = []
        with_bets = {b.round_id for b in self.bets.values()}
        for played in self.rounds.values():
            if played.phase == "settled" and played.outcome is not None and played.id in with_bets:
                drawn = self.handlers[played.game].outcome(FairRng(played.seed, played.salt, played.game))
                if any(played.outcome.get(k) != v for k, v in drawn.items()):
                    unfair.append(f"round {played.id} ({played.game}): stored outcome {played.outcome}, the seed "
                                  f"draws {drawn}")  # fmt: skip
        checked = 0
        wrong: list[tuple[StoredBet, str, int]] = []
        for stored in sorted(self.bets.values(), key=lambda b: b.id):
            round_ = self.rounds.get(stored.round_id)
            if round_ is None or stored.status == "accepted":
                continue  # invariant 2 reports those
            checked += 1
            if round_.phase == "voided":
                expected_status, expected = "refunded", stored.amount
            elif round_.phase == "settled" and round_.outcome is not None:
                handler = self.handlers[stored.game]
                info = BetInfo(
                    stored.id, stored.user_id, stored.amount, handler.load_bet(stored.params), stored.cashout
                )
                expected = min(handler.payout(info, round_.outcome), self.config.max_payout)
                expected_status = "won" if expected > 0 else "lost"
            else:
                expected_status, expected = f"not closed (round {round_.phase})", -1
            if (stored.status, stored.payout) != (expected_status, expected):
                wrong.append((stored, expected_status, expected))
        kinds = Counter(f"{s.status} instead of {status}" for s, status, _ in wrong)
        details = []
        for round_id, bets in self._by_round([s for s, _, _ in wrong]).items():
            round_ = self.rounds[round_id]
            expected_of = {s.id: (status, paid) for s, status, paid in wrong}
            lines = [
                f"bet {b.id} ({self._who(b, by_id)}) user {b.user_id} amount {b.amount} params {json.dumps(b.params)} "
                f"cashout {b.cashout}: stored {b.status} payout {b.payout}, the rule says {expected_of[b.id][0]} "
                f"payout {expected_of[b.id][1]}"
                for b in bets
            ]
            details.append(f"{round_.game} round {round_id} ({round_.phase}, outcome {round_.outcome}): {len(bets)} "
                           f"bet(s) off the rule" + self._bullets(lines) + self._round_evidence(round_id))  # fmt: skip
        summary = (f"{checked} closed bets checked against their round's outcome: {len(wrong)} mismatch(es) in "
                   f"{len(details)} round(s)" + (f" ({', '.join(f'{k} {v}' for k, v in kinds.most_common())})"
                   if kinds else "") + f"; {len(unfair)} outcome(s) not drawn from their seed")  # fmt: skip
        return Invariant(3, "every bet is settled by its game's rule (voided rounds refund)", not wrong and not unfair,
                         summary, details + unfair)  # fmt: skip

    @staticmethod
    def _by_round(bets: Iterable[StoredBet]) -> dict[int, list[StoredBet]]:
        grouped: dict[int, list[StoredBet]] = {}
        for bet in sorted(bets, key=lambda b: b.id):
            grouped.setdefault(bet.round_id, []).append(bet)
        return grouped

    @staticmethod
    def _who(bet: StoredBet, acked: Mapping[int | None, SoakBet]) -> str:
        mine = acked.get(bet.id)
        return "never acknowledged" if mine is None else f"acknowledged via {mine.vias[-1]}"

    @staticmethod
    def _bullets(lines: list[str], limit: int = 6) -> str:
        shown = [f"\n      * {line}" for line in lines[:limit]]
        if len(lines) > limit:
            shown.append(f"\n      * ... and {len(lines) - limit} more")
        return "".join(shown)

    def _wallets(self, wallets: list[asyncpg.Record]) -> Invariant:
        problems = []
        for w in wallets:
            expected = w["credits"] - w["stakes"] + w["payouts"] + w["refunds"]
            if w["balance"] != expected:
                problems.append(
                    f"user {w['user_id']}: balance {w['balance']} != credits {w['credits']} - stakes "
                    f"{w['stakes']} + payouts {w['payouts']} + refunds {w['refunds']} = {expected}"
                )
        return Invariant(4, "every wallet = credits - stakes + payouts + refunds", not problems,
                         f"{len(wallets)} wallets, {len(problems)} off", problems)  # fmt: skip

    async def _audit(self) -> Invariant:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_") and k != "REDIS_URL"}
        env.update(DATABASE_URL=self.cluster.dsn, CROUPIER_BOT_TOKEN=BOT_TOKEN,
                   CROUPIER_DATA_DIR=str(self.cluster.root / "audit-state"))  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", "audit", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), 120)
        text = output.decode(errors="replace").strip()
        lines = text.splitlines()
        return Invariant(5, "croupier audit passes", process.returncode == 0,
                         f"exit {process.returncode}: {lines[-1] if lines else ''}",
                         [] if process.returncode == 0 else lines[-30:])  # fmt: skip

    def _refusals_not_placed(self, bets: list[SoakBet]) -> Invariant:
        by_key = {(b.user_id, b.key): b for b in self.bets.values() if b.key is not None}
        problems = []
        for bet in bets:
            stored = by_key.get((bet.user_id, bet.key))
            if bet.outcome not in (None, "ok") and stored is not None:
                problems.append(f"{bet.describe()}: refused ({bet.outcome}: {bet.message}) yet placed as bet "
                                f"{stored.id} ({stored.status})" + self._round_evidence(bet.round_id))  # fmt: skip
        return Invariant(6, "no bet refused to its player was placed", not problems,
                         f"{sum(1 for b in bets if b.outcome not in (None, 'ok'))} refused bets, {len(problems)} "
                         f"placed anyway", problems)  # fmt: skip

    def _cashouts(self, bets: list[SoakBet], cashouts: list[SoakCashout]) -> Invariant:
        problems = []
        for bet in bets:
            if bet.cashout_acked is None or bet.bet_id is None:
                continue
            stored = self.bets.get(bet.bet_id)
            if stored is None or stored.cashout != bet.cashout_acked:
                problems.append(
                    f"bet {bet.bet_id} round {bet.round_id}: cash-out at {bet.cashout_acked} "
                    f"acknowledged, stored cashout {stored.cashout if stored else 'no bet'}"
                )
        refused_live = 0
        for record in cashouts:
            # Only "already cashed out" can be wrong here: too late (crashed), not running (its driver died and
            # the round was recovered) and the like are what a player must expect under faults.
            if record.outcome in (None, "ok") or "already cashed out" not in record.message or not record.live_bets:
                continue
            round_ = self.rounds.get(record.round_id)
            outcome = (round_.outcome if round_ else None) or {}
            still_in = [i for i in record.live_bets if (s := self.bets.get(i)) is not None and s.cashout is None]
            if ("force_point" in outcome or not still_in
                    or outcome.get("crash_point", 0) <= record.multiplier_seen):  # fmt: skip
                continue
            refused_live += 1
            problems.append(
                f"user {record.user_id} crash round {record.round_id}: cash-out at {record.multiplier_seen} (crash "
                f"point {outcome.get('crash_point')}) refused ({record.outcome}, field {record.refused_field}: "
                f"{record.message}) although bet(s) {still_in} had no cash-out and no auto_cashout (the player's "
                f"bets in the round: {record.all_bets}; via {record.via})"
            )
        acked = sum(1 for c in cashouts if c.outcome == "ok")
        return Invariant(7, "acknowledged cash-outs are recorded; none refused while a bet was still in",
                         not problems, f"{len(cashouts)} cash-outs ({acked} acknowledged), {refused_live} refused "
                         f"with a bet still in", problems)  # fmt: skip

    # -- evidence

    def _round_evidence(self, round_id: int) -> str:
        """The round's times, the faults around it and the node log lines naming it."""
        round_ = self.rounds.get(round_id)
        parts = []
        if round_ is not None:
            t = self.t0

            def rel(x: float | None) -> str:
                return "-" if x is None else f"{x - t:.3f}s"

            parts.append(f"round {round_id} {round_.game}: created t={rel(round_.created_at)}, running "
                         f"t={rel(round_.started_at)}, closed t={rel(round_.settled_at)} as {round_.phase}, "
                         f"driver token {round_.driver_token}")  # fmt: skip
            end = round_.settled_at or time.time()
            near = [f for f in self.faults if f.started <= end + 1 and f.ended >= round_.created_at - 2]
            parts.extend(f"fault {f.describe(t)}" for f in near)
        parts.extend(self._log_lines(round_id))
        return "".join(f"\n      | {p}" for p in parts)

    def _log_lines(self, round_id: int, limit: int = 8) -> list[str]:
        pattern = re.compile(rf"\bround {round_id}\b")
        found = []
        for node in self.cluster.nodes:
            with contextlib.suppress(OSError):
                for line in node.log_path.read_text(errors="replace").splitlines():
                    if pattern.search(line):
                        found.append(f"{node.log_path.name}: {line.strip()[:300]}")
        return found[:limit]


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class SoakReport:
    """Every figure of a run and the invariant results."""

    config: SoakConfig
    workdir: Path
    duration: float = 0.0
    faults: list[FaultRecord] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    bets: list[SoakBet] = field(default_factory=list)
    cashouts: list[SoakCashout] = field(default_factory=list)
    stats: PlayStats = field(default_factory=PlayStats)
    settle_state: str = ""
    statuses: Counter[str] = field(default_factory=Counter)
    invariants: list[Invariant] = field(default_factory=list)
    error: str | None = None
    t0: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.invariants) and all(i.ok for i in self.invariants)

    @property
    def fault_counts(self) -> Counter[str]:
        return Counter(fault.kind for fault in self.faults)

    @property
    def acknowledged(self) -> list[SoakBet]:
        return [bet for bet in self.bets if bet.outcome == "ok"]

    def render(self, *, detail_limit: int = 20) -> str:
        bets, acked = self.bets, self.acknowledged
        refused = Counter(b.outcome for b in bets if b.outcome not in (None, "ok"))
        unresolved = [b for b in bets if b.outcome is None]
        retried = [b for b in bets if b.attempts > 1]
        nonanswers = Counter(reason.split(":")[0] for b in bets for reason in b.nonanswers)
        faults = self.fault_counts
        cashout_refusals = Counter(_refusal_kind(c) for c in self.cashouts if c.outcome not in (None, "ok"))
        c = self.config
        lines = [
            f"soak: {c.seconds:.0f} s of faults, {c.nodes} nodes, {c.players} players, seed {c.seed}; "
            f"run took {self.duration:.0f} s; work dir {self.workdir}",
            f"faults injected: {len(self.faults)} ("
            + ", ".join(f"{kind} {faults.get(kind, 0)}" for kind in FAULT_KINDS)
            + f"); unexpected node exits: {len(self.unexpected_exits)}",
            f"bets: {len(bets)} sent, {len(acked)} acknowledged, {sum(refused.values())} refused ("
            + (", ".join(f"{k} {v}" for k, v in refused.most_common()) or "none")
            + f"), {len(unresolved)} never answered",
            f"retries by key: {len(retried)} bets retried, {sum(b.attempts - 1 for b in bets)} retry attempts "
            f"({sum(b.attempts for b in bets)} attempts in all); non-answers: "
            + (", ".join(f"{k} {v}" for k, v in nonanswers.most_common()) or "none"),
            f"cash-outs: {len(self.cashouts)} sent, {sum(1 for x in self.cashouts if x.outcome == 'ok')} acknowledged, "
            f"{sum(cashout_refusals.values())} refused ("
            + (", ".join(f"{k} {v}" for k, v in cashout_refusals.most_common()) or "none")
            + f"), {sum(1 for x in self.cashouts if x.outcome is None)} unanswered, "
            f"{sum(x.attempts - 1 for x in self.cashouts)} retry attempts, "
            f"{sum(1 for x in self.cashouts if len(x.all_bets) > 1)} by players holding two bets; acknowledged "
            f"bets with a recorded cash-out: {sum(1 for b in acked if b.cashout_acked is not None)}",
            "acknowledged bets by final status: "
            + ", ".join(f"{k} {self.statuses.get(k, 0)}" for k in ("won", "lost", "refunded", "accepted", "missing"))
            + f" (settled {self.statuses.get('won', 0) + self.statuses.get('lost', 0)})",
            f"sessions: {self.stats.sessions} connects, {sum(self.stats.connect_failures.values())} failed ("
            + (", ".join(f"{k} {v}" for k, v in self.stats.connect_failures.most_common(4)) or "none")
            + "); links lost: "
            + (", ".join(f"{k} {v}" for k, v in self.stats.link_downs.most_common(6)) or "none"),
            f"settlement: {self.settle_state}",
        ]
        if self.unexpected_exits:
            lines.extend(f"  unexpected exit: {x}" for x in self.unexpected_exits)
        if self.error:
            lines.append(f"ERROR: {self.error}")
        lines.append("invariants:")
        for inv in self.invariants:
            lines.append(f"  [{'PASS' if inv.ok else 'FAIL'}] ({inv.number}) {inv.name}: {inv.summary}")
            for detail in inv.details[:detail_limit]:
                lines.append(f"      - {detail}")
            if len(inv.details) > detail_limit:
                lines.append(f"      ... and {len(inv.details) - detail_limit} more")
        if retried:
            lines.append(f"retried bets (first {min(len(retried), 8)} of {len(retried)}):")
            lines.extend(f"  {bet.describe()} -> {bet.outcome}" for bet in retried[:8])
        lines.append("fault timeline:")
        lines.extend(f"  {fault.describe(self.t0)}" for fault in self.faults)
        lines.append(f"RESULT: {'every invariant holds' if self.ok else 'INVARIANT FAILURE'}")
        return "\n".join(lines)


def _refusal_kind(cashout: SoakCashout) -> str:
    message = cashout.message
    for words in ("too late", "already cashed out automatically", "already cashed out", "not running",
                  "no bet", "not the current round"):  # fmt: skip
        if words in message:
            return f"{cashout.outcome}: {words}"
    return str(cashout.outcome)


async def run_soak(config: SoakConfig) -> SoakReport:
    """Start the cluster, play under faults for ``config.seconds``, settle, check; always stop everything."""
    handlers = config.handlers()
    cluster = Cluster(config)
    report = SoakReport(config, cluster.root, t0=time.time())
    started = time.monotonic()
    scheduler = FaultScheduler(cluster, random.Random(config.seed))
    players: list[Player] = []
    stats = PlayStats()
    tasks: list[asyncio.Task[None]] = []
    try:
        log_line(config, f"starting PostgreSQL, Redis and {config.nodes} nodes in {cluster.root}")
        await cluster.start()
        loop = asyncio.get_running_loop()
        report.t0 = scheduler.t0 = time.time()
        bet_until = loop.time() + config.warmup + config.seconds
        resolve_until = bet_until + config.resolve_timeout
        players = [Player(700_000 + i, cluster=cluster, seed=config.seed, handlers=handlers, stats=stats)
                   for i in range(config.players)]  # fmt: skip
        tasks = [asyncio.create_task(p.run(bet_until, resolve_until), name=f"soak-player-{p.user_id}")
                 for p in players]  # fmt: skip
        log_line(config, f"{config.players} players betting; faults for {config.seconds:.0f} s after "
                         f"{config.warmup:.0f} s of warm-up")  # fmt: skip
        await asyncio.sleep(config.warmup)
        await scheduler.run(bet_until)
        await scheduler.heal()
        log_line(config, f"faults over ({len(scheduler.faults)}); players resolve their unanswered bets")
        await asyncio.gather(*tasks)
        checker = Checker(cluster, handlers, scheduler.faults, report.t0)
        report.settle_state = await checker.wait_settled(config.settle_timeout)
        log_line(config, f"settlement: {report.settle_state}; stopping the nodes and checking")
        for node in cluster.nodes:
            await cluster.stop_node(node)
        report.bets = [bet for p in players for bet in p.bets]
        report.cashouts = [c for p in players for c in p.cashouts]
        report.invariants = await checker.check(report.bets, report.cashouts)
        for bet in report.acknowledged:
            stored = checker.bets.get(bet.bet_id or -1)
            report.statuses[stored.status if stored else "missing"] += 1
    except Exception as exc:  # reported (with every figure gathered so far), never swallowed silently
        report.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        report.faults = scheduler.faults
        report.unexpected_exits = list(cluster.unexpected_exits)
        report.stats = stats
        if not report.bets:
            report.bets = [bet for p in players for bet in p.bets]
            report.cashouts = [c for p in players for c in p.cashouts]
        report.duration = time.monotonic() - started
        await cluster.close()
        if report.ok and not config.keep:
            cluster.remove_workdir()
        else:
            (cluster.root / "report.txt").write_text(report.render(detail_limit=1000) + "\n")
    return report


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Randomized fault soak of a Croupier cluster (see module doc).")
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds of faults (default 300)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--players", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--betting-ms", type=int, default=1500)
    parser.add_argument("--pause-ms", type=int, default=300)
    parser.add_argument("--fault-gap", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"),
                        help="seconds between faults (uniform; default 2 6)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="where logs and data go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir even when every invariant holds")
    parser.add_argument("--quiet", action="store_true", help="only the final report")
    args = parser.parse_args(list(argv) if argv is not None else None)
    config = SoakConfig(seconds=args.seconds, nodes=args.nodes, players=args.players, seed=args.seed,
                        betting_ms=args.betting_ms, pause_ms=args.pause_ms, fault_gap=tuple(args.fault_gap),
                        workdir=args.workdir, keep=args.keep, verbose=not args.quiet)  # fmt: skip
    report = asyncio.run(run_soak(config))
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Checker", "Cluster", "FaultScheduler", "Player", "SoakConfig", "SoakReport", "main", "run_soak"]
