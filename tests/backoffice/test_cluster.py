"""The back office across two nodes sharing PostgreSQL and Redis: a block made on one node closes the
user's sockets on the other; a void asked of a node that does not drive the game is made by the one that
does; the cluster view lists both nodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from websockets.exceptions import ConnectionClosed

from protocol import CloseCode
from server.db.migrations import migrate
from server.ledger import Ledger, audit
from tests.backoffice.conftest import ADMIN_KEYS, admin, betting_round, dice_bet, player
from tests.conftest import RunningNode, StartNode, make_settings, serve
from tests.edge.client import closed_with, open_socket, recv, request
from tests.edge.client import init_data as signed_init_data


async def test_a_block_on_one_node_closes_the_users_sockets_on_the_other_and_refuses_their_auth(
    start_node: StartNode, redis_url: str, bank: Ledger
) -> None:
    async with start_node(redis_url=redis_url, node_id="office-a", admin_keys=ADMIN_KEYS) as a, \
            start_node(redis_url=redis_url, node_id="office-b") as b:  # fmt: skip
        ws, user_id = await player(b, bank, 50)
        bystander, _ = await player(b, bank)
        async with admin(a) as client:
            blocked = await client.post(f"/users/{user_id}/block", json={"reason": "multi-accounting"})
            assert blocked.status_code == 200, blocked.text
            assert await closed_with(ws) == CloseCode.FORBIDDEN
            assert (await request(bystander, {"t": "ping", "id": 1}))["t"] == "pong"
            for node in (a, b):
                refused = await open_socket(node)
                reply = await request(refused, {"t": "auth", "id": 1, "init_data": signed_init_data(user_id)})
                assert reply["code"] == "forbidden" and await closed_with(refused) == CloseCode.FORBIDDEN
            lifted = await client.post(f"/users/{user_id}/unblock", json={"reason": "cleared"})
            assert lifted.status_code == 200 and lifted.json()["restriction"] is None
            back, welcome = await authed_once_lifted(b, user_id)
            assert welcome["balance"] == 50
            view = (await client.get("/cluster")).json()
        nodes = {node["node"]: node for node in view["nodes"]}
        assert {"office-a", "office-b"} <= set(nodes) and nodes["office-b"]["answered"]
        assert nodes["office-b"]["sockets"] >= 2 and nodes["office-a"]["driving"] and not nodes["office-b"]["driving"]
        assert view["drivers"]["dice"]["driving"] == ["office-a"]
        for sock in (back, bystander):
            await sock.close()


async def authed_once_lifted(node: RunningNode, user_id: int) -> tuple[Any, dict[str, Any]]:
    """Authenticate, within a moment of the unblock: its ``lift`` reaches the other node through Redis (a
    socket admitted before it arrives is closed by the block's hold)."""
    for _ in range(50):
        ws = await open_socket(node)
        try:
            reply = await request(ws, {"t": "auth", "id": 1, "init_data": signed_init_data(user_id)})
            assert reply["t"] == "welcome", reply  # the database says the account is not blocked
            with contextlib.suppress(TimeoutError):
                await recv(ws, timeout=0.1)  # a close would come now
            return ws, reply
        except ConnectionClosed:
            assert ws.close_code == CloseCode.FORBIDDEN
        await asyncio.sleep(0.05)
    raise AssertionError("the unblock never reached the node")


@contextlib.asynccontextmanager
async def own_database(empty_database: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield empty_database


async def test_a_void_asked_of_another_node_refunds_every_bet_and_the_books_balance(
    empty_database: str, redis_url: str, tmp_path: Path
) -> None:
    """On a database of its own, so ``croupier audit`` over it says something of this test alone."""
    async with own_database(empty_database) as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        bank = Ledger(pool)
        await bank.start()
        driver = make_settings(url, tmp_path / "a", redis_url=redis_url, node_id="void-a", admin_keys=ADMIN_KEYS)
        other = make_settings(url, tmp_path / "b", redis_url=redis_url, node_id="void-b", admin_keys=ADMIN_KEYS)
        try:
            async with serve(driver) as a, serve(other) as b:
                await _void_and_check(a, b, bank, pool)
        finally:
            await bank.close()
            await pool.close()


async def _void_and_check(a: RunningNode, b: RunningNode, bank: Ledger, pool: asyncpg.Pool) -> None:
    players = [await player(b, bank, 1000) for _ in range(3)]
    watcher, _ = await player(a, bank)
    round_id = await betting_round(players[0][0])
    await request(watcher, {"t": "subscribe", "id": "w", "game": "dice"})
    for i, (ws, _) in enumerate(players):
        for n in range(3):
            assert (await request(ws, dice_bet(n, round_id, 10 * (i + 1), key=f"void-{n}")))["t"] == "bet_ok"
    async with admin(b) as client:  # b does not drive dice: the void goes to a
        before = (await client.get(f"/rounds/{round_id}")).json()
        assert before["bets"]["count"] == 9 and before["bets"]["total"] == 180 and before["seed"] is None
        voided = await client.post(f"/rounds/{round_id}/void", json={"reason": "wrong odds configured"})
        assert voided.status_code == 200, voided.text
        assert voided.json() == {"game": "dice", "round": round_id, "phase": "voided", "was": "betting",
                                 "refunded": 9, "total": 180}  # fmt: skip
        after = (await client.get(f"/rounds/{round_id}")).json()
        assert after["phase"] == "voided" and after["bets"]["refunded"] == 9 and after["bets"]["open"] == 0
        assert after["seed"] is not None  # revealed with the voided round, as recovery does
        again = await client.post(f"/rounds/{round_id}/void", json={"reason": "twice"})
        assert again.status_code == 409
        log = (await client.get("/actions", params={"target": f"round:{round_id}"})).json()["items"]
    assert [(e["action"], e["before"]["phase"], e["after"]["refunded"]) for e in log] == [("void", "betting", 9)]
    event = await recv(watcher)
    while not (event["t"] == "round" and event["round"] == round_id and event["phase"] == "settled"):
        event = await recv(watcher)
    assert event["voided"] is True and event["seed"] == after["seed"]
    for ws, user_id in players:
        assert (await request(ws, {"t": "balance", "id": "b"}))["balance"] == 1000, user_id
    assert await betting_round(watcher) > round_id  # the driver went on with the next round
    async with pool.acquire() as conn:
        report = await audit(conn)
    assert report.ok, report.summary()
    for ws, _ in (*players, (watcher, 0)):
        await ws.close()
