"""Fixtures for the leaderboards' tests: a database of the test's own whose ledger feeds the boards, and a
store of each kind."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC

import asyncpg
import pytest

from server.leaderboards import BoardChanges, LeaderboardStore, Planner, record_settled
from server.leaderboards.memory import MemoryStore
from server.leaderboards.rebuild import read_boards
from server.leaderboards.redisstore import RedisStore
from server.ledger import BetRequest, Ledger
from tests.ledger.conftest import create_open_round, next_user_id, sign_up
from tests.services import migrated_pool


@dataclass
class Casino:
    """A database of one test's own, and a ledger on it whose settlements feed the leaderboards."""

    dsn: str
    pool: asyncpg.Pool
    ledger: Ledger
    users: dict[str, int] = field(default_factory=dict)

    def user(self, name: str) -> int:
        """The id of the player called ``name`` in this test (made at their first bet)."""
        if name not in self.users:
            self.users[name] = next_user_id()
        return self.users[name]

    async def play(self, results: Sequence[tuple[str, int, int]], game: str = "dice") -> list[int]:
        """One round of ``game``: each (player, stake, payout) a bet, then the round settled (a payout of -1:
        refunded). Returns the bet ids."""
        round_id = await create_open_round(self.pool, game)
        placed: list[int] = []
        for name, stake, _ in results:
            new = name not in self.users
            user = self.user(name)
            if new:
                await sign_up(self.ledger, user, first_name=name)
                await self.ledger.deposit(user, 1_000_000, ref=f"seed-{user}")
            bet = await self.ledger.place_bet(BetRequest(user, game, round_id, stake, key=secrets.token_hex(6)))
            placed.append(bet.bet_id)
        payouts = [(bet, payout) for bet, (_, _, payout) in zip(placed, results, strict=True) if payout >= 0]
        refunds = [bet for bet, (_, _, payout) in zip(placed, results, strict=True) if payout < 0]
        await self.ledger.settle(payouts, refunds=refunds)
        return placed

    async def expected(self, now: float) -> BoardChanges:
        """The boards the settled bets in PostgreSQL make (what a rebuild computes)."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await read_boards(conn, Planner(UTC), now)

    async def feed(self) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM leaderboard_feed ORDER BY id")


@pytest.fixture
async def casino(empty_database: str) -> AsyncIterator[Casino]:
    async with migrated_pool(empty_database, max_size=6) as pool:
        ledger = Ledger(pool, on_settled=record_settled)
        await ledger.start()
        yield Casino(empty_database, pool, ledger)
        await ledger.close()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LeaderboardStore]:
    made: LeaderboardStore
    if request.param == "memory":
        made = MemoryStore()
    else:
        made = RedisStore(request.getfixturevalue("redis_url"), prefix=f"test-{secrets.token_hex(4)}:")
    yield made
    await made.close()


def same_boards(actual: BoardChanges, expected: BoardChanges) -> bool:
    return (actual.net, actual.wins, actual.expiries) == (expected.net, expected.wins, expected.expiries)
