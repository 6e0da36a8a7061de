"""A player's own limits over real sockets: ``limits``, ``set_limit`` and ``exclude``; bets refused with the
limit's reset time; a loss limit raced from two nodes; the session time limit's sign-out and break."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import asyncpg
import pytest

from server.ledger import Ledger
from tests.conftest import RunningNode, StartNode
from tests.edge.client import authed, closed_with, init_data, open_socket, recv, request
from tests.ledger.conftest import next_user_id
from tests.players.test_history import betting_round

pytestmark = pytest.mark.integration

JSON = dict[str, Any]
DICE = {"target": 5000, "side": "over"}


def bet(round_id: int, amount: int, key: str) -> JSON:
    return {"t": "bet", "id": key, "game": "dice", "round": round_id, "amount": amount, "params": DICE, "key": key}


async def test_limits_are_set_shown_and_refuse_a_bet_with_their_reset_time(
    node_server: RunningNode, bank: Ledger
) -> None:
    user = next_user_id()
    ws, _ = await authed(node_server, user)
    await bank.deposit(user, 1_000, ref=f"limits-ws-{user}")
    assert await request(ws, {"t": "limits", "id": 1}) == {"t": "limits", "id": 1, "limits": [], "exclusion": None}
    reply = await request(ws, {"t": "set_limit", "id": 2, "kind": "loss", "period": "day", "amount": 50})
    tomorrow = dt.datetime.combine(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    resets_at = int(tomorrow.timestamp() * 1000)
    shown = {"kind": "loss", "period": "day", "amount": 50, "used": 0, "resets_at": resets_at}
    assert reply == {"t": "limits", "id": 2, "exclusion": None, "limits": [shown]}
    round_id = await betting_round(ws, "dice")
    assert (await request(ws, bet(round_id, 30, "w1")))["t"] == "bet_ok"
    refused = await request(ws, bet(round_id, 30, "w2"))
    assert (refused["t"], refused["code"], refused["resets_at"]) == ("error", "limit_reached", resets_at)
    assert "20 left" in refused["message"]
    # Raising waits a day; the reply says so, and the bet is still refused.
    raised = await request(ws, {"t": "set_limit", "id": 3, "kind": "loss", "period": "day", "amount": 500})
    (shown,) = raised["limits"]
    assert (shown["amount"], shown["used"], shown["pending_amount"]) == (50, 30, 500)
    assert (await request(ws, bet(round_id, 30, "w3")))["code"] == "limit_reached"
    balance = await request(ws, {"t": "balance", "id": 4})
    assert balance["balance"] == 970  # only the first bet was charged


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"t": "set_limit", "kind": "loss", "period": "year", "amount": 5}, "period"),
        ({"t": "set_limit", "kind": "session", "period": "session", "amount": 1}, "amount"),
        ({"t": "set_limit", "kind": "loss", "period": "day", "amount": 0}, "amount"),
        ({"t": "exclude", "kind": "cool_off", "days": 43}, "days"),
        ({"t": "exclude", "kind": "self_exclusion", "days": 30}, "days"),
    ],
)
async def test_a_bad_limit_request_is_refused_naming_its_field(
    node_server: RunningNode, message: JSON, field: str
) -> None:
    ws, _ = await authed(node_server, next_user_id())
    reply = await request(ws, {**message, "id": "x"})
    assert (reply["t"], reply["code"], reply["field"]) == ("error", "bad_request", field), reply
    assert (await request(ws, {"t": "limits", "id": "y"}))["limits"] == []  # nothing was set


async def test_a_cool_off_refuses_bets_until_it_ends(node_server: RunningNode, bank: Ledger) -> None:
    user = next_user_id()
    ws, _ = await authed(node_server, user)
    await bank.deposit(user, 100, ref=f"cool-{user}")
    reply = await request(ws, {"t": "exclude", "id": 1, "kind": "cool_off", "days": 7})
    until = reply["exclusion"]["until"]
    in_a_week = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).timestamp() * 1000
    assert reply["exclusion"]["kind"] == "cool_off" and abs(until - in_a_week) < 60_000
    refused = await request(ws, bet(await betting_round(ws, "dice"), 10, "cool"))
    assert (refused["code"], refused["resets_at"]) == ("excluded", until)
    shorter = await request(ws, {"t": "exclude", "id": 2, "kind": "cool_off", "days": 1})
    assert (shorter["code"], shorter["field"]) == ("bad_request", "days")


async def test_bets_from_two_nodes_racing_a_loss_limit_never_overshoot_it(
    start_node: StartNode, bank: Ledger, redis_url: str, db: asyncpg.Connection
) -> None:
    """One player on two nodes (one Redis, one database) fires 30 bets of 10 at once through each socket with a
    day's loss limit of 200: exactly 20 are taken, and the wallet lost exactly 200."""
    user = next_user_id()
    async with start_node(redis_url=redis_url) as a, start_node(redis_url=redis_url) as b:
        ws_a, _ = await authed(a, user)
        ws_b, _ = await authed(b, user)
        await bank.deposit(user, 10_000, ref=f"race-{user}")
        assert (await request(ws_a, {"t": "set_limit", "id": 1, "kind": "loss", "period": "day", "amount": 200}))[
            "limits"
        ][0]["amount"] == 200
        round_id = await betting_round(ws_a, "dice")

        async def fire(ws: Any, side: str) -> list[JSON]:
            for n in range(30):
                await ws.send(json.dumps(bet(round_id, 10, f"{side}-{n}")))
            replies: list[JSON] = []
            while len(replies) < 30:
                message = await recv(ws, timeout=15)
                if "ch" not in message:
                    replies.append(message)
            return replies

        replies = [r for side in await asyncio.gather(fire(ws_a, "a"), fire(ws_b, "b")) for r in side]
        taken = [r for r in replies if r["t"] == "bet_ok"]
        refused = [r for r in replies if r["t"] == "error"]
        assert len(taken) == 20 and {r["code"] for r in refused} == {"limit_reached"}
        staked = await db.fetchval("SELECT sum(amount) FROM bets WHERE user_id = $1", user)
        assert staked == 200
        await ws_a.close()
        await ws_b.close()


async def test_the_session_time_limit_signs_the_player_out_and_refuses_them_during_the_break(
    node_server: RunningNode, db: asyncpg.Connection
) -> None:
    user = next_user_id()
    ws, _ = await authed(node_server, user)
    reply = await request(ws, {"t": "set_limit", "id": 1, "kind": "session", "period": "session", "amount": 5})
    assert reply["limits"] == [{"kind": "session", "period": "session", "amount": 5}]
    await ws.close()
    # The session began 5 minutes less a second ago: the next sign-in is let in, and signed out when it ends.
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5) + dt.timedelta(seconds=1)
    await db.execute("INSERT INTO player_sessions (user_id, started_at) VALUES ($1, $2) ON CONFLICT (user_id) "
                     "DO UPDATE SET started_at = $2", user, started)  # fmt: skip
    ws, _ = await authed(node_server, user)
    notice = await recv(ws, timeout=10)
    break_ends = int((started + dt.timedelta(minutes=5 + 30)).timestamp() * 1000)
    assert (notice["t"], notice["code"], notice["resets_at"]) == ("error", "limit_reached", break_ends)
    assert await closed_with(ws) == 4410
    # In the break, a sign-in is refused with the break's end.
    ws = await open_socket(node_server)
    refused = await request(ws, {"t": "auth", "id": 1, "init_data": init_data(user)})
    assert (refused["code"], refused["resets_at"]) == ("limit_reached", break_ends)
    assert await closed_with(ws) == 4410
