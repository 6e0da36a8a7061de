"""The leaderboard store's conformance suite, over both backends: the in-process one and Redis (a real one).

Every test runs against each; they must agree on ranks and ties, wins, the batch guard, replacing every
board at once, and expiry."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from server.leaderboards import (
    Board,
    BoardChanges,
    LeaderboardStore,
    LeaderboardUnavailable,
    SettledBet,
    Standing,
    Win,
    plan,
)
from server.leaderboards.memory import MemoryStore
from server.leaderboards.redisstore import RedisStore
from tests.services import free_port

NOW = datetime.now(UTC).replace(microsecond=0)  # Redis expires keys by its own clock: stay near it


@dataclass
class FakeClock:
    now: float = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[LeaderboardStore]:
    made: LeaderboardStore
    if request.param == "memory":
        made = MemoryStore(clock)
    else:
        made = RedisStore(request.getfixturevalue("redis_url"), prefix=f"test-{secrets.token_hex(4)}:")
    yield made
    await made.close()


def bets(*rows: tuple[int, int, int, int], game: str = "dice", at: datetime = NOW) -> list[SettledBet]:
    """(bet id, user, stake, payout) rows settled at ``at``."""
    return [SettledBet(bet_id, user, game, stake, payout, at) for bet_id, user, stake, payout in rows]


def changes(*rows: tuple[int, int, int, int], at: datetime = NOW) -> BoardChanges:
    return plan(bets(*rows, at=at), UTC, NOW.timestamp())


NET = Board("dice", "net", "all").at(NOW, UTC)
WIN = Board("dice", "win", "all").at(NOW, UTC)
DAY = Board("all", "net", "day").at(NOW, UTC)


async def test_a_batch_counts_once_however_often_it_is_applied(store: LeaderboardStore) -> None:
    batch = changes((1, 7, 10, 30), (2, 8, 10, 0))
    assert await store.apply(1, batch) is True
    assert await store.apply(1, batch) is False
    assert await store.apply(2, changes((3, 8, 10, 15))) is True
    assert await store.top(NET, 10) == [Standing(7, 1, 20), Standing(8, 2, -5)]


async def test_concurrent_applies_of_one_batch_count_once(store: LeaderboardStore) -> None:
    batch = changes((1, 7, 10, 30))
    applied = await asyncio.gather(*(store.apply(5, batch) for _ in range(8)))
    assert sorted(applied) == [False] * 7 + [True]
    assert await store.top(NET, 10) == [Standing(7, 1, 20)]


async def test_ranks_best_first_equal_scores_by_user_id_as_text_descending(store: LeaderboardStore) -> None:
    await store.apply(1, changes((1, 9, 10, 20), (2, 10, 10, 20), (3, 100, 10, 20), (4, 5, 10, 40), (5, 6, 10, 0)))
    assert [(s.user_id, s.rank, s.score) for s in await store.top(NET, 10)] == [
        (5, 1, 30), (9, 2, 10), (100, 3, 10), (10, 4, 10), (6, 5, -10)]  # fmt: skip
    assert [s.user_id for s in await store.top(NET, 2)] == [5, 9]
    assert await store.standings(NET, [6, 10, 42]) == {6: Standing(6, 5, -10), 10: Standing(10, 4, 10)}
    assert await store.standings(NET, []) == {}


async def test_an_absent_board_is_empty(store: LeaderboardStore) -> None:
    assert await store.top(Board("roulette", "net", "week").at(NOW, UTC), 10) == []
    assert await store.standings(Board("roulette", "net", "week").at(NOW, UTC), [7]) == {}


async def test_a_win_board_keeps_each_users_biggest_win_with_its_multiplier_and_bet(store: LeaderboardStore) -> None:
    await store.apply(1, changes((10, 7, 10, 30), (11, 8, 1, 25)))
    await store.apply(2, changes((12, 7, 100, 200), (13, 8, 5, 20)))  # 8's 20 does not beat 25
    await store.apply(3, changes((9, 7, 2, 200), (14, 7, 1, 200)))  # 200 again: bet 9 is earlier than 12, 14 is not
    assert await store.top(WIN, 10) == [Standing(7, 1, 200, Win(200, 10000, 9)), Standing(8, 2, 25, Win(25, 2500, 11))]
    assert await store.standings(WIN, [8]) == {8: Standing(8, 2, 25)}


async def test_replace_makes_the_content_every_board_at_once_and_marks_its_batches(store: LeaderboardStore) -> None:
    await store.apply(1, changes((1, 7, 10, 30), (2, 8, 10, 0)))
    stale = Board("roulette", "net", "all").at(NOW, UTC)
    await store.apply(2, plan(bets((3, 9, 10, 0), game="roulette"), UTC, NOW.timestamp()))
    assert await store.top(stale, 10) != []
    content = changes((1, 7, 10, 30), (2, 8, 10, 0), (4, 8, 10, 50))
    await store.replace(content, [3, 4])
    assert await store.top(NET, 10) == [Standing(8, 1, 30), Standing(7, 2, 20)]
    assert await store.top(WIN, 10) == [Standing(8, 1, 50, Win(50, 500, 4)), Standing(7, 2, 30, Win(30, 300, 1))]
    assert await store.top(stale, 10) == []
    assert await store.apply(3, changes((5, 7, 10, 1000))) is False  # in the content already
    assert await store.apply(4, changes((5, 7, 10, 1000))) is False
    assert await store.apply(6, changes((6, 9, 10, 20))) is True
    assert [s.user_id for s in await store.top(NET, 10)] == [8, 7, 9]


async def test_a_store_is_built_once_replace_has_made_every_board(store: LeaderboardStore) -> None:
    assert not await store.built()
    await store.apply(1, changes((1, 7, 10, 30)))
    assert not await store.built()  # a batch is a change, not every board
    await store.replace(changes((1, 7, 10, 30)), [1])
    assert await store.built()


async def test_dump_is_what_the_batches_made(store: LeaderboardStore) -> None:
    first, second = changes((1, 7, 10, 30), (2, 8, 10, 0)), changes((3, 7, 10, 0), (4, 9, 5, 40))
    await store.apply(1, first)
    await store.apply(2, second)
    dumped = await store.dump()
    whole = changes((1, 7, 10, 30), (2, 8, 10, 0), (3, 7, 10, 0), (4, 9, 5, 40))
    assert dumped.net == whole.net
    assert dumped.wins == whole.wins
    assert dumped.expiries == whole.expiries
    other = MemoryStore()
    await other.replace(dumped, [])
    assert (await other.dump()).net == whole.net


async def test_day_and_week_boards_expire_all_time_ones_do_not(store: LeaderboardStore, clock: FakeClock) -> None:
    await store.apply(1, changes((1, 7, 10, 30)))
    content = await store.dump()
    day_ends = content.expiries[DAY.key]
    assert day_ends is not None and day_ends > NOW.timestamp()
    assert content.expiries["lb:dice:win:all:all"] is None
    # Redis expires keys by its own clock, which a test cannot move: there, dump shows the EXPIREAT it set.
    if isinstance(store, MemoryStore):
        clock.now = day_ends + 1
        assert await store.top(DAY, 10) == []
        assert await store.top(NET, 10) == [Standing(7, 1, 20)]


async def test_a_redis_that_does_not_answer_is_unavailable_not_a_bug() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(LeaderboardUnavailable, match="leaderboards unavailable"):
            await store.top(NET, 10)
        with pytest.raises(LeaderboardUnavailable):
            await store.apply(1, changes((1, 7, 10, 30)))
    finally:
        await store.close()
