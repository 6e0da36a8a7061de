"""A locust swarm of Mini App players: one real WebSocket per simulated player.

Each player mints its own signed initData with the bot token in ``CROUPIER_BOT_TOKEN`` (the
variable the server reads), authenticates, subscribes to one game of the mix, and plays: in each
round it takes a think time after betting opens, bets, and in crash cashes out at its target
multiplier; between rounds it reads what a Mini App shows (``READ_MIX``: its balance, the game's
history, the day's leaderboard, its own bets and transactions). Every exchange is a locust request
(type ``WS``: ``auth``, ``subscribe``, ``bet``, ``action``, the reads by their ``t``; a refused
request is a failure named by its error code), and the lag of game events (arrival minus the
server's ``ts``) is its own entry (type ``PUSH``).

    CROUPIER_BOT_TOKEN=... locust -f loadtest/locustfile.py --headless -u 2000 -r 200 -t 60s \\
        --csv out --host ws://127.0.0.1:8000

A player that cannot start (no ``CROUPIER_BOT_TOKEN``, no connection, a refused ``auth`` or
``subscribe``) is a failure naming why (``start``, ``connect``, ``auth``, ``subscribe``); a run in
which no player ever started playing logs why and exits with status 1, so a swarm that never
reached the server cannot pass for a quiet one.

Options (also as environment variables): ``--croupier-games`` (the mix, ``crash,dice,roulette``),
``--croupier-bet-min`` / ``--croupier-bet-max`` (amount per bet), ``--croupier-think-min`` /
``--croupier-think-max`` (seconds from betting opening to the bet), ``--croupier-cashout`` (crash target
multiplier in hundredths), ``--croupier-reads`` (reads per player per round, 1),
``--croupier-lag-sample`` (share of ticks whose lag is reported).
Players need money: start the server with ``CROUPIER_WELCOME_CREDIT`` (see docs/loadtest.md).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import gevent
import websocket
from gevent.event import AsyncResult, Event
from locust import User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from server.auth import sign_init_data

Message = dict[str, Any]
T = TypeVar("T")
REPLY_TIMEOUT = 10.0
BET_MARGIN_MS = 300
"""A player bets only while more than this remains of the betting window (a Mini App greys the button)."""
READ_MIX: tuple[tuple[str, int], ...] = (
    ("balance", 3), ("history", 2), ("leaderboard", 2), ("my_bets", 2), ("my_transactions", 1),
)  # fmt: skip
"""What a player looks at between rounds, with weights: the screens a Mini App shows (its balance, the
game's last rounds, the day's board, the player's own bets and wallet movements)."""
NO_TOKEN = "CROUPIER_BOT_TOKEN is not set: export the server's bot token (players sign their initData with it)"
log = logging.getLogger(__name__)
_user_ids: dict[int, Iterator[int]] = {}
"""Per process (``locust --processes N`` forks after this module is imported): user ids of its players."""


def _next_user_id() -> int:
    """A Telegram user id no other locust process hands out (random per process, then counting)."""
    ids = _user_ids.get(os.getpid())
    if ids is None:
        ids = _user_ids[os.getpid()] = itertools.count(10**12 + secrets.randbelow(10**6) * 10**5 + 1)
    return next(ids)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("Croupier")
    group.add_argument("--croupier-games", env_var="CROUPIER_LOCUST_GAMES", default="crash,dice,roulette",
                       help="games the players spread over (comma separated)")  # fmt: skip
    group.add_argument("--croupier-bet-min", env_var="CROUPIER_LOCUST_BET_MIN", type=int, default=1)
    group.add_argument("--croupier-bet-max", env_var="CROUPIER_LOCUST_BET_MAX", type=int, default=10)
    group.add_argument("--croupier-think-min", env_var="CROUPIER_LOCUST_THINK_MIN", type=float, default=1.0)
    group.add_argument("--croupier-think-max", env_var="CROUPIER_LOCUST_THINK_MAX", type=float, default=5.0)
    group.add_argument("--croupier-cashout", env_var="CROUPIER_LOCUST_CASHOUT", type=int, default=150,
                       help="crash: cash out at this multiplier (hundredths)")  # fmt: skip
    group.add_argument("--croupier-reads", env_var="CROUPIER_LOCUST_READS", type=float, default=1.0,
                       help="reads per player per round (balance, history, leaderboard, own bets and "
                            "transactions: READ_MIX)")  # fmt: skip
    group.add_argument("--croupier-lag-sample", env_var="CROUPIER_LOCUST_LAG_SAMPLE", type=float, default=0.1,
                       help="share of crash ticks whose push lag is reported (round events always are)")  # fmt: skip


@events.quitting.add_listener  # type: ignore[untyped-decorator]  # locust's events are untyped
def _fail_when_nobody_played(environment: Environment, **_: Any) -> None:
    """At the end of the run (on the master, which holds every process's figures): no player ever
    authenticated and subscribed means the swarm measured nothing; say why, and exit with status 1."""
    if isinstance(environment.runner, WorkerRunner):
        return
    stats = environment.stats
    started = stats.get("subscribe", "WS")
    if started.num_requests - started.num_failures > 0:
        return
    reasons = sorted({f"{error.name}: {error.error}" for error in stats.errors.values()}) or ["no player was spawned"]
    log.error("no player ever started playing, so this run measured nothing: %s", "; ".join(reasons))
    environment.process_exit_code = 1


def now_ms() -> float:
    return time.time() * 1000


class CroupierClient:
    """One WebSocket: requests wait for the reply with their id; pushes update what the player sees."""

    def __init__(self, environment: Environment, url: str, lag_sample: float) -> None:
        self.environment = environment
        self.url = url
        self.lag_sample = lag_sample
        self.ws: websocket.WebSocket | None = None
        self.waiting: dict[str, AsyncResult] = {}
        self.rounds: dict[str, Message] = {}  # game -> the last round event
        self.multiplier: dict[str, int] = {}
        self.ids = itertools.count(1)
        self.reader: gevent.Greenlet | None = None
        self.changed = Event()
        """Set by the reader on every round event and tick: players wait on it instead of polling."""

    def connect(self) -> None:
        # skip_utf8_validation: websocket-client checks text frames byte by byte in Python (an eighth of
        # this process's CPU in a 2,000-user profile); json.loads rejects invalid UTF-8 anyway.
        self.ws = websocket.create_connection(self.url, subprotocols=["croupier.v1.json"], timeout=REPLY_TIMEOUT,
                                              enable_multithread=True, skip_utf8_validation=True)  # fmt: skip
        self.ws.settimeout(None)
        self.reader = gevent.spawn(self._read)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.kill(block=False)
        if self.ws is not None:
            self.ws.close()

    def request(self, name: str, message: Message, *, expected: str | None = None) -> Message | None:
        """Send ``message``, report it to locust as ``name`` and return the reply (None on failure).

        An error reply whose message contains ``expected`` is a normal outcome of the game (a cash-out
        a moment after the crash): it is reported as a success named ``<name> (refused)``."""
        request_id = f"{name}-{next(self.ids)}"
        waiter = AsyncResult()
        self.waiting[request_id] = waiter
        started = time.perf_counter()
        reply: Message | None = None
        exception: Exception | None = None
        try:
            assert self.ws is not None
            self.ws.send(json.dumps({**message, "id": request_id}))
            reply = waiter.get(timeout=REPLY_TIMEOUT)
            if reply.get("t") == "error":
                if expected is not None and expected in str(reply.get("message")):
                    name = f"{name} (refused)"
                else:
                    exception = RuntimeError(f"{reply.get('code')}: {reply.get('message')}")
        except gevent.Timeout:
            exception = TimeoutError(f"no reply to {name} in {REPLY_TIMEOUT:.0f} s")
        except (OSError, websocket.WebSocketException) as exc:
            exception = exc
        finally:
            self.waiting.pop(request_id, None)
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=len(json.dumps(reply)) if reply else 0, exception=exception, context={},
        )  # fmt: skip
        return None if exception else reply

    def _read(self) -> None:
        assert self.ws is not None
        while True:
            try:
                frame = self.ws.recv()
            except (OSError, websocket.WebSocketException):
                return
            if not frame:
                return
            arrived = now_ms()
            message: Message = json.loads(frame)
            if "ch" not in message:
                waiter = self.waiting.get(str(message.get("id")))
                if waiter is not None:
                    waiter.set(message)
                continue
            kind = message.get("t")
            if kind == "round":
                self.rounds[message["game"]] = message
                self.multiplier.pop(message["game"], None)
            elif kind == "tick":
                self.multiplier[message["game"]] = message.get("multiplier", 0)
            if kind in ("round", "tick"):
                self.changed.set()
            if "ts" in message and (kind != "tick" or random.random() < self.lag_sample):
                self.environment.events.request.fire(
                    request_type="PUSH", name=f"lag {kind}", response_time=max(0.0, arrived - message["ts"]),
                    response_length=len(frame), exception=None, context={},
                )  # fmt: skip


class CroupierPlayer(User):
    """A Mini App player: authenticates, follows one game and plays it round after round."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        options = environment.parsed_options
        self.games = [g.strip() for g in getattr(options, "croupier_games", "dice").split(",") if g.strip()]
        self.bet_range = (getattr(options, "croupier_bet_min", 1), getattr(options, "croupier_bet_max", 10))
        self.think = (getattr(options, "croupier_think_min", 1.0), getattr(options, "croupier_think_max", 5.0))
        self.cashout = getattr(options, "croupier_cashout", 150)
        self.reads = getattr(options, "croupier_reads", 1.0)
        url = (self.host or "ws://127.0.0.1:8000").rstrip("/")
        self.client = CroupierClient(environment, url if url.endswith("/ws") else url + "/ws",
                                     getattr(options, "croupier_lag_sample", 0.1))  # fmt: skip
        self.user_id = _next_user_id()
        self.game = random.choice(self.games)
        self.last_round = -1

    def on_start(self) -> None:
        token = os.environ.get("CROUPIER_BOT_TOKEN")
        if not token:
            self.environment.events.request.fire(request_type="WS", name="start", response_time=0.0,
                                                 response_length=0, exception=RuntimeError(NO_TOKEN),
                                                 context={})  # fmt: skip
            raise StopUser(NO_TOKEN)
        started = time.perf_counter()
        try:
            self.client.connect()
        except (OSError, websocket.WebSocketException) as exc:
            self.environment.events.request.fire(request_type="WS", name="connect",
                                                 response_time=(time.perf_counter() - started) * 1000,
                                                 response_length=0, exception=exc, context={})  # fmt: skip
            raise StopUser() from exc
        init_data = sign_init_data(token, user_id=self.user_id, first_name="Locust")
        if self.client.request("auth", {"t": "auth", "init_data": init_data}) is None:
            raise StopUser()
        subscribed = self.client.request("subscribe", {"t": "subscribe", "game": self.game})
        if subscribed is None:
            raise StopUser()
        if subscribed.get("round"):
            self.client.rounds.setdefault(self.game, {**subscribed["round"], "t": "round"})

    def on_stop(self) -> None:
        self.client.close()

    @task
    def play_a_round(self) -> None:
        """Wait for a round taking bets, think, bet while betting is still open, and in crash cash out
        at the target. Players think for different times, as people do: a crowd does not bet in the
        same millisecond, but spread over the betting window."""
        round_event = self._next_betting_round()
        if round_event is None:
            return
        self.last_round = round_event["round"]
        window = (round_event.get("closes_at", 0) - now_ms() - BET_MARGIN_MS) / 1000
        gevent.sleep(max(0.0, min(random.uniform(*self.think), window)))
        if round_event.get("closes_at", 0) - now_ms() <= BET_MARGIN_MS:
            return  # thought too long: this round is missed, like a player who hesitated
        amount = random.randint(*self.bet_range)
        placed = self.client.request("bet", {"t": "bet", "game": self.game, "round": round_event["round"],
                                             "amount": amount, "params": self._params(),
                                             "key": secrets.token_hex(8)})  # fmt: skip
        if placed is not None and self.game == "crash":
            self._cash_out(round_event["round"])
        self._look_around()

    def _look_around(self) -> None:
        """Between rounds, read what a Mini App shows: ``reads`` requests a round on average, kinds drawn
        from :data:`READ_MIX`."""
        whole, part = divmod(self.reads, 1.0)
        count = int(whole) + (random.random() < part)
        kinds, weights = zip(*READ_MIX, strict=True)
        for kind in random.choices(kinds, weights, k=count):
            request: Message = {"t": kind}
            if kind == "history":
                request["game"] = self.game
            elif kind == "leaderboard":
                request.update(game=self.game, metric="net", period="day")
            self.client.request(kind, request)

    def _wait_for(self, ready: Callable[[], T | None], timeout: float) -> T | None:
        """Return ``ready()`` once it is truthy (re-checked at every round event or tick), or None."""
        deadline = time.monotonic() + timeout
        while (result := ready()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.client.changed.clear()  # no switch between the check above and this: no wakeup lost
            self.client.changed.wait(min(remaining, 1.0))
        return result

    def _next_betting_round(self, timeout: float = 30.0) -> Message | None:
        def betting() -> Message | None:
            current = self.client.rounds.get(self.game)
            if (current is not None and current.get("phase") == "betting" and current["round"] != self.last_round
                    and current.get("closes_at", 0) - now_ms() > BET_MARGIN_MS):  # fmt: skip
                return current
            return None

        return self._wait_for(betting, timeout)

    def _params(self) -> Message:
        if self.game == "dice":
            return {"target": random.randint(2000, 8000), "side": random.choice(["under", "over"])}
        if self.game == "roulette":
            return random.choice([{"type": "red", "numbers": []}, {"type": "black", "numbers": []},
                                  {"type": "straight", "numbers": [random.randint(0, 36)]}])  # fmt: skip
        return {}

    def _cash_out(self, round_id: int) -> None:
        def moment() -> str | None:
            current = self.client.rounds.get(self.game, {})
            if current.get("round") != round_id or current.get("phase") == "settled":
                return "over"  # crashed (or over) before the target: the bet is lost, nothing to send
            if current.get("phase") == "running" and self.client.multiplier.get(self.game, 0) >= self.cashout:
                return "now"
            return None

        if self._wait_for(moment, 120.0) == "now":
            self.client.request("action", {"t": "action", "game": self.game, "round": round_id,
                                           "action": "cashout", "params": {}}, expected="too late")  # fmt: skip
