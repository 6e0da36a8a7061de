"""A real cluster: three ``croupier serve`` processes, one PostgreSQL, one Redis of the test's own.

Sockets spread over the nodes see the same rounds; a bet on one node updates the player's socket
on another; killing the round driver (SIGKILL) mid-round leaves rounds running on the others and
``croupier audit`` clean. Then the faults: Redis down for 10 s, and one node cut off from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from server.auth import sign_init_data
from tests.services import EmbeddedRedis, PartitionableProxy, clean_env, node_process, wait_ready

pytestmark = pytest.mark.integration
TOKEN = "1:abcdefghijklmnop"
Message = dict[str, Any]


def node_env(database_url: str, redis_url: str, state: Path, node_id: str, **extra: str) -> dict[str, str]:
    return clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=database_url, REDIS_URL=redis_url,
                     CROUPIER_DATA_DIR=str(state), CROUPIER_NODE_ID=node_id, CROUPIER_GAMES="dice",
                     CROUPIER_BETTING_MS="700", CROUPIER_ROUND_PAUSE_MS="100", CROUPIER_SEED_CHAIN_LENGTH="500",
                     CROUPIER_WELCOME_CREDIT="1000", **extra)  # fmt: skip


class Player:
    """One socket of one user on one node, remembering every push it got."""

    def __init__(self, ws: ClientConnection, user_id: int, welcome: Message) -> None:
        self.ws, self.user_id, self.welcome = ws, user_id, welcome
        self.pushes: list[Message] = []
        self._replies: asyncio.Queue[Message] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def join(cls, port: int, user_id: int, since: Message | None = None) -> Player:
        ws = await connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5)
        auth: Message = {"t": "auth", "id": "auth", "init_data": sign_init_data(TOKEN, user_id=user_id)}
        if since is not None:
            auth["since"] = since
        await ws.send(json.dumps(auth))
        while "ch" in (welcome := json.loads(await ws.recv())):
            pass
        assert welcome["t"] == "welcome", welcome
        return cls(ws, user_id, welcome)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                message = json.loads(frame)
                if "ch" in message:
                    self.pushes.append(message)
                else:
                    self._replies.put_nowait(message)

    async def request(self, message: Message, timeout: float = 10.0) -> Message:
        await self.ws.send(json.dumps(message))
        async with asyncio.timeout(timeout):
            return await self._replies.get()

    async def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 10.0, after: int = 0) -> Message:
        """The first push (from index ``after``) matching ``predicate``, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.pushes[after:]:
                if predicate(message):
                    return message
            await asyncio.sleep(0.02)
        raise AssertionError(f"user {self.user_id}: no matching push in {timeout} s; last: {self.pushes[-3:]}")

    async def next_betting(self, after_round: int = 0, timeout: float = 10.0) -> Message:
        """The next round to open betting after ``after_round``, as pushed from now on: its betting window
        has just opened (an earlier push may announce a round whose window closed while the test waited)."""
        return await self.wait_for(betting_after(after_round), timeout=timeout, after=len(self.pushes))

    def user_events(self) -> list[Message]:
        return [m for m in self.pushes if m["ch"] == "user"]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


def settled(round_id: int | None = None) -> Callable[[Message], bool]:
    return lambda m: m["t"] == "round" and m["phase"] == "settled" and (round_id is None or m["round"] == round_id)


def betting_after(round_id: int) -> Callable[[Message], bool]:
    return lambda m: m["t"] == "round" and m["phase"] == "betting" and m["round"] > round_id


@contextlib.asynccontextmanager
async def players(*joined: Player) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for player in joined:
            await player.close()


async def driver_of(conn: asyncpg.Connection) -> str | None:
    holder: str | None = await conn.fetchval("SELECT holder FROM game_leases WHERE game = 'dice'")
    return holder


async def bet(player: Player, round_id: int, key: str, amount: int = 10) -> Message:
    return await player.request({"t": "bet", "id": key, "game": "dice", "round": round_id, "amount": amount,
                                 "params": {"target": 5000, "side": "over"}, "key": key})  # fmt: skip


def assert_audit_clean(database_url: str, state: Path) -> None:
    """``croupier audit`` (the real command) passes on the cluster's database."""
    env = clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=database_url, CROUPIER_DATA_DIR=str(state))
    report = subprocess.run([sys.executable, "-m", "server", "audit"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert report.returncode == 0 and "audit: OK" in report.stdout, report.stdout + report.stderr


async def open_rounds_ever_overlapped(conn: asyncpg.Connection) -> int:
    """How many pairs of dice rounds were open (betting or running) at the same time."""
    overlaps: int = await conn.fetchval(
        "SELECT count(*) FROM rounds a JOIN rounds b ON a.game = b.game AND a.id < b.id "
        "WHERE a.game = 'dice' AND b.created_at < coalesce(a.settled_at, now())"
    )
    return overlaps


async def test_three_nodes_share_rounds_follow_the_player_and_survive_the_driver_being_killed(
    empty_database: str, redis: EmbeddedRedis, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    conn = await asyncpg.connect(empty_database)
    with contextlib.ExitStack() as stack:
        nodes = {}
        for name in ("a", "b", "c"):
            process, port = stack.enter_context(node_process(node_env(empty_database, redis.url, state, name)))
            await wait_ready(port)
            nodes[name] = (process, port)
        driver = await driver_of(conn)
        assert driver == "a"  # the first node up drives dice
        watchers = [await Player.join(nodes[name][1], 900 + i) for i, name in enumerate("abc")]
        on_b, on_c = await Player.join(nodes["b"][1], 777), await Player.join(nodes["c"][1], 777)
        async with players(*watchers, on_b, on_c):
            for watcher in watchers:
                assert (await watcher.request({"t": "subscribe", "id": 1, "game": "dice"}))["t"] == "subscribed"
            # Every node's sockets see the same rounds.
            first = await watchers[0].wait_for(settled())
            for watcher in watchers[1:]:
                await watcher.wait_for(settled(first["round"]))
            # A bet on node B reaches the same player's socket on node C.
            opening = await watchers[1].next_betting(first["round"])
            placed = await bet(on_b, opening["round"], "cluster-1")
            assert placed["t"] == "bet_ok", placed
            pushed = await on_c.wait_for(lambda m: m["t"] == "balance" and m["ref"] == placed["bet"]["id"])
            assert (pushed["delta"], pushed["balance"]) == (-10, placed["balance"])

            # Mid-round (still betting, with the bet in it), the driver is killed.
            in_flight = await watchers[1].next_betting(opening["round"])
            placed = await bet(on_b, in_flight["round"], "cluster-2")
            assert placed["t"] == "bet_ok", placed
            nodes["a"][0].send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            nodes["a"][0].wait(10)
            # B or C takes dice over and the rounds go on for the sockets on B and C.
            nxt = await watchers[1].wait_for(betting_after(in_flight["round"]), timeout=10)
            assert time.monotonic() - killed_at < 5.0
            assert await driver_of(conn) in ("b", "c")
            await watchers[2].wait_for(settled(nxt["round"]), timeout=10)
            await watchers[1].wait_for(settled(nxt["round"]), timeout=10)
            # The round in flight was refunded, and the player heard of it on both sockets.
            assert await conn.fetchval("SELECT phase FROM rounds WHERE id = $1", in_flight["round"]) == "voided"
            for socket in (on_b, on_c):
                refund = await socket.wait_for(lambda m: m["t"] == "bet_settled" and m["bet"] == placed["bet"]["id"])
                assert refund["payout"] == 10
            offsets = [m["offset"] for m in on_c.user_events()]
            assert len(offsets) == len(set(offsets))  # nothing twice
    await conn.close()
    assert_audit_clean(empty_database, state)


async def test_redis_down_for_10_s_nodes_keep_serving_and_everything_resumes(
    empty_database: str, redis: EmbeddedRedis, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with contextlib.ExitStack() as stack:
        _, port_a = stack.enter_context(node_process(node_env(empty_database, redis.url, state, "a")))
        await wait_ready(port_a)  # the first node up drives dice
        _, port_b = stack.enter_context(node_process(node_env(empty_database, redis.url, state, "b")))
        await wait_ready(port_b)
        watcher_a, watcher_b = await Player.join(port_a, 801), await Player.join(port_b, 802)
        gambler, gambler_elsewhere = await Player.join(port_a, 803), await Player.join(port_b, 803)
        async with players(watcher_a, watcher_b, gambler, gambler_elsewhere):
            for watcher in (watcher_a, watcher_b):
                await watcher.request({"t": "subscribe", "id": 1, "game": "dice"})
            last_seen_b = await watcher_b.wait_for(settled())
            await watcher_a.wait_for(settled(last_seen_b["round"]))

            redis.stop()
            down_at = time.monotonic()
            seen_by_b = len(watcher_b.pushes)
            bets: list[Message] = []
            opened = last_seen_b["round"]
            while time.monotonic() - down_at < 10:
                # Node A (the driver) keeps running rounds for its own sockets and committing bets.
                round_event = await watcher_a.next_betting(opened, timeout=5)
                opened = round_event["round"]
                placed = await bet(gambler, opened, f"outage-{opened}")
                assert placed["t"] == "bet_ok", placed
                bets.append(placed)
                await gambler.wait_for(lambda m, p=placed: m["t"] == "balance" and m["ref"] == p["bet"]["id"])
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port_b}/readyz")).status_code == 503
            assert len(bets) >= 5
            redis.start()  # same port, empty: the history of the outage is gone

            # Node B's socket gets live events again ...
            await watcher_b.wait_for(betting_after(opened), timeout=10, after=seen_by_b)
            # ... and every user event committed during the outage reaches the player's socket on B (the
            # outbox sweeper relays what never got through), each once.
            for placed in bets:
                await gambler_elsewhere.wait_for(
                    lambda m, p=placed: m["t"] == "balance" and m["ref"] == p["bet"]["id"], timeout=15
                )
            # Each once (late ones may come out of order: a client applies the highest offset's balance).
            offsets = [m["offset"] for m in gambler_elsewhere.user_events()]
            assert len(offsets) == len(set(offsets))
            # The watcher on B resumes: missed events if still kept, else a snapshot to start again from.
            since = {"offset": last_seen_b["offset"], "epoch": last_seen_b["epoch"]}
            await watcher_b.request({"t": "unsubscribe", "id": 2, "game": "dice"})
            resumed = await watcher_b.request({"t": "subscribe", "id": 3, "game": "dice", "since": since})
            assert resumed["t"] == "subscribed"
            if resumed["recovered"]:
                offsets = [e["offset"] for e in resumed["missed"]]
                assert offsets == list(range(since["offset"] + 1, resumed["offset"] + 1))
            else:
                assert resumed["missed"] == [] and resumed["round"] is not None
    assert_audit_clean(empty_database, state)


async def test_a_node_cut_off_from_redis_never_makes_a_second_driver(
    empty_database: str, redis: EmbeddedRedis, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    proxy = PartitionableProxy(redis.port)
    await proxy.start()
    conn = await asyncpg.connect(empty_database)
    try:
        cut_off_url = f"redis://127.0.0.1:{proxy.port}/0"
        with node_process(node_env(empty_database, cut_off_url, state, "a")) as (_, port_a):
            await wait_ready(port_a)
            with node_process(node_env(empty_database, redis.url, state, "b")) as (_, port_b):
                await wait_ready(port_b)
                assert await driver_of(conn) == "a"
                token = await conn.fetchval("SELECT token FROM game_leases WHERE game = 'dice'")
                watcher = await Player.join(port_b, 811)
                async with players(watcher):
                    await watcher.request({"t": "subscribe", "id": 1, "game": "dice"})
                    before = await watcher.wait_for(settled())
                    proxy.partition()  # node A (the driver) no longer reaches Redis; PostgreSQL it still does
                    cut_at = time.monotonic()
                    while time.monotonic() - cut_at < 8:
                        assert await driver_of(conn) == "a"  # B never takes the game: A still holds it
                        await asyncio.sleep(0.2)
                    settled_during = await conn.fetchval(
                        "SELECT count(*) FROM rounds WHERE game = 'dice' AND id > $1 AND phase = 'settled'",
                        before["round"],
                    )
                    assert settled_during >= 3  # A kept driving, alone
                    proxy.heal()
                    await watcher.wait_for(betting_after(before["round"] + settled_during), timeout=15)
                assert await conn.fetchval("SELECT token FROM game_leases WHERE game = 'dice'") == token
                assert await open_rounds_ever_overlapped(conn) == 0
                drivers = await conn.fetchval("SELECT count(DISTINCT driver_token) FROM rounds WHERE game = 'dice'")
                assert drivers == 1
    finally:
        await conn.close()
        await proxy.close()
    assert_audit_clean(empty_database, state)
