"""Responsible-gaming rules without I/O (server/players/limits.py), on fixed times."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from protocol import ErrorCode
from server.players.limits import (
    RAISE_DELAY,
    SESSION_BREAK,
    Calendar,
    InvalidLimit,
    Limit,
    LimitKind,
    Period,
    PlayerLimits,
    Usage,
    change_limit,
    check_limit,
    deposit_refusal,
    exclusion_end,
    lengthens,
    session_verdict,
)

NOW = dt.datetime(2026, 12, 3, 15, 30, tzinfo=dt.UTC)  # a Thursday
UTC = Calendar()


def loss(amount: int, period: Period = Period.DAY) -> Limit:
    return Limit(LimitKind.LOSS, period, amount)


def test_a_lower_or_new_limit_applies_at_once_a_higher_one_after_24_hours() -> None:
    new = change_limit(None, LimitKind.LOSS, Period.DAY, 500, NOW)
    assert new == loss(500)
    lower = change_limit(new, LimitKind.LOSS, Period.DAY, 200, NOW)
    assert lower == loss(200)
    higher = change_limit(lower, LimitKind.LOSS, Period.DAY, 900, NOW)
    assert higher is not None and higher.amount == 200 and higher.pending_amount == 900
    assert higher.pending_from == NOW + RAISE_DELAY
    assert higher.in_force(NOW + RAISE_DELAY - dt.timedelta(seconds=1)) == 200
    assert higher.in_force(NOW + RAISE_DELAY) == 900
    # Lowering while a raise waits drops the raise.
    assert change_limit(higher, LimitKind.LOSS, Period.DAY, 100, NOW + dt.timedelta(hours=1)) == loss(100)
    # Asking for the waiting raise again does not restart its 24 hours from now... it is a new raise.
    again = change_limit(higher, LimitKind.LOSS, Period.DAY, 900, NOW + dt.timedelta(hours=2))
    assert again is not None and again.pending_from == NOW + dt.timedelta(hours=2) + RAISE_DELAY


def test_removing_a_limit_waits_24_hours_and_a_due_raise_counts_as_in_force() -> None:
    removed = change_limit(loss(300), LimitKind.LOSS, Period.DAY, None, NOW)
    assert removed is not None and removed.amount == 300 and removed.pending_amount is None
    assert removed.in_force(NOW) == 300 and removed.in_force(NOW + RAISE_DELAY) is None
    # Once the removal is due there is no limit: a new one applies at once, whatever its amount.
    assert change_limit(removed, LimitKind.LOSS, Period.DAY, 10_000, NOW + RAISE_DELAY) == loss(10_000)
    # Removing a limit nobody set changes nothing.
    assert change_limit(None, LimitKind.LOSS, Period.DAY, None, NOW) is None
    # A raise that is due is the amount in force: raising from it is judged against it.
    raised = Limit(LimitKind.WAGER, Period.WEEK, 100, 500, NOW - dt.timedelta(seconds=1))
    assert change_limit(raised, LimitKind.WAGER, Period.WEEK, 400, NOW) == Limit(LimitKind.WAGER, Period.WEEK, 400)


@pytest.mark.parametrize(
    ("kind", "period", "amount", "field"),
    [
        ("spend", "day", 1, "kind"),
        ("loss", "year", 1, "period"),
        ("loss", "session", 1, "period"),
        ("loss", "day", 0, "amount"),
        ("session", "day", 60, "period"),
        ("session", "session", 4, "amount"),
        ("session", "session", 24 * 60 + 1, "amount"),
    ],
)
def test_a_limit_request_out_of_range_names_its_field(kind: str, period: str, amount: int, field: str) -> None:
    with pytest.raises(InvalidLimit) as caught:
        check_limit(kind, period, amount)
    assert caught.value.field == field


def test_exclusions_last_as_the_rules_say_and_only_lengthen() -> None:
    assert exclusion_end("cool_off", 1, NOW) == ("cool_off", NOW + dt.timedelta(days=1))
    assert exclusion_end("cool_off", 42, NOW)[1] == NOW + dt.timedelta(weeks=6)
    assert exclusion_end("self_exclusion", None, NOW) == ("self_exclusion", None)
    for kind, days in (("cool_off", 43), ("cool_off", None), ("self_exclusion", 182), ("nap", 3)):
        with pytest.raises(InvalidLimit):
            exclusion_end(kind, days, NOW)
    later = NOW + dt.timedelta(days=10)
    assert lengthens(later, True, later + dt.timedelta(days=1))
    assert not lengthens(later, True, NOW + dt.timedelta(days=2))  # shorter: refused
    assert lengthens(later, True, None)  # permanent is longer than any
    assert not lengthens(None, True, later)  # nothing is longer than permanent
    assert lengthens(None, False, later)  # an exclusion that ended is no obstacle


def test_calendar_periods_start_at_local_midnight_monday_and_the_first() -> None:
    assert UTC.start(Period.DAY, NOW) == dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    assert UTC.start(Period.WEEK, NOW) == dt.datetime(2026, 11, 30, tzinfo=dt.UTC)  # Monday
    assert UTC.start(Period.MONTH, NOW) == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert UTC.end(Period.DAY, NOW) == dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    assert UTC.end(Period.WEEK, NOW) == dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    assert UTC.end(Period.MONTH, NOW) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    berlin = Calendar(ZoneInfo("Europe/Berlin"))
    late = dt.datetime(2026, 3, 31, 22, 30, tzinfo=dt.UTC)  # already April 1st in Berlin (summer time)
    assert berlin.start(Period.MONTH, late) == dt.datetime(2026, 4, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    assert berlin.start(Period.MONTH, late).astimezone(dt.UTC) == dt.datetime(2026, 3, 31, 22, tzinfo=dt.UTC)
    # The day summer time begins is 23 hours long.
    spring = dt.datetime(2026, 3, 29, 12, tzinfo=dt.UTC)
    assert berlin.end(Period.DAY, spring) - berlin.start(Period.DAY, spring) == dt.timedelta(hours=23)


def test_a_stake_over_a_loss_or_wager_limit_is_refused_with_the_reset_time() -> None:
    day = UTC.start(Period.DAY, NOW)
    player = PlayerLimits([loss(100), Limit(LimitKind.WAGER, Period.WEEK, 1_000)],
                          usage={Period.DAY: Usage(day, wagered=150, paid=80),  # lost 70 today
                                 Period.WEEK: Usage(UTC.start(Period.WEEK, NOW), wagered=950)})  # fmt: skip
    assert player.refuse_bet(30, NOW, UTC) is None
    refusal = player.refuse_bet(31, NOW, UTC)
    assert refusal is not None and refusal.code is ErrorCode.LIMIT_REACHED
    assert refusal.resets_at == dt.datetime(2026, 12, 4, tzinfo=dt.UTC) and "30 left" in refusal.message
    player.stake(30, NOW, UTC)  # the batch's next bet sees this one
    refusal = player.refuse_bet(1, NOW, UTC)
    assert refusal is not None and "day loss" in refusal.message
    # Tomorrow the day's usage starts again; the week's wagers (980 of 1,000) still count.
    tomorrow = NOW + dt.timedelta(days=1)
    assert player.refuse_bet(20, tomorrow, UTC) is None
    weekly = player.refuse_bet(21, tomorrow, UTC)
    assert weekly is not None and weekly.resets_at == dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


def test_an_exclusion_refuses_every_bet_until_it_ends() -> None:
    until = NOW + dt.timedelta(days=2)
    cooling = PlayerLimits([], excluded="cool_off", excluded_until=until)
    refusal = cooling.refuse_bet(1, NOW, UTC)
    assert refusal is not None and (refusal.code, refusal.resets_at) == (ErrorCode.EXCLUDED, until)
    forever = PlayerLimits([], excluded="self_exclusion", excluded_until=None).refuse_bet(1, NOW, UTC)
    assert forever is not None and forever.resets_at is None and "for good" in forever.message


def test_deposits_count_every_period_the_player_limited() -> None:
    limits = [Limit(LimitKind.DEPOSIT, Period.DAY, 500), Limit(LimitKind.DEPOSIT, Period.MONTH, 2_000)]
    deposited = {Period.DAY: 400, Period.WEEK: 1_500, Period.MONTH: 1_900}
    assert deposit_refusal(limits, deposited, 100, NOW, UTC) is None
    over_day = deposit_refusal(limits, deposited, 101, NOW, UTC)
    assert over_day is not None and over_day.resets_at == dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    over_month = deposit_refusal(limits, {**deposited, Period.MONTH: 1_950}, 100, NOW, UTC)
    assert over_month is not None and over_month.resets_at == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_a_session_runs_its_minutes_then_a_break_then_starts_again() -> None:
    first = session_verdict(60, None, NOW)
    assert first.restart and first.ends_at == NOW + dt.timedelta(minutes=60)
    within = session_verdict(60, NOW, NOW + dt.timedelta(minutes=59))
    assert not within.restart and within.ends_at == NOW + dt.timedelta(minutes=60)
    resting = session_verdict(60, NOW, NOW + dt.timedelta(minutes=60))
    assert resting.refused_until == NOW + dt.timedelta(minutes=60) + SESSION_BREAK and resting.ends_at is None
    back = session_verdict(60, NOW, NOW + dt.timedelta(minutes=60) + SESSION_BREAK)
    assert back.restart and back.ends_at == NOW + dt.timedelta(minutes=120) + SESSION_BREAK
