"""Bets and balances over real sockets: validation, idempotency, pushes, faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.ledger import Ledger, audit
from tests.conftest import RunningNode, StartNode, make_settings, serve
from tests.edge.client import authed, recv, request
from tests.edge.client import funded as funded_socket
from tests.ledger.conftest import next_user_id


async def funded(node: RunningNode, bank: Ledger, amount: int) -> tuple[Any, int]:
    """A new user's authenticated socket with ``amount`` in the wallet."""
    user_id = next_user_id()
    ws, _ = await funded_socket(node, bank, user_id, amount, f"test-funding-{user_id}")
    return ws, user_id


ROUND = {"dice": 0}


async def dice_round(ws: Any) -> int:
    """The dice round taking bets now, from a subscribe snapshot (also remembered for bet())."""
    for _ in range(100):  # a node that just started opens its first round a moment later
        reply = await request(ws, {"t": "subscribe", "id": "sub", "game": "dice"})
        await request(ws, {"t": "unsubscribe", "id": "unsub", "game": "dice"})
        if reply["round"] is not None and reply["round"]["phase"] == "betting":
            ROUND["dice"] = reply["round"]["round"]
            return ROUND["dice"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no dice round is taking bets: {reply}")


def bet(request_id: object, amount: object = 10, **extra: object) -> dict[str, object]:
    return {"t": "bet", "id": request_id, "game": "dice", "round": ROUND["dice"], "amount": amount,
            "params": {"target": 5000, "side": "over"}, **extra}  # fmt: skip


async def balance_of(ws: object) -> int:
    reply = await request(ws, {"t": "balance", "id": "bal"})  # type: ignore[arg-type]
    return int(reply["balance"])


async def test_bet_ok_then_balance_pushed_to_every_socket_of_the_user(
    node_server: RunningNode, db: asyncpg.Connection, bank: Ledger
) -> None:
    ws, user_id = await funded(node_server, bank, 100)
    await dice_round(ws)
    second, _ = await authed(node_server, user_id)
    other_user, _ = await authed(node_server, next_user_id())
    reply = await request(ws, bet(1, 30, key="first"))
    assert reply["t"] == "bet_ok" and reply["id"] == 1 and reply["balance"] == 70
    assert reply["bet"]["amount"] == 30 and reply["bet"]["status"] == "accepted"
    assert reply["bet"]["params"] == {"target": 5000, "side": "over"} and reply["bet"]["round"] == ROUND["dice"]
    push = await recv(ws)
    assert push["t"] == "balance" and push["ch"] == "user" and "id" not in push
    assert (push["balance"], push["delta"], push["reason"], push["ref"]) == (70, -30, "bet", reply["bet"]["id"])
    assert isinstance(push["offset"], int) and isinstance(push["epoch"], str)
    assert await recv(second) == push
    with pytest.raises(TimeoutError):
        await recv(other_user, timeout=0.2)
    assert await balance_of(ws) == 70
    for sock in (ws, second, other_user):
        await sock.close()  # type: ignore[attr-defined]


async def test_welcome_carries_the_balance(node_server: RunningNode, db: asyncpg.Connection, bank: Ledger) -> None:
    ws, user_id = await funded(node_server, bank, 42)
    await dice_round(ws)
    await ws.close()  # type: ignore[attr-defined]
    again, welcome = await authed(node_server, user_id)
    assert welcome["balance"] == 42
    await again.close()


@pytest.mark.parametrize(
    ("amount", "extra", "code", "field"),
    [
        (0, {}, "bad_request", "amount"),
        (-5, {}, "bad_request", "amount"),
        (1.5, {}, "bad_request", "amount"),
        ("10", {}, "bad_request", "amount"),
        (2**53 + 1, {}, "bad_request", "amount"),
        (10, {"key": "k" * 65}, "bad_request", "key"),
        (10, {"game": "poker"}, "unknown_game", "game"),
        (10, {"round": 10**9}, "round_mismatch", "round"),
        (10, {"round": "one"}, "bad_request", "round"),
        (10, {"params": {"pad": "x" * 600}}, "invalid_bet", "params"),
        (10, {"params": [1]}, "bad_request", "params"),
        (2_000_000, {}, "invalid_bet", "amount"),
        (101, {}, "insufficient_funds", None),
    ],
)
async def test_bad_bets_are_refused_and_charge_nothing(
    node_server: RunningNode, db: asyncpg.Connection, bank: Ledger, amount: object, extra: dict[str, object], code: str,
    field: str | None,
) -> None:  # fmt: skip
    ws, user_id = await funded(node_server, bank, 100)
    await dice_round(ws)
    error = await request(ws, bet(7, amount, **extra))
    assert (error["t"], error["code"], error["id"]) == ("error", code, 7)
    if field is not None:
        assert error["field"] == field
    assert await balance_of(ws) == 100
    assert await db.fetchval("SELECT count(*) FROM bets WHERE user_id = $1", user_id) == 0
    await ws.close()  # type: ignore[attr-defined]


async def test_min_bet_is_enforced(start_node: StartNode, db: asyncpg.Connection, bank: Ledger) -> None:
    async with start_node(min_bet=5) as node:
        ws, _ = await funded(node, bank, 100)
        await dice_round(ws)
        error = await request(ws, bet(1, 4))
        assert (error["code"], error["field"]) == ("invalid_bet", "amount") and "minimum" in error["message"]
        await ws.close()  # type: ignore[attr-defined]


async def test_retry_with_the_same_key_on_another_socket_charges_once(
    node_server: RunningNode, db: asyncpg.Connection, bank: Ledger
) -> None:
    ws, user_id = await funded(node_server, bank, 100)
    await dice_round(ws)
    first = await request(ws, bet(1, 10, key="retry-me"))
    assert (await recv(ws))["t"] == "balance"
    other, _ = await authed(node_server, user_id)
    again = await request(other, bet(2, 10, key="retry-me"))
    assert again["t"] == "bet_ok" and again["bet"] == first["bet"] and again["balance"] == 90
    conflict = await request(other, bet(3, 11, key="retry-me"))
    assert conflict["code"] == "idempotency_conflict"
    assert await balance_of(other) == 90
    with pytest.raises(TimeoutError):  # a replay changes nothing, so nothing is pushed
        await recv(ws, timeout=0.2)
    await ws.close()  # type: ignore[attr-defined]
    await other.close()


async def test_reply_lost_in_a_disconnect_is_recovered_by_retrying_the_key(
    node_server: RunningNode, db: asyncpg.Connection, bank: Ledger
) -> None:
    ws, user_id = await funded(node_server, bank, 100)
    await dice_round(ws)
    await ws.send(json.dumps(bet(1, 25, key="lost-reply")))  # type: ignore[attr-defined]
    await ws.close()  # type: ignore[attr-defined]  # gone before the reply could arrive
    retry, _ = await authed(node_server, user_id)
    reply = await request(retry, bet(1, 25, key="lost-reply"))
    assert reply["t"] == "bet_ok" and reply["balance"] == 75
    assert await db.fetchval("SELECT count(*) FROM bets WHERE user_id = $1", user_id) == 1
    assert await balance_of(retry) == 75
    await retry.close()


async def test_concurrent_bets_and_retries_from_two_nodes_then_audit(
    start_node: StartNode, db: asyncpg.Connection, bank: Ledger, redis_url: str
) -> None:
    # Two nodes on one database and one Redis: one drives the rounds, the other follows them.
    async with start_node(redis_url=redis_url) as node_a, start_node(redis_url=redis_url) as node_b:
        ws, user_id = await funded(node_a, bank, 500)
        await dice_round(ws)
        sockets = [ws] + [(await authed(node, user_id))[0] for node in (node_a, node_b, node_b)]

        async def bettor(sock: object, offset: int) -> list[dict[str, object]]:
            replies = []
            for i in range(40):
                key = f"k{(i + offset) % 60}"  # overlapping keys: retries race across sockets and nodes
                await sock.send(json.dumps(bet(i, 10, key=key)))  # type: ignore[attr-defined]
                while True:
                    message = await recv(sock)  # type: ignore[arg-type]
                    if message.get("id") == i:
                        replies.append(message)
                        break
            return replies

        results = await asyncio.gather(*(bettor(s, n * 10) for n, s in enumerate(sockets)))
        replies = [r for rs in results for r in rs]
        assert {r["t"] for r in replies} <= {"bet_ok", "error"}
        assert {r["code"] for r in replies if r["t"] == "error"} <= {"insufficient_funds"}
        accepted = {r["bet"]["id"] for r in replies if r["t"] == "bet_ok"}  # type: ignore[index]
        assert len(accepted) == await db.fetchval("SELECT count(*) FROM bets WHERE user_id = $1", user_id) <= 50
        final = await balance_of(sockets[0])
        assert final == 500 - 10 * len(accepted) >= 0
        report = await audit(db)
        assert report.ok, report.summary()
        for sock in sockets:
            await sock.close()  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def own_postgres() -> AsyncIterator[tuple[str, object]]:
    """A PostgreSQL this test may stop and start (the suite's shared one must stay up)."""
    from server.db.embedded import EmbeddedPostgres
    from tests.services import world_traversable_tempdir

    root = world_traversable_tempdir("croupier-outage-")
    server = EmbeddedPostgres(root / "pg", fsync=False)
    try:
        yield server.start(), server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)  # its data directory, about 40 MB


async def test_postgres_outage_answers_unavailable_keeps_sockets_and_recovers(tmp_path: Path) -> None:
    async with own_postgres() as (dsn, server), serve(make_settings(dsn, tmp_path, welcome_credit=100)) as node:
        ws, welcome = await authed(node, 4242)
        assert welcome["balance"] == 100
        await dice_round(ws)
        server.stop()  # type: ignore[attr-defined]
        error = await request(
            ws,
            bet(1, 10, key="during-outage"),
        )
        assert (error["code"], error["id"]) == ("unavailable", 1)
        assert (await request(ws, {"t": "ping", "id": 2}))["t"] == "pong"  # the socket stays
        # The node knows the balance without the database (read at sign-in, every change since applied).
        assert (await request(ws, {"t": "balance", "id": 3}))["balance"] == 100
        server.start()  # type: ignore[attr-defined]
        for _ in range(50):
            reply = await request(ws, bet(4, 10, key="during-outage"))
            if reply["t"] == "bet_ok":
                break
            await asyncio.sleep(0.1)
        assert reply["t"] == "bet_ok" and reply["balance"] == 90  # nothing was charged by the failed try
        await ws.close()
