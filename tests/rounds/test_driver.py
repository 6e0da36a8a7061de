"""The round loop on a clock the test moves: each phase and its events in order, ticks at chosen
times, a failing handler voiding its round, a driver fenced off by a newer lease."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import pytest

from server.rounds.driver import next_tick
from server.rounds.fair import FairRng, sha256_hex
from server.rounds.handler import (
    BetInfo,
    BetParams,
    GameParams,
    RoundContext,
    RoundHandler,
    RunState,
    StartResult,
    TickResult,
)
from server.rounds.lease import take_lease
from tests.rounds.conftest import OpenTable, fixed_crash


async def test_a_round_goes_betting_running_settled_publishing_each_step_in_order(open_table: OpenTable) -> None:
    game = fixed_crash(300)
    async with open_table(game) as table:
        await table.engine()
        betting = await table.events.round("betting")
        round_id = betting["round"]
        user = await table.player()
        bet = await table.bet(user, round_id, 100)
        running = await table.close_betting(betting)
        assert (await table.events.tick())["multiplier"] == 100  # no time has passed since the start
        await table.at(running, 500)
        assert (await table.events.tick())["multiplier"] == game.multiplier(500) == 164
        await table.at(running, game.elapsed_for(300))
        last = await table.events.tick()
        settled = await table.events.round("settled")
        following = await table.next_round()
    events = table.events.events[: following["offset"]]
    assert [(e["t"], e.get("phase")) for e in events] == [
        ("round", "betting"),
        ("round", "running"),
        ("tick", None),
        ("tick", None),
        ("tick", None),
        ("round", "settled"),
        ("round", "betting"),
    ]
    assert [e["offset"] for e in events] == list(range(1, 8)) and {e["epoch"] for e in events} == {betting["epoch"]}
    assert {e["ch"] for e in events} == {f"game:{table.name}"}
    assert running["started_at"] >= betting["closes_at"] and running["ts"] == betting["closes_at"]
    assert last == {
        "t": "tick",
        "game": table.name,
        "round": round_id,
        "multiplier": 300,
        "crashed": True,
        "ch": f"game:{table.name}",
        "offset": 5,
        "epoch": betting["epoch"],
        "ts": running["started_at"] + game.elapsed_for(300),
    }
    assert settled["outcome"] == {"crash_point": 300} and "voided" not in settled
    # Provably fair: the seed revealed hashes to the hash announced, and the chain runs backwards.
    assert sha256_hex(settled["seed"]) == betting["seed_hash"] == settled["seed_hash"]
    assert following["seed_hash"] == settled["seed"] and following["round"] > round_id
    assert await table.phase(round_id) == "settled"
    assert await table.bets(round_id) == {bet: ("lost", None, 0)}
    assert await table.balance(user) == 900


def failing_game(where: str) -> RoundHandler[Any, Any]:
    """A game of this test's own whose handler raises in ``where`` (outcome, start or tick)."""

    class Failing(RoundHandler[GameParams, BetParams]):
        name = f"failing-{secrets.token_hex(4)}"

        def outcome(self, rng: FairRng) -> dict[str, Any]:
            if where == "outcome":
                raise RuntimeError("designer bug in outcome")
            return {"n": rng.below(2)}

        def payout(self, bet: BetInfo[BetParams], outcome: Mapping[str, Any]) -> int:
            if where == "payout":
                raise RuntimeError("designer bug in payout")
            return 2 * bet.amount

        def declared_rtp(self, bet: BetParams) -> float:
            return 2.0

        def start(self, ctx: RoundContext[GameParams], state: RunState[BetParams]) -> StartResult:
            if where == "start":
                raise RuntimeError("designer bug in start")
            return StartResult()

        def tick(self, ctx: RoundContext[GameParams], state: RunState[BetParams]) -> TickResult:
            if where == "tick":
                raise RuntimeError("designer bug in tick")
            return TickResult(done=True)

    return Failing()


@pytest.mark.parametrize(
    ("where", "phases"),
    [
        ("outcome", ["betting", "settled"]),
        ("start", ["betting", "settled"]),
        ("tick", ["betting", "running", "settled"]),
        ("payout", ["betting", "running", "settled"]),
    ],
)
async def test_a_handler_that_raises_voids_its_round_and_the_next_round_opens(
    open_table: OpenTable, where: str, phases: list[str]
) -> None:
    async with open_table(failing_game(where)) as table:
        await table.engine()
        betting = await table.events.round("betting")
        user = await table.player()
        bet = await table.bet(user, betting["round"], 40)
        table.clock.set(betting["closes_at"])
        settled = await table.events.round("settled")
        following = await table.next_round()  # the server goes on
    assert [e["phase"] for e in table.events.events[: phases.index("settled") + 1]] == phases
    assert (
        settled["voided"] is True and "outcome" not in settled and sha256_hex(settled["seed"]) == settled["seed_hash"]
    )
    assert following["round"] > betting["round"]
    assert await table.phase(betting["round"]) == "voided"
    assert await table.bets(betting["round"]) == {bet: ("refunded", None, 40)}
    assert await table.balance(user) == 1000


async def test_a_driver_whose_lease_was_taken_over_changes_nothing_more(open_table: OpenTable) -> None:
    async with open_table(fixed_crash(300)) as table:
        await table.engine("node-a")
        betting = await table.events.round("betting")
        round_id = betting["round"]
        user = await table.player()
        bet = await table.bet(user, round_id, 100)
        newer = await take_lease(table.pool, table.name, "node-b")  # another node takes the game over
        table.clock.set(betting["closes_at"])
        await table.clock.until_asleep()  # node-a's attempt to close betting was refused: it stands by
        assert await table.phase(round_id) == "betting"
        assert [e["phase"] for e in table.events.events] == ["betting"]  # no running event
        assert await table.bets(round_id) == {bet: ("accepted", None, None)}
        # node-b took the lease only: the lock is free, so a second later node-a takes the game back
        # with a newer lease and a new epoch, and voids the round node-b left betting.
        table.clock.advance(1000)
        settled = await table.events.round("settled")
        assert (settled["round"], settled["voided"], settled["offset"]) == (round_id, True, 1)
        assert settled["epoch"] != betting["epoch"]
        assert await table.pool.fetchval("SELECT token FROM game_leases WHERE game = $1", table.name) == newer + 1
    assert await table.bets(round_id) == {bet: ("refunded", None, 100)}
    assert await table.balance(user) == 1000


def test_ticks_keep_the_rounds_schedule_and_skip_what_a_late_loop_missed() -> None:
    # On time (the publish took 30 ms): the next tick is due 100 ms after this one was, not after the publish.
    assert next_tick(1_000, 100, 1_030) == 1_100
    # Just late: the next one is still on the schedule.
    assert next_tick(1_000, 100, 1_099) == 1_100
    # The loop ran 250 ms late: ticks 1,100 and 1,200 are skipped, never sent in a burst.
    assert next_tick(1_000, 100, 1_250) == 1_300
    assert next_tick(1_000, 100, 1_300) == 1_400
