"""Players of the high-availability tests: sockets that bet on every round and remember what they saw, when.

Each :class:`Player` is one socket of one user on one node, subscribed to dice. :func:`gamble` bets on
every round it hears open; every push and every bet's answer is stamped with ``time.monotonic()`` so a
test can say when the players saw the cluster work again, and the user channel's offsets show whether an
event was lost or delivered twice (:func:`assert_user_channel_whole`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from server.auth import sign_init_data
from tests.services import clean_env

TOKEN = "1:abcdefghijklmnop"
Message = dict[str, Any]
REFUSALS_EXPECTED = frozenset({"betting_closed", "round_mismatch"})
"""A bet's round may close before the bet lands (a node that heard of the round late): not a failure."""


def node_env(database_url: str, redis_url: str | None, state: Path, node_id: str, **extra: str) -> dict[str, str]:
    """A dice-only node with short rounds (one opens every 0.8 s: 600 ms of betting, 100 ms running, 100 ms
    pause) and a welcome credit for many bets."""
    env = clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=database_url, CROUPIER_DATA_DIR=str(state),
                    CROUPIER_NODE_ID=node_id, CROUPIER_GAMES="dice", CROUPIER_BETTING_MS="600",
                    CROUPIER_GAME_PARAMS='{"dice": {"running_ms": 100}}', CROUPIER_ROUND_PAUSE_MS="100",
                    CROUPIER_SEED_CHAIN_LENGTH="500", CROUPIER_WELCOME_CREDIT="100000", **extra)  # fmt: skip
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


@dataclass(frozen=True, slots=True)
class BetTry:
    """One bet: on which node, when it was sent and answered, and the answer."""

    node: str
    user_id: int
    round: int
    sent: float
    answered: float
    reply: Message

    @property
    def ok(self) -> bool:
        return self.reply.get("t") == "bet_ok"


class Player:
    """One socket of one user on one node; every push kept as (arrival time, message)."""

    def __init__(self, ws: ClientConnection, node: str, user_id: int, welcome: Message) -> None:
        self.ws, self.node, self.user_id, self.welcome = ws, node, user_id, welcome
        self.pushes: list[tuple[float, Message]] = []
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def join(cls, port: int, node: str, user_id: int, since: Message | None = None) -> Player:
        """Authenticate (with ``since``: resuming the user channel after it) and subscribe to dice."""
        ws = await connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10)
        auth: Message = {"t": "auth", "id": "auth", "init_data": sign_init_data(TOKEN, user_id=user_id)}
        if since is not None:
            auth["since"] = since
        await ws.send(json.dumps(auth))
        while "ch" in (welcome := json.loads(await ws.recv())):
            pass
        assert welcome["t"] == "welcome", welcome
        player = cls(ws, node, user_id, welcome)
        subscribed = await player.request({"t": "subscribe", "game": "dice"})
        assert subscribed["t"] == "subscribed", subscribed
        return player

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                message = json.loads(frame)
                if "ch" in message:
                    self.pushes.append((time.monotonic(), message))
                elif (waiter := self._waiting.pop(str(message.get("id")), None)) is not None and not waiter.done():
                    waiter.set_result(message)

    async def request(self, message: Message, timeout: float = 15.0) -> Message:
        """Send ``message`` with an id of its own; its reply, or ``{"t": "timeout"}``."""
        request_id = f"r{next(self._ids)}"
        waiter = self._waiting[request_id] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps({**message, "id": request_id}))
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            self._waiting.pop(request_id, None)
            return {"t": "timeout"}

    def rounds(self, phase: str, after: float = 0.0) -> list[tuple[float, Message]]:
        """Round pushes of ``phase`` that arrived after ``after``."""
        return [(at, m) for at, m in self.pushes if at > after and m["t"] == "round" and m["phase"] == phase]

    def user_events(self) -> list[Message]:
        return [m for _, m in self.pushes if m["ch"] == "user"]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def gamble(player: Player, bets: list[BetTry], stop: asyncio.Event) -> None:
    """Bet 10 on every dice round ``player`` hears open, until ``stop``; every answer goes to ``bets``."""
    last = 0
    while not stop.is_set():
        opened = [m["round"] for _, m in player.rounds("betting") if m["round"] > last]
        if not opened:
            await asyncio.sleep(0.01)
            continue
        last = max(opened)
        key = f"{player.node}-{player.user_id}-{last}"
        sent = time.monotonic()
        reply = await player.request({"t": "bet", "game": "dice", "round": last, "amount": 10, "key": key,
                                      "params": {"target": 5000, "side": "over"}})  # fmt: skip
        bets.append(BetTry(player.node, player.user_id, last, sent, time.monotonic(), reply))


async def until(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``condition`` every 20 ms until it is true; the time it became so. Fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


async def assert_user_channel_whole(player: Player, port: int, timeout: float = 20.0) -> int:
    """The user channel as ``player``'s socket got it has every offset after its welcome once and in full:
    each offset at most once, none missing up to the channel's head (waiting for late ones, which the
    outbox sweeper relays), and a new socket resuming with ``since`` the welcome's offset replays the same
    events. Returns how many events the socket got."""
    events = player.user_events()
    offsets = [m["offset"] for m in events]
    assert len(offsets) == len(set(offsets)), f"user {player.user_id} on {player.node}: an event twice: {offsets}"
    start = {"offset": player.welcome["offset"], "epoch": player.welcome["epoch"]}
    resumed = await Player.join(port, player.node, player.user_id, since=start)
    try:
        head = resumed.welcome["offset"]
        expected = set(range(start["offset"] + 1, head + 1))
        assert head > start["offset"], f"user {player.user_id}: no event at all"
        await until(lambda: expected <= {m["offset"] for m in player.user_events()}, timeout,
                    f"user {player.user_id} on {player.node} gets every event up to offset {head}")  # fmt: skip
        got = {m["offset"]: m for m in player.user_events() if m["offset"] <= head}
        offsets = [m["offset"] for m in player.user_events()]
        assert len(offsets) == len(set(offsets)), f"user {player.user_id} on {player.node}: an event twice"
        assert resumed.welcome["recovered"] is True, resumed.welcome
        replayed = {m["offset"]: m for m in resumed.welcome["missed"]}
        assert set(replayed) == expected
        for offset, message in replayed.items():
            assert (message["t"], message.get("balance")) == (got[offset]["t"], got[offset].get("balance")), offset
        return len(got)
    finally:
        await resumed.close()


def assert_audit_clean(database_url: str, state: Path) -> None:
    """``croupier audit`` (the real command) passes on the database at ``database_url``."""
    env = clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=database_url, CROUPIER_DATA_DIR=str(state))
    report = subprocess.run([sys.executable, "-m", "server", "audit"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert report.returncode == 0 and "audit: OK" in report.stdout, report.stdout + report.stderr
