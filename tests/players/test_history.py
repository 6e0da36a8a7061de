"""A player's own history over real sockets (``my_bets``, ``my_transactions``, round ``history`` with its
salt), and the keyset queries' plans."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import asyncpg
import pytest

from server.ledger import Ledger
from server.players.history import BETS, GAME_BETS, TRANSACTIONS
from tests.conftest import RunningNode, StartNode
from tests.edge.client import authed, recv, request
from tests.ledger.conftest import next_user_id

pytestmark = pytest.mark.integration
JSON = dict[str, Any]


async def betting_round(ws: Any, game: str) -> int:
    """A round of ``game`` taking bets now."""
    for _ in range(200):
        reply = await request(ws, {"t": "subscribe", "id": "sub", "game": game})
        await request(ws, {"t": "unsubscribe", "id": "unsub", "game": game})
        if reply["round"] is not None and reply["round"]["phase"] == "betting":
            return int(reply["round"]["round"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {game} round is taking bets")


async def place(ws: Any, game: str, round_id: int, amount: int, params: JSON, n: int) -> JSON:
    reply = await request(ws, {"t": "bet", "id": f"bet-{n}", "game": game, "round": round_id, "amount": amount,
                               "params": params})  # fmt: skip
    assert reply["t"] == "bet_ok", reply
    return dict(reply["bet"])


async def pages(ws: Any, first: JSON, key: str) -> list[list[JSON]]:
    """Every page of a paged request, following ``next`` to the end."""
    out, cursor = [], None
    for n in range(50):
        reply = await request(ws, {**first, "id": f"page-{n}", **({"cursor": cursor} if cursor else {})})
        assert reply["t"] == first["t"], reply
        out.append(reply[key])
        cursor = reply["next"]
        if cursor is None:
            return out
    raise AssertionError("too many pages")


async def test_my_bets_and_transactions_page_newest_first_without_unsettled_seeds(
    node_server: RunningNode, bank: Ledger
) -> None:
    user = next_user_id()
    ws, _ = await authed(node_server, user)
    await bank.deposit(user, 1_000, ref=f"history-{user}")
    await bank.adjust(user, 5, reason="goodwill: support ticket 12")
    dice, roulette = await betting_round(ws, "dice"), await betting_round(ws, "roulette")
    placed = [await place(ws, "dice", dice, 10 + n, {"target": 5000, "side": "over"}, n) for n in range(3)]
    placed.insert(1, await place(ws, "roulette", roulette, 7, {"type": "red"}, 9))
    placed.append(await place(ws, "roulette", roulette, 8, {"type": "black"}, 10))
    newest_first = sorted(placed, key=lambda bet: -bet["id"])

    bet_pages = await pages(ws, {"t": "my_bets", "limit": 2}, "bets")
    assert [len(page) for page in bet_pages] == [2, 2, 1]
    listed = [bet for page in bet_pages for bet in page]
    assert [bet["id"] for bet in listed] == [bet["id"] for bet in newest_first]
    for bet, sent in zip(listed, newest_first, strict=True):
        assert (bet["game"], bet["round"], bet["amount"], bet["params"]) == (
            sent["game"], sent["round"], sent["amount"], sent["params"])  # fmt: skip
        assert bet["status"] == "accepted" and bet["payout"] is None and bet["settled_at"] is None
        assert bet["seed"] is None and len(bet["seed_hash"]) == 64  # not settled: no seed
        assert bet["salt"] is None or len(bet["salt"]) == 64  # null while a chain's first round takes bets
    only_roulette = [bet for page in await pages(ws, {"t": "my_bets", "game": "roulette", "limit": 1}, "bets")
                     for bet in page]  # fmt: skip
    assert [bet["id"] for bet in only_roulette] == [bet["id"] for bet in newest_first if bet["game"] == "roulette"]

    moves = [move for page in await pages(ws, {"t": "my_transactions", "limit": 3}, "transactions") for move in page]
    assert [(move["kind"], move["amount"]) for move in moves] == [
        *(("bet", -bet["amount"]) for bet in newest_first), ("adjust", 5), ("deposit", 1_000)]  # fmt: skip
    assert [move["ref"] for move in moves[:5]] == [str(bet["id"]) for bet in newest_first]
    assert moves[5]["reason"] == "goodwill: support ticket 12" and moves[6]["ref"] == f"history-{user}"
    assert moves[0]["reason"] is None and moves == sorted(moves, key=lambda move: -move["id"])

    bad = await request(ws, {"t": "my_bets", "id": "bad", "cursor": "12; DROP TABLE bets"})
    assert (bad["t"], bad["code"], bad["field"]) == ("error", "bad_request", "cursor")
    other = next_user_id()
    stranger, _ = await authed(node_server, other)
    assert (await request(stranger, {"t": "my_bets", "id": 1}))["bets"] == []
    await stranger.close()
    await ws.close()


async def test_a_settled_bet_shows_the_seed_that_verifies_it_and_history_has_the_salt(
    start_node: StartNode, bank: Ledger
) -> None:
    user = next_user_id()
    async with start_node(betting_ms=300) as node:
        ws, _ = await authed(node, user)
        await bank.deposit(user, 100, ref=f"history-settled-{user}")
        bet = await place(ws, "dice", await betting_round(ws, "dice"), 10, {"target": 5000, "side": "under"}, 1)
        while True:
            push = await recv(ws, timeout=10)
            if push["t"] == "bet_settled" and push["bet"] == bet["id"]:
                break
        (mine,) = (await request(ws, {"t": "my_bets", "id": "mine", "limit": 1}))["bets"]
        assert mine["id"] == bet["id"] and mine["payout"] == push["payout"]
        assert mine["status"] == ("won" if push["payout"] else "lost") and mine["settled_at"] >= mine["placed_at"]
        assert hashlib.sha256(mine["seed"].encode()).hexdigest() == mine["seed_hash"]
        rounds = (await request(ws, {"t": "history", "id": "h", "game": "dice", "limit": 100}))["rounds"]
        (record,) = [r for r in rounds if r["round"] == mine["round"]]
        assert (record["seed"], record["seed_hash"], record["salt"]) == (mine["seed"], mine["seed_hash"], mine["salt"])
        await ws.close()


@pytest.mark.parametrize(("query", "index", "args"), [
    (BETS, "bets_by_user", (1, 2**63 - 1, 20)),
    (GAME_BETS, "bets_by_user_game", (1, 2**63 - 1, 20, "dice")),
    (TRANSACTIONS, "ledger_legs_by_account", (1, 2**63 - 1, 20)),
])  # fmt: skip
async def test_the_pages_are_index_range_scans(db: asyncpg.Connection, query: str, index: str,
                                               args: tuple[object, ...]) -> None:  # fmt: skip
    """The queries' shape lets PostgreSQL read a page from the index (a small test table would be read
    whole: sequential scans are off here, and sorts, which on the suite's few rows the planner may find as
    cheap as the index's order, whatever the statistics; docs/ledger.md shows the plans on 10 million bets)."""
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        await db.execute("SET LOCAL enable_sort = off")
        plan = json.loads(await db.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args))
    assert f'"Index Name": "{index}"' in json.dumps(plan)
