"""Voids through the round engine, step by step on a clock the test moves (tests/rounds/conftest.py): a
running crash round with a cash-out recorded, a betting round asked of a node that does not drive the
game, and the voids the engine refuses."""

from __future__ import annotations

import pytest

from protocol import ErrorCode
from server.rounds.engine import RoundRefused
from tests.rounds.clock import ManualClock
from tests.rounds.conftest import OpenTable, fixed_crash
from tests.rounds.conftest import open_table as open_table  # the fixture, from the round engine tests


async def test_a_running_round_is_voided_by_its_driver_every_stake_back_then_the_next_round(
    open_table: OpenTable,
) -> None:
    game = fixed_crash(300)
    async with open_table(game) as table:
        engine = await table.engine()
        betting = await table.events.round("betting")
        round_id = betting["round"]
        user, other = await table.player(), await table.player()
        await table.bet(user, round_id, 100)
        await table.bet(other, round_id, 250)
        running = await table.close_betting(betting)
        await table.at(running, 500)
        await table.events.tick()
        await engine.action(table.name, round_id, user, "cashout", {})  # 1.64x recorded, paid only at settlement
        with pytest.raises(RoundRefused) as mismatch:
            await engine.void(table.name, round_id + 1000, "not this one")
        assert mismatch.value.code is ErrorCode.ROUND_MISMATCH
        result = await engine.void(table.name, round_id, "the curve was misconfigured")
        assert result == {"game": table.name, "round": round_id, "phase": "voided", "was": "running", "refunded": 2,
                          "total": 350}  # fmt: skip
        settled = await table.events.round("settled")
        assert settled["round"] == round_id and settled["voided"] is True and settled["seed"]
        assert await table.phase(round_id) == "voided"
        assert {status for status, _, _ in (await table.bets(round_id)).values()} == {"refunded"}
        assert (await table.balance(user), await table.balance(other)) == (1000, 1000)
        following = await table.events.round("betting")  # the driver goes on, with no pause
        assert following["round"] > round_id
        with pytest.raises(RoundRefused) as closed:
            await engine.void(table.name, round_id, "again")
        assert closed.value.code is ErrorCode.ROUND_MISMATCH  # no longer the current round


async def test_a_void_asked_of_a_node_that_does_not_drive_the_game_is_made_by_the_one_that_does(
    open_table: OpenTable,
) -> None:
    async with open_table(fixed_crash(300)) as table:
        await table.engine("node-a")
        betting = await table.events.round("betting")
        follower = await table.engine("node-b", clock=ManualClock(table.clock.now_ms()))
        assert follower.driven() == ()
        user = await table.player()
        await table.bet(user, betting["round"], 300)
        result = await follower.void(table.name, betting["round"], "duplicate round")
        assert (result["was"], result["refunded"], result["total"]) == ("betting", 1, 300)
        assert (await table.events.round("settled"))["voided"] is True
        assert await table.balance(user) == 1000
