"""Recovery: the next driver finishes a round its predecessor left, by the game's rule.

First on a clock the test moves (an engine closed mid-round, another taking over), then with real
node processes killed with -9 on a database of the test's own: no acknowledged bet is left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.auth import sign_init_data
from server.games.crash import Crash
from server.ledger import audit
from server.rounds.fair import FairRng
from tests.rounds.conftest import OpenTable, fixed_crash
from tests.services import clean_env, node_process, wait_ready

TOKEN = "1:abcdefghijklmnop"
# A generous crash table: every crash point is at least 2.00x (reached after 693 ms), so the test knows
# the curve passes 1.10x before the round can end; the curve climbs fast so a resumed round ends soon.
GENEROUS = {"house_edge_bp": -10_000, "growth_per_ms": 0.001}


async def test_a_round_left_betting_is_voided_and_refunded_by_the_next_driver(open_table: OpenTable) -> None:
    async with open_table(fixed_crash(300)) as table:
        first = await table.engine("node-a")
        betting = await table.events.round("betting")
        round_id = betting["round"]
        users = [await table.player() for _ in range(2)]
        bets = [await table.bet(user, round_id, 100) for user in users]
        await first.close()  # the driver stops while the round takes bets
        await table.engine("node-b")
        settled = await table.events.round("settled")
        following = await table.events.round("betting")
    assert (settled["round"], settled["voided"], settled["offset"]) == (round_id, True, 1)  # a new epoch
    assert settled["epoch"] != betting["epoch"] and following["round"] > round_id
    assert await table.phase(round_id) == "voided"
    assert await table.bets(round_id) == {bet: ("refunded", None, 100) for bet in bets}
    assert [await table.balance(user) for user in users] == [1000, 1000]
    assert await table.pool.fetchval("SELECT holder FROM game_leases WHERE game = $1", table.name) == "node-b"


async def test_a_running_crash_round_is_resumed_from_its_start_by_the_next_driver(open_table: OpenTable) -> None:
    game = fixed_crash(300)
    async with open_table(game) as table:
        first = await table.engine("node-a")
        betting = await table.events.round("betting")
        round_id = betting["round"]
        reached, at_point, stays, by_hand, later = [await table.player() for _ in range(5)]
        bets = {
            reached: await table.bet(reached, round_id, 100, auto_cashout=110),  # passed before the driver stops
            at_point: await table.bet(at_point, round_id, 100, auto_cashout=300),  # the round crashes there first
            stays: await table.bet(stays, round_id, 100),  # never cashes out
            by_hand: await table.bet(by_hand, round_id, 100),  # cashes out on node-a
            later: await table.bet(later, round_id, 100),  # cashes out on node-b, once the round goes on
        }
        running = await table.close_betting(betting)
        await table.at(running, 500)
        await table.events.tick()
        assert (await first.action(table.name, round_id, by_hand, "cashout", {}))["multiplier"] == 164
        await first.close()  # the driver stops mid-round, 500 ms after the start
        assert await table.phase(round_id) == "running"
        second = await table.engine("node-b")
        resumed = await table.events.round("running")
        assert resumed["started_at"] == running["started_at"] and resumed["epoch"] != running["epoch"]
        assert (await table.events.tick())["multiplier"] == 164  # where the curve is now: nothing restarted
        await table.at(running, 700)
        await table.events.tick()
        assert (await second.action(table.name, round_id, later, "cashout", {}))["multiplier"] == 201
        await table.at(running, game.elapsed_for(300))
        settled = await table.events.round("settled")
    assert settled["outcome"] == {"crash_point": 300} and settled["epoch"] == resumed["epoch"]
    assert await table.bets(round_id) == {
        bets[reached]: ("won", None, 110),
        bets[at_point]: ("lost", None, 0),
        bets[stays]: ("lost", None, 0),
        bets[by_hand]: ("won", 164, 164),
        bets[later]: ("won", 201, 201),
    }


def node_env(database_url: str, state: Path, **extra: str) -> dict[str, str]:
    return clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=database_url, CROUPIER_DATA_DIR=str(state),
                     CROUPIER_SEED_CHAIN_LENGTH="200", CROUPIER_WELCOME_CREDIT="1000", CROUPIER_ROUND_PAUSE_MS="0",
                     **extra)  # fmt: skip


@contextlib.asynccontextmanager
async def player(port: int, user_id: int) -> AsyncIterator[ClientConnection]:
    async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
        await ws.send(json.dumps({"t": "auth", "id": 0, "init_data": sign_init_data(TOKEN, user_id=user_id)}))
        assert json.loads(await ws.recv())["t"] == "welcome"
        yield ws


async def reply_to(ws: ClientConnection, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    async with asyncio.timeout(timeout):
        while True:
            reply: dict[str, Any] = json.loads(await ws.recv())
            if reply.get("id") == message["id"]:
                return reply


async def event(ws: ClientConnection, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if predicate(message):
                return message


async def phase_of(conn: asyncpg.Connection, round_id: int, wanted: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while await conn.fetchval("SELECT phase FROM rounds WHERE id = $1", round_id) != wanted:
        assert time.monotonic() < deadline, f"round {round_id} never became {wanted}"
        await asyncio.sleep(0.05)


async def crash_point(conn: asyncpg.Connection, round_id: int, salt: str) -> int:
    """The crash point of a round taking bets, from its seed (read from the database) and its salt."""
    seed = await conn.fetchval(
        "SELECT s.seed FROM rounds r JOIN seeds s ON s.chain_id = r.chain_id AND s.idx = r.chain_idx WHERE r.id = $1",
        round_id,
    )
    point: int = Crash(GENEROUS).outcome(FairRng(seed, salt, "crash"))["crash_point"]
    return point


async def test_a_crash_round_whose_driver_was_killed_pays_what_the_curve_reached(
    empty_database: str, tmp_path: Path
) -> None:
    env = node_env(empty_database, tmp_path / "state", CROUPIER_GAMES="crash", CROUPIER_BETTING_MS="1500",
                   CROUPIER_GAME_PARAMS=json.dumps({"crash": GENEROUS}))  # fmt: skip
    conn = await asyncpg.connect(empty_database)
    users = [7101, 7102, 7103, 7104]
    try:
        with node_process(env) as (driver, port):
            await wait_ready(port)
            async with contextlib.AsyncExitStack() as stack:
                sockets = [await stack.enter_async_context(player(port, user)) for user in users]
                watcher = sockets[3]
                await reply_to(watcher, {"t": "subscribe", "id": "s", "game": "crash"})
                # A round whose salt is known while it takes bets: not its chain's first (whose betting fixes it).
                betting = await event(watcher, lambda m: m["t"] == "round" and m["phase"] == "betting"
                                      and m["salt"] is not None
                                      and m["closes_at"] - time.time() * 1000 > 700)  # fmt: skip
                round_id = betting["round"]
                point = await crash_point(conn, round_id, betting["salt"])
                autos = [110, point, None, None]  # reached; at the crash point (lost); no exit; cashes out by hand
                for ws, auto in zip(sockets, autos, strict=True):
                    params = {} if auto is None else {"auto_cashout": auto}
                    placed = await reply_to(ws, {"t": "bet", "id": "b", "game": "crash", "round": round_id,
                                                 "amount": 100, "params": params})  # fmt: skip
                    assert placed["t"] == "bet_ok", placed
                await event(watcher, lambda m: m["t"] == "tick" and m["multiplier"] >= 115)
                cashed = await reply_to(watcher, {"t": "action", "id": "c", "game": "crash", "round": round_id,
                                                  "action": "cashout"})  # fmt: skip
                assert cashed["t"] == "action_ok", cashed
                manual = cashed["result"]["multiplier"]
                driver.kill()  # -9, mid-round: nothing of the engine runs after this
                driver.wait()
        assert await conn.fetchval("SELECT phase FROM rounds WHERE id = $1", round_id) == "running"
        with node_process(env) as (_, port):  # the next driver
            await wait_ready(port)
            await phase_of(conn, round_id, "settled")
        bets = {r["user_id"]: (r["status"], r["payout"]) for r in await conn.fetch(
            "SELECT user_id, status, payout FROM bets WHERE round_id = $1", round_id)}  # fmt: skip
        assert bets == {
            7101: ("won", 110),  # auto cash-out at 1.10x: the curve passed it before the driver died
            7102: ("lost", 0),  # auto cash-out at the crash point itself: the round crashes there first
            7103: ("lost", 0),  # never cashed out: lost when the resumed round crashed
            7104: ("won", manual),  # the recorded cash-out
        }
        for user, (_, payout) in bets.items():
            assert await conn.fetchval("SELECT a.balance FROM accounts a WHERE a.user_id = $1", user) == 900 + payout
        report = await audit(conn)
        assert report.ok, report.summary()
    finally:
        await conn.close()


async def test_bets_committed_while_the_next_driver_recovers_are_never_left_open(
    empty_database: str, redis_url: str, tmp_path: Path
) -> None:
    env = node_env(empty_database, tmp_path / "state", CROUPIER_GAMES="dice", CROUPIER_BETTING_MS="30000",
                   REDIS_URL=redis_url)  # fmt: skip
    conn = await asyncpg.connect(empty_database)
    acked: list[int] = []
    try:
        with node_process({**env, "CROUPIER_NODE_ID": "driver"}) as (driver, driver_port):
            await wait_ready(driver_port)
            with node_process({**env, "CROUPIER_NODE_ID": "other"}) as (_, port):
                await wait_ready(port)
                round_id = await conn.fetchval("SELECT id FROM rounds WHERE game = 'dice' AND phase = 'betting'")
                stop = asyncio.Event()

                async def bettor(user: int) -> None:
                    async with player(port, user) as ws:
                        n = 0
                        while not stop.is_set():
                            n += 1
                            reply = await reply_to(ws, {"t": "bet", "id": n, "game": "dice", "round": round_id,
                                                        "amount": 1, "params": {"target": 5000, "side": "over"},
                                                        "key": f"k{n}"})  # fmt: skip
                            if reply["t"] == "bet_ok":
                                acked.append(reply["bet"]["id"])
                            else:
                                assert reply["code"] in ("betting_closed", "round_mismatch"), reply

                async def killer() -> None:
                    await asyncio.sleep(0.5)
                    driver.kill()
                    driver.wait()
                    # Bets go on through the other node while it takes the game over and recovers the round.
                    await phase_of(conn, round_id, "voided", timeout=15)
                    await asyncio.sleep(0.3)
                    stop.set()

                try:
                    await asyncio.gather(killer(), *(bettor(8000 + i) for i in range(12)))
                except ConnectionClosed as exc:
                    raise AssertionError(f"a bettor's socket closed: {exc}") from exc
        assert acked, "no bet was acknowledged"
        statuses = dict(await conn.fetch("SELECT status, count(*) FROM bets WHERE round_id = $1 GROUP BY status",
                                         round_id))  # fmt: skip
        assert statuses == {"refunded": len(acked)}, statuses
        report = await audit(conn)
        assert report.ok, report.summary()
    finally:
        await conn.close()
