"""The capacity check's model and its reading of a round (loadtest/capacity_check.py), without a node."""

from __future__ import annotations

import pytest

from loadtest.capacity_check import BUSY, IDLE, LEASE_SECONDS, Observer, Shape, predict


def test_redis_time_adds_up_the_units_of_the_workload() -> None:
    # 100 s, 10 rounds of 10 s, climbing half the time; 2 nodes; 1,000 players of whom 100 bet every round and
    # cash out in 5 rounds out of 10
    shape = Shape(seconds=100.0, rounds=10, running_seconds=50.0, ticks=500, opened=10, reached=5)
    model = predict(shape, sockets=1_000, bettors=100, nodes=2, costs=BUSY)
    bets, cashouts = 10.0, 5.0  # a second
    game_events = 10 * 0.5 + 3 / 10
    user_events = 2 * bets + cashouts + 2 * cashouts / 2  # a cash-out on the node not driving: 2 publishes
    leases = 100 / (LEASE_SECONDS + 0.5 / ((bets + cashouts) / 100))
    expected = (game_events * (BUSY.game_event + 2 * BUSY.follower) + user_events * BUSY.user_event
                + leases * BUSY.lease + bets * BUSY.leaderboard_row)  # fmt: skip
    assert model.redis_us_per_player_second == pytest.approx(expected / 1_000)
    assert model.bets == bets and model.cashouts == cashouts
    assert model.game_frames == pytest.approx(1_000 * game_events)
    # an idle Redis pays more for the same units
    assert predict(shape, sockets=1_000, bettors=100, nodes=2).redis_us_per_player_second > expected / 1_000


def test_no_requests_no_leases() -> None:
    shape = Shape(seconds=10.0, rounds=1, running_seconds=5.0, ticks=50, opened=0, reached=0)
    with_players = predict(shape, sockets=1_000, bettors=0, nodes=1, costs=IDLE)
    game_events = 10 * 0.5 + 3 / 10
    assert with_players.redis_us_per_player_second == pytest.approx(
        game_events * (IDLE.game_event + IDLE.follower) / 1_000
    )


def round_of(observer: Observer, number: int, multipliers: list[int]) -> None:
    observer.see({"ch": "game:crash", "t": "round", "round": number, "phase": "betting"}, b"")
    observer.see({"ch": "game:crash", "t": "round", "round": number, "phase": "running"}, b"")
    for multiplier in multipliers:
        observer.see({"ch": "game:crash", "t": "tick", "round": number, "multiplier": multiplier}, b"")
    observer.see({"ch": "game:crash", "t": "round", "round": number, "phase": "settled"}, b"")


def test_a_round_that_crashes_on_the_tick_after_the_target_gets_no_cash_out_predicted() -> None:
    observer = Observer(target=130)
    round_of(observer, 1, [100, 112, 125, 131, 140])  # went on: cash-outs in time
    round_of(observer, 2, [100, 112, 125])  # never reached
    round_of(observer, 3, [100, 112, 125, 131])  # crashed right after the tick at the target: they race the crash
    assert (observer.opened, observer.settled, observer.reached, observer.near) == (3, 3, 2, 1)
    assert observer.stray_ticks == 0 and observer.ticks == 12
