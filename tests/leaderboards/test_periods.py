"""Periods, keys and expiry: pure functions of a time and a time zone (no I/O, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from server.leaderboards.periods import KEEP_AFTER, expires_at, period_end, period_key, time_zone

BERLIN = time_zone("Europe/Berlin")
TOKYO = time_zone("Asia/Tokyo")


def at(text: str) -> datetime:
    """An aware UTC time from ``YYYY-MM-DD HH:MM``."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("when", "tz", "day", "week"),
    [
        ("2026-12-03 12:00", UTC, "2026-12-03", "2026-W49"),
        ("2026-12-03 23:30", BERLIN, "2026-12-04", "2026-W49"),  # already Friday in Berlin
        ("2026-12-06 23:30", BERLIN, "2026-12-07", "2026-W50"),  # Monday in Berlin: a new ISO week
        ("2026-12-06 23:30", UTC, "2026-12-06", "2026-W49"),
        ("2026-12-06 15:30", TOKYO, "2026-12-07", "2026-W50"),
        ("2027-01-01 10:00", UTC, "2027-01-01", "2026-W53"),  # ISO: the first days of 2027 are 2026's week 53
        ("2027-01-04 00:00", UTC, "2027-01-04", "2027-W01"),
    ],
)
def test_a_settlement_counts_in_the_local_day_and_iso_week(when: str, tz: object, day: str, week: str) -> None:
    assert period_key("day", at(when), tz) == day  # type: ignore[arg-type]
    assert period_key("week", at(when), tz) == week  # type: ignore[arg-type]
    assert period_key("all", at(when), tz) == "all"  # type: ignore[arg-type]


def test_a_period_ends_at_the_next_local_midnight_or_monday_midnight() -> None:
    assert period_end("day", at("2026-12-03 12:00"), UTC) == at("2026-12-04 00:00")
    assert period_end("day", at("2026-12-03 12:00"), BERLIN) == at("2026-12-03 23:00")  # CET is UTC+1
    assert period_end("week", at("2026-12-03 12:00"), UTC) == at("2026-12-07 00:00")
    assert period_end("week", at("2026-12-07 00:00"), UTC) == at("2026-12-14 00:00")  # Monday 00:00 opens a week
    assert period_end("all", at("2026-12-03 12:00"), UTC) is None


def test_a_day_spanning_a_daylight_saving_change_is_23_or_25_hours() -> None:
    spring = period_end("day", at("2026-03-29 05:00"), BERLIN)  # clocks go forward at 02:00 that night
    assert spring is not None and spring - at("2026-03-28 23:00") == timedelta(hours=23)
    autumn = period_end("day", at("2026-10-25 05:00"), BERLIN)
    assert autumn is not None and autumn - at("2026-10-24 22:00") == timedelta(hours=25)


def test_day_and_week_boards_expire_some_days_after_their_period_all_time_never() -> None:
    end = at("2026-12-04 00:00")
    assert expires_at("day", at("2026-12-03 12:00"), UTC) == int((end + KEEP_AFTER).timestamp())
    assert expires_at("week", at("2026-12-03 12:00"), UTC) == int((at("2026-12-07 00:00") + KEEP_AFTER).timestamp())
    assert expires_at("all", at("2026-12-03 12:00"), UTC) is None


def test_time_zones_by_name() -> None:
    assert time_zone("UTC") is UTC  # needs no time zone database
    assert period_key("day", at("2026-12-03 23:30"), time_zone("Europe/Berlin")) == "2026-12-04"
    with pytest.raises(ValueError, match="Mars/Olympus"):
        time_zone("Mars/Olympus")
