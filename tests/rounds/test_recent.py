"""The last settled rounds a node keeps for ``history`` (server/rounds/recent.py), on a fake clock."""

from __future__ import annotations

import pytest

from protocol import messages as m
from server.rounds.events import RoundView
from server.rounds.recent import RecentRounds
from tests.conftest import StartNode
from tests.edge.client import authed, request
from tests.ledger.conftest import next_user_id
from tests.rounds.test_engine import FAST, next_event, round_event

GAME = "dice"


def settled(round_id: int, *, voided: bool = False) -> RoundView:
    outcome = None if voided else {"roll": round_id}
    return RoundView(game=GAME, round=round_id, seed_hash="ab" * 32, salt="cd" * 32, phase="settled",
                     seed=f"seed-{round_id}", voided=voided, outcome=outcome)  # fmt: skip


def record(round_id: int) -> m.RoundRecord:
    return m.RoundRecord(round=round_id, outcome={"roll": round_id}, seed=f"seed-{round_id}", seed_hash="ab" * 32,
                         salt="cd" * 32)  # fmt: skip


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rounds_settling_after_the_first_read_are_served_newest_first_without_voided_ones() -> None:
    clock = Clock()
    recent = RecentRounds(size=3, max_age=60.0, clock=clock)
    assert recent.get(GAME, 2) is None  # nothing read yet: ask PostgreSQL
    recent.fill(GAME, [record(5), record(4)])
    recent.record(settled(6))
    recent.record(settled(7, voided=True))
    recent.record(settled(6))  # the same event again changes nothing
    assert [r.round for r in recent.get(GAME, 3) or []] == [6, 5, 4]
    recent.record(settled(8))
    assert [r.round for r in recent.get(GAME, 3) or []] == [8, 6, 5]  # the oldest falls out
    assert recent.get(GAME, 4) is None  # more than it keeps: PostgreSQL
    assert recent.get(GAME, 1) == [record(8)]


def test_a_round_settling_while_the_list_is_read_is_kept_and_a_gap_or_age_sends_reads_back() -> None:
    clock = Clock()
    recent = RecentRounds(size=10, max_age=60.0, clock=clock)
    recent.record(settled(9))  # settled while the first read was in flight (PostgreSQL had up to 8)
    recent.fill(GAME, [record(8), record(7)])
    assert [r.round for r in recent.get(GAME, 10) or []] == [9, 8, 7]
    recent.forget(GAME)  # an event was missed
    assert recent.get(GAME, 1) is None
    recent.fill(GAME, [record(9)])
    clock.now = 60.5
    assert recent.get(GAME, 1) is None  # read more than a minute ago: PostgreSQL again


@pytest.mark.integration
async def test_history_from_the_rounds_a_node_saw_settle_equals_postgresqls(
    start_node: StartNode, redis_url: str
) -> None:
    """A node answers ``history`` from PostgreSQL once, then from the rounds it sees settle: the same records
    as a node that reads them from PostgreSQL."""
    async with start_node(**FAST, redis_url=redis_url) as node:
        ws, _ = await authed(node, next_user_id())
        await request(ws, {"t": "subscribe", "id": "s", "game": "dice"})
        await next_event(ws, round_event("settled"))
        first = (await request(ws, {"t": "history", "id": 1, "game": "dice", "limit": 5}))["rounds"]
        newest = first[0]["round"]  # round ids are shared by the games: the next dice round's is larger
        later = (await next_event(ws, lambda e: round_event("settled")(e) and e["round"] > newest))["round"]
        cached = (await request(ws, {"t": "history", "id": 2, "game": "dice", "limit": 5}))["rounds"]
        assert cached[0]["round"] >= later and [r["round"] for r in cached] == sorted(
            (r["round"] for r in cached), reverse=True
        )
        # A node that never saw these rounds settle: PostgreSQL's answer.
        async with start_node(**FAST, redis_url=redis_url) as cold:
            ws_cold, _ = await authed(cold, next_user_id())
            fresh = (await request(ws_cold, {"t": "history", "id": 3, "game": "dice", "limit": 5}))["rounds"]
            await ws_cold.close()
        upto = min(cached[0]["round"], fresh[0]["round"])
        assert [r for r in cached if r["round"] <= upto][:3] == [r for r in fresh if r["round"] <= upto][:3]
        await ws.close()
