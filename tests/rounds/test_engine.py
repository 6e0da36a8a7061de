"""Real rounds end to end over sockets: bet, watch, cash out, get paid, verify the seed; several
nodes sharing rounds through Redis. (The round engine's steps one by one, on a clock the test moves:
test_driver.py, test_actions.py, test_recovery.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from server.games.crash import Crash
from server.games.dice import Dice
from server.ledger import Ledger, audit
from server.rounds.fair import FairRng, sha256_hex
from tests.conftest import RunningNode, StartNode
from tests.edge.client import authed, funded, recv, request
from tests.ledger.conftest import next_user_id

FAST = {
    "betting_ms": 400,
    "round_pause_ms": 50,
    "game_params": {"crash": {"growth_per_ms": 0.004}, "dice": {"running_ms": 0}, "roulette": {"running_ms": 0}},
}
GENEROUS = {"house_edge_bp": -10_000, "growth_per_ms": 0.002}
"""A test table: every crash point is at least 2.00x (house edge -100%), reached 347 ms after the start."""


async def player(node: RunningNode, bank: Ledger, balance: int = 1000) -> tuple[Any, int]:
    user_id = next_user_id()
    ws, _ = await funded(node, bank, user_id, balance, f"engine-{user_id}")
    return ws, user_id


async def next_event(ws: Any, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = await recv(ws, timeout=timeout)
            if predicate(message):
                return message


async def both(ws: Any, first: Any, second: Any, timeout: float = 10.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next events matching ``first`` and ``second``, in whichever order they come (they are on
    different channels: a game's and the user's)."""
    found: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(timeout):
        while len(found) < 2:
            message = await recv(ws, timeout=timeout)
            for index, predicate in enumerate((first, second)):
                if index not in found and predicate(message):
                    found[index] = message
    return found[0], found[1]


def round_event(phase: str, round_id: int | None = None, game: str | None = None) -> Any:
    return lambda m: (
        m["t"] == "round"
        and m["phase"] == phase
        and (round_id is None or m["round"] == round_id)
        and (game is None or m["game"] == game)
    )


async def test_crash_round_bet_ticks_cashout_settle_and_verify(start_node: StartNode, bank: Ledger) -> None:
    async with start_node(**FAST) as node:
        ws, _ = await player(node, bank)
        subscribed = await request(ws, {"t": "subscribe", "id": 1, "game": "crash"})
        assert subscribed["t"] == "subscribed" and subscribed["game"] == "crash"
        betting = await next_event(ws, round_event("betting"))
        assert betting["ch"] == "game:crash" and isinstance(betting["offset"], int) and betting["epoch"]
        assert len(betting["seed_hash"]) == 64 and betting["closes_at"] > 0 and "seed" not in betting
        round_id = betting["round"]
        placed = await request(
            ws, {"t": "bet", "id": 2, "game": "crash", "round": round_id, "amount": 100, "params": {}, "key": "c1"}
        )
        assert placed["t"] == "bet_ok", placed
        await next_event(ws, round_event("running", round_id))
        tick = await next_event(ws, lambda m: m["t"] == "tick")
        assert tick["round"] == round_id and tick["multiplier"] >= 100 and tick["ch"] == "game:crash"
        cashed = await request(ws, {"t": "action", "id": 3, "game": "crash", "round": round_id, "action": "cashout"})
        twice = await request(ws, {"t": "action", "id": 4, "game": "crash", "round": round_id, "action": "cashout"})
        settled = await next_event(ws, round_event("settled", round_id))
        result = await next_event(ws, lambda m: m["t"] == "bet_settled")
        crash_point = settled["outcome"]["crash_point"]
        if cashed["t"] == "action_ok":  # cashed out before the crash
            multiplier = cashed["result"]["multiplier"]
            assert 100 <= multiplier < crash_point and cashed["balance"] == 900
            assert twice["t"] == "error" and ("already cashed out" in twice["message"] or "crashed" in twice["message"])
            assert result["payout"] == 100 * multiplier // 100
        else:  # the round crashed at once (1.00x): too late
            assert cashed["code"] == "bad_request" and "crashed" in cashed["message"]
            assert result["payout"] == 0
        assert result["bet"] == placed["bet"]["id"] and result["balance"] == 900 + result["payout"]
        # Provably fair: the seed hashes to the seed_hash announced before betting, and the outcome
        # is recomputed from the seed and the public salt alone.
        assert sha256_hex(settled["seed"]) == betting["seed_hash"] == settled["seed_hash"]
        assert Crash().public_outcome(
            Crash(FAST["game_params"]["crash"]).outcome(FairRng(settled["seed"], settled["salt"], "crash"))
        ) == {"crash_point": crash_point}
        late = await request(ws, {"t": "action", "id": 5, "game": "crash", "round": round_id, "action": "cashout"})
        assert late["t"] == "error" and late["code"] in ("round_mismatch", "bad_request")
        history = await request(ws, {"t": "history", "id": 6, "game": "crash", "limit": 5})
        record = next(r for r in history["rounds"] if r["round"] == round_id)
        assert record["seed"] == settled["seed"] and record["outcome"]["crash_point"] == crash_point
        next_round = await next_event(ws, round_event("betting"))
        assert next_round["seed_hash"] == settled["seed"] or next_round["round"] != round_id
        await ws.close()


async def test_dice_round_pays_by_the_revealed_roll(start_node: StartNode, bank: Ledger) -> None:
    async with start_node(**FAST) as node:
        ws, _ = await player(node, bank)
        await request(ws, {"t": "subscribe", "id": 1, "game": "dice"})
        betting = await next_event(ws, round_event("betting"))
        params = {"target": 5000, "side": "under"}
        placed = await request(
            ws, {"t": "bet", "id": 2, "game": "dice", "round": betting["round"], "amount": 100, "params": params}
        )
        assert placed["t"] == "bet_ok" and placed["balance"] == 900
        settled = await next_event(ws, round_event("settled", betting["round"]))
        roll = settled["outcome"]["roll"]
        assert Dice().outcome(FairRng(settled["seed"], settled["salt"], "dice")) == {"roll": roll}
        result = await next_event(ws, lambda m: m["t"] == "bet_settled")
        expected = 198 if roll < 5000 else 0
        assert (result["payout"], result["balance"]) == (expected, 900 + expected)
        if expected:
            push = await next_event(ws, lambda m: m["t"] == "balance" and m.get("reason") == "win")
            assert push["delta"] == expected and push["offset"] == result["offset"] + 1
        await ws.close()


async def test_bets_outside_the_betting_window_and_bad_params(start_node: StartNode, bank: Ledger) -> None:
    async with start_node(**FAST) as node:
        ws, _ = await player(node, bank)
        await request(ws, {"t": "subscribe", "id": 1, "game": "crash"})
        betting = await next_event(ws, round_event("betting"))
        for params, field in [({"auto_cashout": 100}, "params.auto_cashout"), ({"x": 1}, "params.x")]:
            error = await request(
                ws, {"t": "bet", "id": 2, "game": "crash", "round": betting["round"], "amount": 10, "params": params}
            )
            assert (error["code"], error["field"]) == ("invalid_bet", field)
        wrong = await request(
            ws, {"t": "bet", "id": 3, "game": "crash", "round": betting["round"] + 1000, "amount": 10}
        )
        assert (wrong["code"], wrong["field"]) == ("round_mismatch", "round")
        await next_event(ws, round_event("running", betting["round"]))
        closed = await request(ws, {"t": "bet", "id": 4, "game": "crash", "round": betting["round"], "amount": 10})
        assert closed["code"] in ("betting_closed", "round_mismatch")
        assert (await request(ws, {"t": "balance", "id": 5}))["balance"] == 1000
        await request(ws, {"t": "subscribe", "id": 6, "game": "roulette"})
        roulette = await next_event(ws, round_event("betting", game="roulette"), timeout=15)
        bad = await request(
            ws,
            {
                "t": "bet",
                "id": 7,
                "game": "roulette",
                "round": roulette["round"],
                "amount": 10,
                "params": {"type": "split", "numbers": [1, 9]},
            },
        )
        assert (bad["code"], bad["field"]) == ("invalid_bet", "params.numbers")
        await ws.close()


async def betting_round(ws: Any, game: str) -> int:
    """Subscribe and return a round of ``game`` still taking bets for a while (waiting for the next if needed)."""
    snapshot = (await request(ws, {"t": "subscribe", "id": "sub", "game": game}))["round"]
    if snapshot and snapshot["phase"] == "betting" and snapshot["closes_at"] - time.time() * 1000 > 250:
        return int(snapshot["round"])
    return int((await next_event(ws, round_event("betting", game=game), timeout=30))["round"])


async def test_only_one_node_drives_a_game(
    start_node: StartNode, bank: Ledger, redis_url: str, db: asyncpg.Connection
) -> None:
    before = await db.fetchval("SELECT coalesce(max(id), 0) FROM rounds")
    async with start_node(**FAST, redis_url=redis_url) as a, start_node(**FAST, redis_url=redis_url) as b:
        ws_a, _ = await player(a, bank)
        ws_b, _ = await player(b, bank)
        for ws in (ws_a, ws_b):
            await request(ws, {"t": "subscribe", "id": 1, "game": "dice"})
        for _ in range(40):  # two drivers would keep two dice rounds open at once
            open_rounds = await db.fetchval(
                "SELECT count(*) FROM rounds WHERE game = 'dice' AND phase IN ('betting', 'running') AND id > $1",
                before,
            )
            assert open_rounds <= 1
            await asyncio.sleep(0.05)
        round_a = (await next_event(ws_a, round_event("settled")))["round"]
        round_b = (await next_event(ws_b, round_event("settled", round_a)))["round"]
        assert round_a == round_b  # both nodes' sockets follow the same rounds, through Redis
        for ws in (ws_a, ws_b):
            await ws.close()


async def test_three_nodes_share_rounds_and_a_bet_on_one_updates_the_player_on_another(
    start_node: StartNode, bank: Ledger, redis_url: str, db: asyncpg.Connection
) -> None:
    """Three nodes, one Redis: everyone sees the same rounds; money events follow the player across nodes."""
    async with (
        start_node(**FAST, redis_url=redis_url) as a,
        start_node(**FAST, redis_url=redis_url) as b,
        start_node(**FAST, redis_url=redis_url) as c,
    ):
        ws_b, user_id = await player(b, bank)
        ws_c, _ = await authed(c, user_id)  # the same player, on another node
        watcher_a, _ = await player(a, bank)
        await request(watcher_a, {"t": "subscribe", "id": 1, "game": "dice"})
        round_id = await betting_round(ws_b, "dice")
        placed = await request(
            ws_b,
            {
                "t": "bet",
                "id": 2,
                "game": "dice",
                "round": round_id,
                "amount": 50,
                "params": {"target": 5000, "side": "under"},
            },
        )
        assert placed["t"] == "bet_ok", placed
        pushed = await next_event(ws_c, lambda m: m["t"] == "balance")
        assert (pushed["balance"], pushed["delta"], pushed["ref"]) == (950, -50, placed["bet"]["id"])
        settled_a = await next_event(watcher_a, round_event("settled", round_id))
        result_c = await next_event(ws_c, lambda m: m["t"] == "bet_settled")
        expected = 50 * 198 // 100 if settled_a["outcome"]["roll"] < 5000 else 0
        assert (result_c["bet"], result_c["payout"]) == (placed["bet"]["id"], expected)
        report = await audit(db)
        assert report.ok, report.summary()
        for ws in (ws_b, ws_c, watcher_a):
            await ws.close()


async def test_subscribe_with_since_replays_missed_events_or_answers_a_snapshot(
    start_node: StartNode, bank: Ledger
) -> None:
    async with start_node(**FAST, history_size=4) as node:
        ws, _ = await player(node, bank)
        watcher, _ = await player(node, bank)
        await request(watcher, {"t": "subscribe", "id": 1, "game": "dice"})
        await request(ws, {"t": "subscribe", "id": 1, "game": "dice"})
        seen = await next_event(ws, lambda m: m["t"] == "round")
        await request(ws, {"t": "unsubscribe", "id": 2, "game": "dice"})
        later = [await next_event(watcher, lambda m, s=seen: m["t"] == "round" and m["offset"] > s["offset"])]
        later.append(await next_event(watcher, lambda m, s=later[0]: m["t"] == "round" and m["offset"] > s["offset"]))
        since = {"offset": seen["offset"], "epoch": seen["epoch"]}
        resumed = await request(ws, {"t": "subscribe", "id": 3, "game": "dice", "since": since})
        assert resumed["recovered"] is True and resumed["epoch"] == seen["epoch"]
        offsets = [e["offset"] for e in resumed["missed"]]
        assert offsets == list(range(seen["offset"] + 1, resumed["offset"] + 1))  # contiguous, nothing twice
        assert [e for e in resumed["missed"] if e["offset"] in (later[0]["offset"], later[1]["offset"])] == later
        await request(ws, {"t": "unsubscribe", "id": 4, "game": "dice"})

        other_epoch = await request(
            ws, {"t": "subscribe", "id": 5, "game": "dice", "since": {"offset": seen["offset"], "epoch": "another"}}
        )
        assert (other_epoch["recovered"], other_epoch["missed"]) == (False, [])
        assert other_epoch["round"] is not None  # the snapshot to start again from
        await request(ws, {"t": "unsubscribe", "id": 6, "game": "dice"})
        for _ in range(3):  # more events than the history keeps
            await next_event(watcher, round_event("settled"))
        too_old = await request(ws, {"t": "subscribe", "id": 7, "game": "dice", "since": since})
        assert (too_old["recovered"], too_old["missed"]) == (False, [])
        for sock in (ws, watcher):
            await sock.close()


@pytest.mark.timing
async def test_a_client_resumes_on_another_node_from_the_shared_history(
    start_node: StartNode, bank: Ledger, redis_url: str
) -> None:
    """Drained from node A, the client reconnects to node B, which started after the events it missed:
    B serves them from the history in Redis, not from anything it saw itself."""
    async with start_node(**FAST, redis_url=redis_url) as a:
        ws, user_id = await player(a, bank)
        await request(ws, {"t": "subscribe", "id": 1, "game": "dice"})
        seen = await next_event(ws, lambda m: m["t"] == "round")
        await ws.close()
        watcher, _ = await player(a, bank)
        await request(watcher, {"t": "subscribe", "id": 1, "game": "dice"})
        await next_event(watcher, round_event("settled"))  # a few events go by while the client is away
        async with start_node(**FAST, redis_url=redis_url) as b:
            back, _ = await authed(b, user_id)
            # Once B has relayed an event itself, it knows the channel's epoch (what the watcher has
            # queued may predate B): then resume there.
            await request(back, {"t": "subscribe", "id": 1, "game": "dice"})
            await next_event(back, lambda m: m["t"] == "round")
            await request(back, {"t": "unsubscribe", "id": 3, "game": "dice"})
            since = {"offset": seen["offset"], "epoch": seen["epoch"]}
            resumed = await request(back, {"t": "subscribe", "id": 2, "game": "dice", "since": since})
            assert resumed["recovered"] is True, {k: v for k, v in resumed.items() if k != "round"}
            offsets = [e["offset"] for e in resumed["missed"]]
            assert offsets == list(range(seen["offset"] + 1, resumed["offset"] + 1))
            assert len(offsets) >= 2
            nxt = await next_event(back, lambda m: m.get("ch") == "game:dice")
            assert nxt["offset"] == resumed["offset"] + 1  # then live events, with no gap
            await back.close()
        await watcher.close()


async def test_a_cashout_on_a_node_that_does_not_drive_crash_is_applied_by_the_driver(
    start_node: StartNode, bank: Ledger, redis_url: str, db: asyncpg.Connection
) -> None:
    generous = {"games": ("crash",), "game_params": {"crash": GENEROUS}, "redis_url": redis_url}
    async with start_node(**{**FAST, **generous}, node_id="driver") as a:
        ws_a, _ = await player(a, bank)
        await request(ws_a, {"t": "subscribe", "id": 1, "game": "crash"})
        await next_event(ws_a, round_event("betting"))  # node a drives crash by now
        async with start_node(**{**FAST, **generous}, node_id="follower") as b:
            assert await db.fetchval("SELECT holder FROM game_leases WHERE game = 'crash'") == "driver"
            ws, _ = await player(b, bank)
            round_id = await betting_round(ws, "crash")
            nobody = await request(
                ws, {"t": "action", "id": 2, "game": "crash", "round": round_id, "action": "cashout"}
            )
            assert (nobody["code"], nobody["field"]) == ("bad_request", "round")  # refusals come back too
            placed = await request(
                ws, {"t": "bet", "id": 3, "game": "crash", "round": round_id, "amount": 100, "params": {}}
            )
            assert placed["t"] == "bet_ok", placed
            await next_event(ws, round_event("running", round_id))
            cashed = await request(
                ws, {"t": "action", "id": 4, "game": "crash", "round": round_id, "action": "cashout"}
            )
            assert cashed["t"] == "action_ok", cashed  # well before 2.00x, the lowest crash point of the table
            settled, result = await both(
                ws,
                round_event("settled", round_id),
                lambda m: m["t"] == "bet_settled" and m["bet"] == placed["bet"]["id"],
            )
            multiplier = cashed["result"]["multiplier"]
            assert 100 <= multiplier < 200 <= settled["outcome"]["crash_point"]
            assert result["payout"] == 100 * multiplier // 100
            await ws.close()
        await ws_a.close()
