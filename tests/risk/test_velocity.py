"""Velocity and the "far above the population" rule, on synthetic rows (no database)."""

from __future__ import annotations

import datetime as dt

import pytest

from server.risk.flags import FlagKind
from server.risk.population import FarAbove, far_above, median, nearest_rank
from server.risk.velocity import BET_RULE, DEPOSIT_RULE, BusiestSpell, velocity_flags

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def test_percentiles_and_medians() -> None:
    assert nearest_rank([1, 2, 3, 4], 0.99) == 4 and nearest_rank([1, 2, 3, 4], 0.5) == 2
    assert nearest_rank(list(range(1, 201)), 0.99) == 198
    assert median([1, 2, 3]) == 2 and median([1, 2, 3, 10]) == 2.5


def test_a_bot_stands_out_and_its_own_count_does_not_raise_the_bar() -> None:
    counts = {user: 1 + user % 4 for user in range(300)} | {999: 400}
    [bot] = far_above(counts, FarAbove(floor=60))
    assert (bot.user_id, bot.count, bot.percentile_of_others, bot.users) == (999, 400, 4, 301)


@pytest.mark.parametrize(
    ("counts", "flagged"),
    [
        ({1: 200}, []),  # alone: no population to be far above
        ({1: 200, 2: 3}, [1]),  # tiny population: the others' percentile is the other player's count
        ({1: 50, 2: 3, 3: 2}, []),  # below the floor, however far above the others
        ({1: 80, 2: 20, 3: 20, 4: 20}, []),  # above the floor but not 10 times the median (20)
        ({1: 300, 2: 300, **{u: 2 for u in range(3, 40)}}, []),  # two bots in 39 users: 5%, beyond the p99
        ({1: 300, 2: 290, **{u: 2 for u in range(3, 300)}}, [1, 2]),  # two in 300: each above the others' p99
        ({u: 100 for u in range(50)}, []),  # everyone at 100: nobody above the others
    ],
)
def test_the_rule(counts: dict[int, int], flagged: list[int]) -> None:
    assert [outlier.user_id for outlier in far_above(counts, FarAbove(floor=60))] == flagged


def test_velocity_flags_say_when_and_against_what() -> None:
    spells = [BusiestSpell(user, T0 + dt.timedelta(minutes=user), 1 + user % 3) for user in range(200)]
    spells.append(BusiestSpell(7_000, T0 + dt.timedelta(hours=5), 300))
    [flag] = velocity_flags(spells, FlagKind.BET_VELOCITY, BET_RULE)
    assert (flag.user_id, flag.kind, flag.score) == (7_000, FlagKind.BET_VELOCITY, 300)
    assert flag.evidence["bets_per_minute"] == 300 and flag.evidence["minute_start"] == "2026-03-01T05:00:00+00:00"
    assert flag.evidence["population_median_of_others"] == 2 and flag.evidence["population_users"] == 201
    assert flag.summary.startswith("300 bets in the minute from 2026-03-01 05:00 UTC")
    deposits = [BusiestSpell(user, T0, 1) for user in range(50)] + [BusiestSpell(8_000, T0, 12)]
    [flag] = velocity_flags(deposits, FlagKind.DEPOSIT_VELOCITY, DEPOSIT_RULE)
    assert (flag.user_id, flag.evidence["deposits_per_hour"]) == (8_000, 12)
    assert velocity_flags([*deposits[:-1], BusiestSpell(8_000, T0, 9)], FlagKind.DEPOSIT_VELOCITY, DEPOSIT_RULE) == []
