"""A real node (uvicorn, the suite's PostgreSQL, the in-process broker): players play dice with short rounds,
and the ``leaderboard`` request ranks them as their bets in PostgreSQL say; a watched board is pushed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from server.leaderboards import Board
from server.node import Node
from tests.conftest import TEST_BOT_TOKEN, StartNode
from tests.leaderboards.players import Player, expected_boards, expected_reply, listed
from tests.ledger.conftest import next_user_id
from tests.services import EmbeddedRedis

pytestmark = pytest.mark.skipif("leaderboards" not in Node.__dataclass_fields__,
                                reason="server/node.py does not open the leaderboards yet")  # fmt: skip

BOARDS = [Board("dice", "net", "day"), Board("all", "net", "week"), Board("dice", "win", "all")]


async def until(check: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "never came true"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(120)
async def test_players_are_ranked_as_their_bets_in_postgresql_say(start_node: StartNode, database_url: str) -> None:
    async with start_node(betting_ms=300, games=("dice",), welcome_credit=1000) as node:
        players = [Player(node.ws_url, TEST_BOT_TOKEN, next_user_id(), name) for name in ("Ann", "Bob", "Cy", "Di")]
        for player in players:
            await player.connect()
        await asyncio.gather(*(player.play(rounds=4) for player in players))
        assert all(player.settled >= 3 for player in players)
        ann = players[0]

        async def boards_match() -> bool:
            expected = await expected_boards(database_url)
            for board in BOARDS:
                reply = await ann.request({"t": "leaderboard", "game": board.scope, "metric": board.metric,
                                           "period": board.period, "limit": 100})  # fmt: skip
                if listed(reply) != expected_reply(expected, board, 100):
                    return False
            return True

        await until(boards_match)
        reply = await ann.request({"t": "leaderboard", "game": "dice", "metric": "net", "period": "day", "limit": 100})
        mine = next(entry for entry in reply["top"] if entry["user"] == ann.user_id)
        assert mine["name"] == "Ann"
        assert reply["me"] == {"rank": mine["rank"], "score": mine["score"]}
        one = await ann.request({"t": "leaderboard", "game": "dice", "metric": "net", "period": "day", "limit": 1})
        assert len(one["top"]) == 1 and one["me"]["score"] == mine["score"]  # the caller's place, outside the top
        for player in players:
            await player.close()


@pytest.mark.timeout(120)
async def test_a_watched_board_is_pushed_after_a_win(start_node: StartNode) -> None:
    async with start_node(betting_ms=300, games=("dice",), welcome_credit=1000) as node:
        watcher = Player(node.ws_url, TEST_BOT_TOKEN, next_user_id(), "Watcher")
        winner = Player(node.ws_url, TEST_BOT_TOKEN, next_user_id(), "Winner")
        await watcher.connect()
        await winner.connect()
        first = await watcher.request({"t": "leaderboard", "game": "dice", "metric": "win", "period": "day",
                                       "limit": 100, "watch": True})  # fmt: skip
        assert first["t"] == "leaderboard" and all(e["user"] != winner.user_id for e in first["top"])
        for _ in range(10):  # over 1000 wins nine times in ten
            await winner.play(rounds=1)
            if winner.settled and await _won(winner):
                break
        push = await watcher.watched(lambda e: any(entry["user"] == winner.user_id for entry in e["top"]))
        assert "id" not in push and push["me"] is None and push["period_key"] == first["period_key"]
        entry = next(entry for entry in push["top"] if entry["user"] == winner.user_id)
        assert entry["name"] == "Winner" and entry["multiplier"] == 110 and entry["score"] == 11
        await watcher.close()
        await winner.close()


async def _won(player: Player) -> bool:
    reply = await player.request({"t": "my_bets", "game": "dice", "limit": 5})
    return any(bet["status"] == "won" for bet in reply["bets"])


@pytest.mark.timeout(120)
async def test_a_board_watched_on_one_node_is_pushed_after_a_win_on_another(start_node: StartNode,
                                                                             redis: EmbeddedRedis) -> None:  # fmt: skip
    settings = {"betting_ms": 300, "games": ("dice",), "welcome_credit": 1000, "redis_url": redis.url}
    async with (
        start_node(node_id="playing", **settings) as playing,
        start_node(node_id="watching", **settings) as other,
    ):
        watcher = Player(other.ws_url, TEST_BOT_TOKEN, next_user_id(), "Watcher")
        winner = Player(playing.ws_url, TEST_BOT_TOKEN, next_user_id(), "Winner")
        await watcher.connect()
        await winner.connect()
        await watcher.request({"t": "leaderboard", "game": "all", "metric": "net", "period": "week", "limit": 100,
                               "watch": True})  # fmt: skip
        await winner.play(rounds=1)
        push = await watcher.watched(lambda e: any(entry["user"] == winner.user_id for entry in e["top"]))
        assert push["game"] == "all" and push["period"] == "week"
        await watcher.close()
        await winner.close()
