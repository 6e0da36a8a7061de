"""Big wins announced by the bot, and users reachable from initData: the rules without I/O, then a real
node whose player signs in with ``allows_write_to_pm``, wins at dice, and gets the bot's message from the
Bot API test server; a player who did not allow it gets nothing (their notification written ``dropped``)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from server.ledger import ClosedBet, Ledger
from server.telegram import NotificationKind, big_win_key
from server.telegram.bigwins import BigWins, big_wins, multiple_text
from tests.conftest import StartNode
from tests.edge.client import authed, recv, request
from tests.ledger.conftest import next_user_id
from tests.telegram.botapi import BotApiServer


def closed(bet_id: int, stake: int, payout: int, status: str = "won") -> ClosedBet:
    return ClosedBet(bet_id, 77, "dice", stake, status, payout, balance=0, version=0)


def test_multiples_read_as_a_player_reads_them() -> None:
    assert [multiple_text(p, s) for p, s in [(400, 10), (125, 10), (1005, 100), (1999, 1000), (30, 7)]] == [
        "40", "12.5", "10.05", "1.99", "4.28"]  # fmt: skip


def test_only_wins_of_the_multiple_or_more_are_big_in_bet_order() -> None:
    bets = [closed(3, 10, 100), closed(1, 10, 99), closed(2, 10, 250), closed(4, 10, 0, "lost"),
            closed(5, 10, 100, "refunded")]  # fmt: skip
    queued = big_wins(bets, 10)
    assert [q.dedupe_key for q in queued] == [big_win_key(2), big_win_key(3)]
    assert queued[0].kind is NotificationKind.BIG_WIN and queued[0].user_id == 77
    assert queued[0].params == {"game": "dice", "payout": 250, "multiple": "25"}
    with pytest.raises(ValueError):
        BigWins(0)


async def dice_round(ws: object) -> int:
    """A dice round taking bets now (the node's rounds are short)."""
    for _ in range(200):
        reply = await request(ws, {"t": "subscribe", "id": "sub", "game": "dice"})  # type: ignore[arg-type]
        await request(ws, {"t": "unsubscribe", "id": "unsub", "game": "dice"})  # type: ignore[arg-type]
        if reply["round"] is not None and reply["round"]["phase"] == "betting":
            return int(reply["round"]["round"])
        await asyncio.sleep(0.05)
    raise AssertionError("no dice round is taking bets")


async def win_at_dice(ws: object) -> int:
    """Bet on dice (nine in ten win) until a bet wins; the winning bet's id."""
    for attempt in range(30):
        round_id = await dice_round(ws)
        reply = await request(ws, {"t": "bet", "id": f"b{attempt}", "game": "dice", "round": round_id,  # type: ignore[arg-type]
                                   "amount": 10, "params": {"target": 9000, "side": "under"}})  # fmt: skip
        if reply["t"] != "bet_ok":
            continue  # the round closed between the snapshot and the bet
        bet_id = int(reply["bet"]["id"])
        while True:
            push = await recv(ws, timeout=10)  # type: ignore[arg-type]
            if push["t"] == "bet_settled" and push["bet"] == bet_id:
                break
        if push["payout"] > 0:
            return bet_id
    raise AssertionError("no dice bet won in 30 rounds")


@pytest.mark.integration
async def test_a_big_win_reaches_a_player_whose_initdata_allows_messages(
    start_node: StartNode, botapi: BotApiServer, bank: Ledger, db: asyncpg.Connection
) -> None:
    allowed, silent = next_user_id(), next_user_id()
    async with start_node(telegram_api_url=botapi.base_url, big_win_multiple=1, betting_ms=300) as node:
        ws, _ = await authed(node, allowed, allows_write_to_pm=True)
        quiet, _ = await authed(node, silent)
        reachable = await db.fetchrow("SELECT reachable, source FROM notify_recipients WHERE user_id = $1", allowed)
        assert reachable is not None and tuple(reachable) == (True, "initdata")
        assert await db.fetchval("SELECT count(*) FROM notify_recipients WHERE user_id = $1", silent) == 0
        for user in (allowed, silent):
            await bank.deposit(user, 1_000, ref=f"big-win-funds-{user}")
        won = await win_at_dice(ws)
        quiet_won = await win_at_dice(quiet)
        calls = await botapi.calls("sendMessage", wait=10)
        texts = [call["params"]["text"] for call in calls if int(call["params"]["chat_id"]) == allowed]
        assert len(texts) == 1 and texts[0].startswith("Big win! You won ") and " in dice: " in texts[0]
        assert all(int(call["params"]["chat_id"]) != silent for call in calls)
        await ws.close()
        await quiet.close()
    rows = {row["dedupe_key"]: row["status"] for row in await db.fetch(
        "SELECT dedupe_key, status FROM notifications WHERE user_id = ANY($1)", [allowed, silent])}  # fmt: skip
    assert rows[big_win_key(won)] == "sent" and rows[big_win_key(quiet_won)] == "dropped"
