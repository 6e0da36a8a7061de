"""Watched boards, with the store and names faked: a push only when the top changed (or the period rolled
over), each socket with its own place, one read per board per pass however many watch it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from protocol import messages as m
from server.leaderboards import Board, BoardKey, Standing
from server.leaderboards.watch import BoardWatchers

NOW = datetime(2026, 12, 3, 23, 59, 59, tzinfo=UTC)


class FakeBoards:
    """Boards by period key: user -> score; counts the reads."""

    def __init__(self) -> None:
        self.scores: dict[str, dict[int, int]] = {}
        self.reads = 0
        self.now = NOW.timestamp()

    def clock(self) -> float:
        return self.now

    def ranked(self, key: BoardKey) -> list[Standing]:
        scores = self.scores.get(key.period_key, {})
        order = sorted(scores.items(), key=lambda item: (-item[1], -item[0]))
        return [Standing(user, rank, score) for rank, (user, score) in enumerate(order, start=1)]

    async def read_top(self, key: BoardKey, limit: int) -> m.LeaderboardReply:
        self.reads += 1
        board = key.board
        top = [m.LeaderboardEntry(user=s.user_id, name=f"p{s.user_id}", score=s.score, rank=s.rank)
               for s in self.ranked(key)[:limit]]  # fmt: skip
        return m.LeaderboardReply(game=board.scope, metric=board.metric, period=board.period,
                                  period_key=key.period_key, top=top, me=None)  # fmt: skip

    async def read_standings(self, key: BoardKey, users: Sequence[int]) -> dict[int, Standing]:
        return {s.user_id: s for s in self.ranked(key) if s.user_id in users}


BOARD = Board("dice", "net", "day")


async def watched(boards: FakeBoards) -> tuple[BoardWatchers, dict[str, list[m.LeaderboardReply]]]:
    watchers = BoardWatchers(boards.read_top, boards.read_standings, tz=UTC, clock=boards.clock)
    pushed: dict[str, list[m.LeaderboardReply]] = {"a": [], "b": [], "c": []}
    for owner, user, limit in (("a", 1, 2), ("b", 2, 2), ("c", 3, 5)):
        shown = await boards.read_top(BOARD.at(NOW, UTC), limit)
        watchers.add(owner, user, shown, limit, pushed[owner].append)
    return watchers, pushed


async def test_a_board_is_pushed_only_when_its_top_changed() -> None:
    boards = FakeBoards()
    boards.scores["2026-12-03"] = {1: 10, 2: 5, 3: 1}
    watchers, pushed = await watched(boards)
    reads = boards.reads
    assert await watchers.push_changes() == 0 and boards.reads == reads  # nothing changed, nothing read
    boards.scores["2026-12-03"][3] = 2  # below the top 2: only the top 5 changed
    watchers.changed(["dice:net:day", "all:net:day"])
    assert await watchers.push_changes() == 1
    assert boards.reads == reads + 2  # one read per (board, limit) group
    assert [len(pushed[o]) for o in "abc"] == [0, 0, 1]
    push = pushed["c"][0]
    assert (push.id, push.period_key) == (None, "2026-12-03")
    assert push.me == m.LeaderboardStanding(rank=3, score=2)
    boards.scores["2026-12-03"][3] = 20  # now first
    watchers.changed(["dice:net:day"])
    watchers.changed(["dice:net:day"])  # twice in one second: one push
    assert await watchers.push_changes() == 3
    assert [e.user for e in pushed["a"][0].top] == [3, 1]
    assert pushed["a"][0].me == m.LeaderboardStanding(rank=2, score=10)
    assert pushed["b"][0].me == m.LeaderboardStanding(rank=3, score=5)  # outside its top 2: read for it
    watchers.changed(["crash:net:day"])  # another board
    assert await watchers.push_changes() == 0


async def test_a_new_period_is_pushed_when_it_starts() -> None:
    boards = FakeBoards()
    boards.scores["2026-12-03"] = {1: 10}
    watchers, pushed = await watched(boards)
    boards.now += 2  # past midnight: a new day, an empty board
    assert await watchers.push_changes() == 3
    assert pushed["a"][0].period_key == "2026-12-04" and pushed["a"][0].top == [] and pushed["a"][0].me is None
    assert await watchers.push_changes() == 0


async def test_a_socket_watches_one_board_until_it_stops() -> None:
    boards = FakeBoards()
    watchers, pushed = await watched(boards)
    assert watchers.watching == 3
    other = Board("all", "win", "week")
    watchers.add("a", 1, await boards.read_top(other.at(NOW, UTC), 10), 10, pushed["a"].append)  # replaces
    watchers.remove("b")
    watchers.remove("b")
    assert watchers.watching == 2
    boards.scores["2026-12-03"] = {5: 1}
    watchers.touch_all()
    assert await watchers.push_changes() == 1 and len(pushed["c"]) == 1 and not pushed["a"] and not pushed["b"]
    boards.now += timedelta(days=7).total_seconds()  # the week board rolls over too
    assert await watchers.push_changes() == 2
