"""Players betting on dice over real sockets, round after round, and boards as PostgreSQL says they must be."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.auth import sign_init_data
from server.leaderboards import Board, BoardChanges, Planner
from server.leaderboards.rebuild import read_boards

TARGETS = (1000, 5000, 9000)
"""Over 1000 wins nine times in ten (1.10x), 5000 half the time (1.98x), 9000 one time in ten (9.90x)."""


class Player:
    """One user on one socket, betting on every dice round while :meth:`play` runs."""

    def __init__(self, url: str, token: str, user_id: int, name: str) -> None:
        self.url, self.token, self.user_id, self.name = url, token, user_id, name
        self.ws: ClientConnection | None = None
        self.settled = 0
        self.pushes: list[dict[str, Any]] = []
        self._next_id = 10

    async def connect(self) -> dict[str, Any]:
        self.ws = await connect(self.url, open_timeout=5)
        init = sign_init_data(self.token, user_id=self.user_id, first_name=self.name)
        welcome = await self.request({"t": "auth", "init_data": init})
        assert welcome["t"] == "welcome", welcome
        return welcome

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` with a new id; its reply (pushes meanwhile are kept in :attr:`pushes`)."""
        assert self.ws is not None
        self._next_id += 1
        await self.ws.send(json.dumps({**message, "id": self._next_id}))
        async with asyncio.timeout(10):
            while True:
                reply: dict[str, Any] = json.loads(await self.ws.recv())
                if reply.get("id") == self._next_id:
                    return reply
                self.pushes.append(reply)

    async def play(self, rounds: int, amount: int = 10) -> None:
        """Bet on ``rounds`` dice rounds (one bet each, targets in turn) and wait for each to settle. Returns
        early, quietly, when the node goes away."""
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed, OSError, InvalidStatus):
            await self.request({"t": "subscribe", "game": "dice"})
            for n in range(rounds):
                round_id = await self._betting_round()
                reply = await self.request({"t": "bet", "game": "dice", "round": round_id, "amount": amount,
                                            "key": secrets.token_hex(6),
                                            "params": {"target": TARGETS[n % 3], "side": "over"}})  # fmt: skip
                if reply["t"] != "bet_ok":
                    continue  # the round closed meanwhile: the next one
                bet_id = reply["bet"]["id"]
                await self._wait(lambda e, b=bet_id: e.get("t") == "bet_settled" and e.get("bet") == b)
                self.settled += 1

    async def watched(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first ``leaderboard`` push matching ``predicate`` (kept or still to come)."""
        return await self._wait(lambda e: e.get("t") == "leaderboard" and "id" not in e and predicate(e), timeout)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def _betting_round(self) -> int:
        event = await self._wait(lambda e: e.get("t") == "round" and e.get("phase") == "betting", keep=False)
        return int(event["round"])

    async def _wait(self, predicate: Any, timeout: float = 30.0, keep: bool = True) -> dict[str, Any]:
        assert self.ws is not None
        for index, seen in enumerate(self.pushes):
            if predicate(seen):
                return self.pushes.pop(index)
        async with asyncio.timeout(timeout):
            while True:
                event: dict[str, Any] = json.loads(await self.ws.recv())
                if predicate(event):
                    return event
                if keep and event.get("t") != "round":
                    self.pushes.append(event)


async def expected_boards(dsn: str) -> BoardChanges:
    """Every board as the settled bets in PostgreSQL make it (UTC)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            return await read_boards(conn, Planner(UTC), time.time())
    finally:
        await conn.close()


def expected_reply(content: BoardChanges, board: Board, limit: int) -> list[tuple[int, int, int | None, int | None]]:
    """The (user, score, multiplier, bet) of a board's first ``limit`` players, as a reply lists them."""
    key = board.at(datetime.now(UTC), UTC).key
    if board.metric == "win":
        wins = content.wins.get(key, {})
        scores = {user: win.payout for user, win in wins.items()}
    else:
        scores = content.net.get(key, {})
    order = sorted(scores, key=lambda user: (scores[user], str(user)), reverse=True)[:limit]
    if board.metric == "win":
        return [(user, scores[user], wins[user].multiplier, wins[user].bet_id) for user in order]
    return [(user, scores[user], None, None) for user in order]


def listed(reply: dict[str, Any]) -> list[tuple[int, int, int | None, int | None]]:
    return [(e["user"], e["score"], e.get("multiplier"), e.get("bet")) for e in reply["top"]]
