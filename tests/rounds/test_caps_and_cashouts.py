"""Cash-outs of several bets, and the payout and exposure caps, over real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from server.games.crash import Crash, cap_multiplier
from server.games.testing import GameTable
from server.ledger import Ledger
from tests.conftest import StartNode
from tests.edge.client import authed, request
from tests.ledger.conftest import next_user_id
from tests.rounds.test_engine import next_event, player

# Every crash point is at least 2.00x (house edge -100%: a test table), reached after 1.39 s.
GENEROUS = {"house_edge_bp": -10_000, "growth_per_ms": 0.0005}


async def betting_round(ws: Any, game: str, margin_ms: int = 600) -> int:
    await request(ws, {"t": "subscribe", "id": "sub", "game": game})
    found = await next_event(ws, lambda m: m["t"] == "round" and m["phase"] == "betting" and m["game"] == game
                             and m["closes_at"] - time.time() * 1000 > margin_ms, timeout=20)  # fmt: skip
    return int(found["round"])


async def bet(ws: Any, game: str, round_id: int, amount: int, params: dict[str, Any], rid: object) -> dict[str, Any]:
    return await request(ws, {"t": "bet", "id": rid, "game": game, "round": round_id, "amount": amount,
                              "params": params})  # fmt: skip


async def test_a_cashout_applies_to_each_open_bet_or_to_the_one_named(
    start_node: StartNode, bank: Ledger, db: asyncpg.Connection
) -> None:
    async with start_node(betting_ms=800, games=("crash",), game_params={"crash": GENEROUS}) as node:
        ws, _ = await player(node, bank)
        round_id = await betting_round(ws, "crash")
        auto = await bet(ws, "crash", round_id, 100, {"auto_cashout": 110}, 1)  # placed first
        second = await bet(ws, "crash", round_id, 100, {}, 2)
        third = await bet(ws, "crash", round_id, 100, {}, 3)
        ids = [reply["bet"]["id"] for reply in (auto, second, third)]
        await next_event(ws, lambda m: m["t"] == "tick" and m["round"] == round_id and m["multiplier"] >= 120)
        named = await request(ws, {"t": "action", "id": 4, "game": "crash", "round": round_id, "action": "cashout",
                                   "params": {"bet": ids[2]}})  # fmt: skip
        assert named["t"] == "action_ok", named
        assert named["result"]["bet"] == ids[2] and 120 <= named["result"]["multiplier"] < 200
        rest = await request(ws, {"t": "action", "id": 5, "game": "crash", "round": round_id, "action": "cashout"})
        # The auto cash-out already took the first bet out at 1.10x; the third was named before: the second remains.
        assert rest["t"] == "action_ok", rest
        assert [b["bet"] for b in rest["result"]["bets"]] == [ids[1]]
        again = await request(ws, {"t": "action", "id": 6, "game": "crash", "round": round_id, "action": "cashout"})
        assert again["t"] == "error" and again["field"] == "action"
        stranger = await request(ws, {"t": "action", "id": 7, "game": "crash", "round": round_id,
                                      "action": "cashout", "params": {"bet": max(ids) + 1000}})  # fmt: skip
        assert stranger["t"] == "error" and stranger["field"] == "params.bet", stranger
        cashouts = dict(await db.fetch("SELECT id, cashout FROM bets WHERE id = ANY($1::bigint[])", ids))
        assert cashouts == {ids[0]: None, ids[1]: rest["result"]["bets"][0]["multiplier"],
                            ids[2]: named["result"]["multiplier"]}  # fmt: skip
        await ws.close()


async def test_bets_that_could_pay_over_the_games_cap_are_refused(start_node: StartNode, bank: Ledger) -> None:
    params = {"dice": {"max_payout": 1000, "running_ms": 0}, "roulette": {"max_payout": 3500, "running_ms": 0}}
    async with start_node(betting_ms=2000, games=("dice", "roulette"), game_params=params) as node:
        ws, _ = await player(node, bank, balance=100_000)
        _, welcome = await authed(node, next_user_id())
        assert welcome["limits"]["dice"] == {"min_bet": 1, "max_bet": 1_000_000, "max_payout": 1000,
                                             "max_exposure": 100_000_000}  # fmt: skip
        assert welcome["limits"]["roulette"]["max_payout"] == 3500
        subscribed = await request(ws, {"t": "subscribe", "id": "s", "game": "dice"})
        assert subscribed["limits"] == welcome["limits"]["dice"]
        dice = await betting_round(ws, "dice", margin_ms=300)
        # over 5000 pays 1.98x: 505 could pay 999 (allowed), 506 could pay 1001 (refused, naming the cap).
        assert (await bet(ws, "dice", dice, 505, {"target": 5000, "side": "over"}, 1))["t"] == "bet_ok"
        refused = await bet(ws, "dice", dice, 506, {"target": 5000, "side": "over"}, 2)
        assert (refused["code"], refused["field"]) == ("invalid_bet", "amount") and "1000" in refused["message"]
        roulette = await betting_round(ws, "roulette", margin_ms=300)
        assert (await bet(ws, "roulette", roulette, 97, {"type": "straight", "numbers": [7]}, 3))["t"] == "bet_ok"
        refused = await bet(ws, "roulette", roulette, 98, {"type": "straight", "numbers": [7]}, 4)  # 3528
        assert (refused["code"], refused["field"]) == ("invalid_bet", "amount") and "3500" in refused["message"]
        await ws.close()


async def test_a_round_refuses_the_bet_that_would_pass_its_exposure_cap(
    start_node: StartNode, bank: Ledger, db: asyncpg.Connection
) -> None:
    params = {"roulette": {"max_exposure": 1000, "running_ms": 0}}
    async with start_node(betting_ms=2000, games=("roulette",), game_params=params) as node:
        ws, _ = await player(node, bank, balance=10_000)
        other, other_user = await player(node, bank, balance=10_000)
        round_id = await betting_round(ws, "roulette", margin_ms=500)
        red = {"type": "red", "numbers": []}
        assert (await bet(ws, "roulette", round_id, 300, red, 1))["t"] == "bet_ok"  # could pay 600
        assert (await bet(other, "roulette", round_id, 200, red, 2))["t"] == "bet_ok"  # 1000: exactly the cap
        full = await bet(other, "roulette", round_id, 1, red, 3)
        assert full["code"] == "invalid_bet" and "cap of 1000" in full["message"], full
        assert await db.fetchval("SELECT exposure FROM rounds WHERE id = $1", round_id) == 1000
        assert (await bank.balance(other_user)).balance == 9_800  # the refused bet charged nothing
        await ws.close()
        await other.close()


def test_crash_cashes_a_bet_out_where_its_payout_reaches_the_cap() -> None:
    cap = 1000
    point = cap_multiplier(300, cap)  # 333: 300 * 3.33 = 999 is the most within the cap
    assert 300 * point // 100 <= cap < 300 * (point + 1) // 100
    table = GameTable(Crash(), outcome={"crash_point": 1000}, max_payout=cap)
    over, early = table.bet(300), table.bet(300, {"auto_cashout": 200})
    table.start()
    assert table.outcome["capped"] == {str(over.bet_id): point}  # the earlier exit stands for the other
    assert table.settle() == {over.bet_id: 999, early.bet_id: 600}
    crashed_first = GameTable(Crash(), outcome={"crash_point": 300}, max_payout=cap)
    bet = crashed_first.bet(300)
    crashed_first.start()
    assert "capped" not in crashed_first.outcome and crashed_first.settle() == {bet.bet_id: 0}  # crashed first


async def test_a_crash_bet_over_the_cap_is_cashed_out_at_it_and_told_so(
    start_node: StartNode, bank: Ledger, db: asyncpg.Connection
) -> None:
    # A stake of 100 reaches the cap at 1.50x, before any crash; a fast curve ends every round within 7 s.
    game = {"crash": {**GENEROUS, "growth_per_ms": 0.002, "max_payout": 150}}
    async with start_node(betting_ms=800, games=("crash",), game_params=game) as node:
        ws, user = await player(node, bank)
        round_id = await betting_round(ws, "crash")
        placed = await bet(ws, "crash", round_id, 100, {}, 1)
        assert placed["t"] == "bet_ok", placed
        await next_event(ws, lambda m: m["t"] == "tick" and m["round"] == round_id and m["multiplier"] >= 155)
        late = await request(ws, {"t": "action", "id": 2, "game": "crash", "round": round_id, "action": "cashout"})
        assert late["t"] == "error" and "cap" in late["message"] and "1.50x" in late["message"], late
        for _ in range(400):  # the round ends at its crash point (at most 7 s on this curve)
            row = await db.fetchrow("SELECT status, payout FROM bets WHERE id = $1", placed["bet"]["id"])
            if row["status"] != "accepted":
                break
            await asyncio.sleep(0.05)
        assert (row["status"], row["payout"]) == ("won", 150)
        assert (await bank.balance(user)).balance == 1000 - 100 + 150
        await ws.close()
