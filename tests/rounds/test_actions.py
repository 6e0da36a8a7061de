"""Cash-outs at exact multipliers, of one bet, several at once or the one named, and actions
forwarded from a node that does not drive the game, on a clock the test moves."""

from __future__ import annotations

import pytest

from protocol import ErrorCode
from server.rounds.engine import RoundRefused
from tests.rounds.clock import ManualClock
from tests.rounds.conftest import OpenTable, fixed_crash


async def test_a_cashout_pays_the_multiplier_the_curve_is_at(open_table: OpenTable) -> None:
    game = fixed_crash(300)
    async with open_table(game) as table:
        engine = await table.engine()
        betting = await table.events.round("betting")
        round_id = betting["round"]
        user = await table.player()
        bet = await table.bet(user, round_id, 100)
        with pytest.raises(RoundRefused) as early:
            await engine.action(table.name, round_id, user, "cashout", {})
        assert (early.value.code, early.value.field) == (ErrorCode.BAD_REQUEST, "round")  # still betting
        running = await table.close_betting(betting)
        await table.at(running, 500)
        await table.events.tick()
        assert await engine.action(table.name, round_id, user, "cashout", {}) == {
            "bet": bet,
            "multiplier": 164,
            "payout": 164,
        }
        assert (await table.bets(round_id))[bet] == ("accepted", 164, None)  # recorded before the answer
        with pytest.raises(RoundRefused, match=r"already cashed out at 1\.64x") as twice:
            await engine.action(table.name, round_id, user, "cashout", {})
        assert twice.value.field == "action"
        await table.at(running, game.elapsed_for(300))
        await table.events.round("settled")
        with pytest.raises(RoundRefused) as late:
            await engine.action(table.name, round_id, user, "cashout", {})
        assert late.value.code in (ErrorCode.BAD_REQUEST, ErrorCode.ROUND_MISMATCH)
    assert await table.bets(round_id) == {bet: ("won", 164, 164)}
    assert await table.balance(user) == 1000 - 100 + 164


async def test_a_cashout_takes_out_each_open_bet_at_once_or_the_one_named(open_table: OpenTable) -> None:
    game = fixed_crash(300)
    async with open_table(game) as table:
        engine = await table.engine()
        betting = await table.events.round("betting")
        round_id = betting["round"]
        user, other = await table.player(), await table.player()
        auto = await table.bet(user, round_id, 100, auto_cashout=110)
        first, second, named = [await table.bet(user, round_id, 100) for _ in range(3)]
        others = await table.bet(other, round_id, 100)
        running = await table.close_betting(betting)
        await table.at(running, 500)
        await table.events.tick()
        assert await engine.action(table.name, round_id, user, "cashout", {"bet": named}) == {
            "bet": named,
            "multiplier": 164,
            "payout": 164,
        }
        with pytest.raises(RoundRefused) as stranger:
            await engine.action(table.name, round_id, user, "cashout", {"bet": others})
        assert stranger.value.field == "params.bet"
        await table.at(running, 700)
        await table.events.tick()
        # The auto cash-out took the first bet out at 1.10x and the named one is out: the other two go, together.
        both = await engine.action(table.name, round_id, user, "cashout", {})
        assert both == {
            "bets": [
                {"bet": first, "multiplier": 201, "payout": 201},
                {"bet": second, "multiplier": 201, "payout": 201},
            ]
        }
        with pytest.raises(RoundRefused) as again:
            await engine.action(table.name, round_id, user, "cashout", {})
        assert again.value.field == "action"
        await table.at(running, game.elapsed_for(300))
        await table.events.round("settled")
    assert await table.bets(round_id) == {
        auto: ("won", None, 110),
        first: ("won", 201, 201),
        second: ("won", 201, 201),
        named: ("won", 164, 164),
        others: ("lost", None, 0),
    }
    assert await table.balance(user) == 1000 - 400 + 110 + 201 + 201 + 164


async def test_an_action_on_a_node_that_does_not_drive_the_game_is_applied_by_the_driver(
    open_table: OpenTable,
) -> None:
    game = fixed_crash(300)
    async with open_table(game) as table:
        await table.engine("node-a")
        betting = await table.events.round("betting")
        # node-b follows the game; it has a clock of its own, on which its standby waits forever.
        follower = await table.engine("node-b", clock=ManualClock(table.clock.now_ms()))
        round_id = betting["round"]
        user, nobody = await table.player(), await table.player()
        bet = await table.bet(user, round_id, 100)
        running = await table.close_betting(betting)
        await table.at(running, 500)
        await table.events.tick()
        with pytest.raises(RoundRefused) as refused:  # refusals come back too
            await follower.action(table.name, round_id, nobody, "cashout", {})
        assert (refused.value.code, refused.value.field) == (ErrorCode.BAD_REQUEST, "round")
        cashed = await follower.action(table.name, round_id, user, "cashout", {})
        assert cashed == {"bet": bet, "multiplier": 164, "payout": 164}
        announced = {key: value for key, value in running.items() if key not in ("t", "ch", "offset", "epoch", "ts")}
        assert follower.snapshot(table.name)[0] == {**announced, "multiplier": 164}  # node-b follows the ticks
        await table.at(running, game.elapsed_for(300))
        await table.events.round("settled")
    assert await table.bets(round_id) == {bet: ("won", 164, 164)}
