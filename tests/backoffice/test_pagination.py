"""A user's bets and transactions through ``/admin/api``, a page at a time while the user keeps betting."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from server.ledger import Ledger
from tests.backoffice.conftest import ADMIN_KEYS, READ_KEY, admin, betting_round, dice_bet, player
from tests.conftest import RunningNode, StartNode
from tests.edge.client import authed, request


@pytest.fixture
async def office(start_node: StartNode) -> RunningNode:  # type: ignore[misc]
    async with start_node(admin_keys=ADMIN_KEYS) as node:
        yield node


async def test_paging_through_bets_while_more_are_placed_shows_each_older_bet_once(
    office: RunningNode, bank: Ledger
) -> None:
    ws, user_id = await player(office, bank, 100_000)
    round_id = await betting_round(ws)
    placed = [await request(ws, dice_bet(i, round_id, 10 + i % 3, key=f"old-{i}")) for i in range(30)]
    assert all(reply["t"] == "bet_ok" for reply in placed)
    before = {reply["bet"]["id"] for reply in placed}
    bettor, _ = await authed(office, user_id)
    more: list[int] = []

    async def keep_betting() -> None:
        for i in range(1000):
            reply = await request(bettor, dice_bet(i, round_id, 5, key=f"new-{i}"))
            assert reply["t"] == "bet_ok", reply
            more.append(reply["bet"]["id"])
            await asyncio.sleep(0.01)

    betting = asyncio.create_task(keep_betting())
    seen: list[int] = []
    pages = 0
    async with admin(office, READ_KEY) as client:
        cursor: str | None = None
        while True:
            params = {"limit": 7, "game": "dice", **({"cursor": cursor} if cursor else {})}
            page = await client.get(f"/users/{user_id}/bets", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            ids = [bet["id"] for bet in body["items"]]
            assert ids == sorted(ids, reverse=True) and all(bet["seed"] is None for bet in body["items"])
            seen.extend(ids)
            pages += 1
            cursor = body["next"]
            if cursor is None:
                break
            await asyncio.sleep(0.03)  # bets keep coming between pages
        transactions = (await client.get(f"/users/{user_id}/transactions", params={"limit": 100})).json()
    betting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await betting
    assert more, "no bet was placed while paging"
    assert pages >= 5
    assert len(seen) == len(set(seen)), "a bet was shown twice"
    assert before <= set(seen), "a bet older than the first page was skipped"
    assert all(bet_id > max(before) for bet_id in set(seen) - before)  # newer ones only from the first page on
    kinds = [t["kind"] for t in transactions["items"]]
    assert kinds.count("deposit") == 1 and kinds.count("bet") >= 30
    for sock in (ws, bettor):
        await sock.close()
