"""Several real node processes on one database (sharing events through Redis): graceful drain and driver failover."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import asyncpg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.auth import sign_init_data
from tests.services import EmbeddedRedis, clean_env, node_process, wait_ready

TOKEN = "1:abcdefghijklmnop"


def node_env(database_url: str, state: Path, redis: EmbeddedRedis | None = None) -> dict[str, str]:
    """Nodes sharing a database share events through ``redis`` (a node alone may use the in-process broker)."""
    return clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=database_url, CROUPIER_DATA_DIR=str(state),
                     CROUPIER_GAMES="dice", CROUPIER_BETTING_MS="30000", CROUPIER_SEED_CHAIN_LENGTH="200",
                     CROUPIER_WELCOME_CREDIT="100", **({"REDIS_URL": redis.url} if redis else {}))  # fmt: skip


async def open_round(conn: asyncpg.Connection, after: int = 0, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await conn.fetchval(
            "SELECT id FROM rounds WHERE game = 'dice' AND phase = 'betting' AND id > $1 ORDER BY id DESC LIMIT 1",
            after,
        )
        if found is not None:
            return int(found)
        await asyncio.sleep(0.05)
    raise AssertionError("no node opened a dice round")


async def bet_on(port: int, user_id: int, round_id: int) -> dict[str, object]:
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send(json.dumps({"t": "auth", "id": 0, "init_data": sign_init_data(TOKEN, user_id=user_id)}))
        assert json.loads(await ws.recv())["t"] == "welcome"
        await ws.send(json.dumps({"t": "bet", "id": 1, "game": "dice", "round": round_id, "amount": 30,
                                  "params": {"target": 5000, "side": "over"}, "key": "failover"}))  # fmt: skip
        while True:
            reply: dict[str, object] = json.loads(await ws.recv())
            if reply.get("id") == 1:
                return reply


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["drain", "kill"])
async def test_another_node_takes_over_the_rounds_and_settles_the_one_in_flight(
    empty_database: str, tmp_path: Path, stop: signal.Signals, redis: EmbeddedRedis
) -> None:
    env = node_env(empty_database, tmp_path / "state", redis)
    with node_process(env) as (first, first_port):
        await wait_ready(first_port)
        conn = await asyncpg.connect(empty_database)
        try:
            round_id = await open_round(conn)  # the first node drives dice
            with node_process(env) as (_, second_port):
                await wait_ready(second_port)  # the second stands by
                reply = await bet_on(second_port, 5150, round_id)
                assert reply["t"] == "bet_ok", reply
                started = time.monotonic()
                first.send_signal(stop)
                first.wait(15)
                takeover = await open_round(conn, after=round_id)
                elapsed = time.monotonic() - started
                assert elapsed < 3.0, f"took over after {elapsed:.1f} s"
                # The round in flight (still betting when its driver stopped) was voided and its bet refunded.
                assert await conn.fetchval("SELECT phase FROM rounds WHERE id = $1", round_id) == "voided"
                assert await conn.fetchval("SELECT status FROM bets WHERE round_id = $1", round_id) == "refunded"
                assert await conn.fetchval("SELECT balance FROM accounts WHERE user_id = 5150") == 100
                assert takeover > round_id
        finally:
            await conn.close()


async def test_sigterm_closes_sockets_with_1012_and_exits(empty_database: str, tmp_path: Path) -> None:
    with node_process(node_env(empty_database, tmp_path / "state")) as (process, port):
        await wait_ready(port)
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"t": "auth", "id": 0, "init_data": sign_init_data(TOKEN, user_id=77)}))
            assert json.loads(await ws.recv())["t"] == "welcome"
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1012  # "service restart": reconnect now (to another node) and resume
        assert process.wait(15) in (0, -signal.SIGTERM)


async def lease_holder(conn: asyncpg.Connection, game: str = "dice") -> str | None:
    holder: str | None = await conn.fetchval("SELECT holder FROM game_leases WHERE game = $1", game)
    return holder


async def test_drain_goes_unready_hands_the_game_over_then_closes_with_1012(
    empty_database: str, tmp_path: Path, redis: EmbeddedRedis
) -> None:
    import httpx

    env = node_env(empty_database, tmp_path / "state", redis)
    conn = await asyncpg.connect(empty_database)
    try:
        with node_process({**env, "CROUPIER_NODE_ID": "leaving", "CROUPIER_DRAIN_SECONDS": "2.5"}) as (first, port):
            await wait_ready(port)
            round_id = await open_round(conn)
            assert await lease_holder(conn) == "leaving"
            with node_process({**env, "CROUPIER_NODE_ID": "staying"}) as (_, other_port):
                await wait_ready(other_port)
                async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                    await ws.send(json.dumps({"t": "auth", "id": 0, "init_data": sign_init_data(TOKEN, user_id=78)}))
                    assert json.loads(await ws.recv())["t"] == "welcome"
                    first.send_signal(signal.SIGTERM)
                    started = time.monotonic()
                    async with httpx.AsyncClient() as client:
                        for _ in range(40):
                            reply = await client.get(f"http://127.0.0.1:{port}/readyz")
                            if reply.status_code == 503:
                                break
                            await asyncio.sleep(0.05)
                    assert (reply.status_code, reply.json()["status"]) == (503, "draining")
                    await ws.send(json.dumps({"t": "ping", "id": 1}))  # still served while draining
                    while (answer := json.loads(await ws.recv()))["t"] != "pong":
                        assert "ch" in answer, answer  # pushes (the welcome credit) may come first
                    # The game was handed over before the sockets close: the other node drives it now.
                    while await lease_holder(conn) != "staying":
                        assert time.monotonic() - started < 2.5, "the game was not handed over during the drain"
                        await asyncio.sleep(0.05)
                    await open_round(conn, after=round_id)
                    with pytest.raises(ConnectionClosed):
                        async with asyncio.timeout(10):
                            while True:
                                await ws.recv()
                    assert ws.close_code == 1012 and time.monotonic() - started >= 2.0
                assert first.wait(15) in (0, -signal.SIGTERM)
    finally:
        await conn.close()


async def test_drain_finishes_a_round_that_can_finish_in_time_before_handing_over(
    empty_database: str, tmp_path: Path, redis: EmbeddedRedis
) -> None:
    env = {**node_env(empty_database, tmp_path / "state", redis), "CROUPIER_BETTING_MS": "1500",
           "CROUPIER_HANDOVER_SECONDS": "5"}  # fmt: skip
    conn = await asyncpg.connect(empty_database)
    try:
        with node_process({**env, "CROUPIER_NODE_ID": "leaving"}) as (first, port):
            await wait_ready(port)
            with node_process({**env, "CROUPIER_NODE_ID": "staying"}) as (_, other_port):
                await wait_ready(other_port)
                round_id = await open_round(conn)
                reply = await bet_on(other_port, 5151, round_id)  # a bet through the other node
                for _ in range(3):  # the round found may have been about to close (1.5 s of betting, a busy machine)
                    if reply.get("code") != "betting_closed":
                        break
                    round_id = await open_round(conn, after=round_id)
                    reply = await bet_on(other_port, 5151, round_id)
                assert reply["t"] == "bet_ok", reply
                first.send_signal(signal.SIGTERM)
                assert first.wait(15) in (0, -signal.SIGTERM)
                # The round closed within the hand-over budget: the leaving node settled it by its roll.
                assert await conn.fetchval("SELECT phase FROM rounds WHERE id = $1", round_id) == "settled"
                assert await conn.fetchval("SELECT status FROM bets WHERE round_id = $1", round_id) in ("won", "lost")
                await open_round(conn, after=round_id)
                assert await lease_holder(conn) == "staying"
    finally:
        await conn.close()
