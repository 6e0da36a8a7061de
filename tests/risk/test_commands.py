"""The report's window and what it prints (no database)."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from server.risk.commands import render_json, render_table, window_of
from server.risk.flags import Flag, FlagKind, Window
from server.risk.report import Report

NOW = dt.datetime(2026, 3, 2, 10, 17, 42, tzinfo=dt.UTC)


def test_the_window_defaults_to_the_last_24_hours_to_the_minute() -> None:
    window = window_of(None, None, NOW)
    assert (window.start, window.end) == (dt.datetime(2026, 3, 1, 10, 17, tzinfo=dt.UTC),
                                          dt.datetime(2026, 3, 2, 10, 17, tzinfo=dt.UTC))  # fmt: skip
    window = window_of("2026-02-01", "2026-02-02T06:00+02:00", NOW)
    assert window.start == dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert window.end == dt.datetime(2026, 2, 2, 4, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("since", "until", "says"),
    [
        ("yesterday", None, "--since must be a date"),
        (None, "soon", "--until must be a date"),
        ("2026-03-02", "2026-03-01", "a window must start before it ends"),
    ],
)
def test_bad_windows_say_what_is_wrong(since: str | None, until: str | None, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        window_of(since, until, NOW)


def test_a_window_needs_aware_bounds() -> None:
    with pytest.raises(ValueError, match="aware"):
        Window(dt.datetime(2026, 3, 1), NOW)


def test_the_table_and_the_json() -> None:
    window = Window(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    flags = [Flag(42, FlagKind.LUCK, 12.5, {"summary": "dice: z = 12.5"}),
             Flag(7, FlagKind.BET_VELOCITY, 300, {"summary": "300 bets"})]  # fmt: skip
    report = Report(window, flags, frozenset({(42, FlagKind.LUCK)}))
    table = render_table(report).splitlines()
    assert table[0] == "risk report 2026-03-01 00:00 to 2026-03-02 00:00 UTC: 2 flag(s), 1 new"
    assert table[2].split() == ["*", "42", "luck", "12.5", "dice:", "z", "=", "12.5"]
    assert table[3].split()[:3] == ["7", "bet_velocity", "300"]
    data = orjson.loads(render_json(report))
    assert data["window"] == {"since": "2026-03-01T00:00:00+00:00", "until": "2026-03-02T00:00:00+00:00"}
    assert data["flags"][0] == {"user_id": 42, "kind": "luck", "score": 12.5, "evidence": {"summary": "dice: z = 12.5"},
                                "new": True}  # fmt: skip
    assert render_table(Report(window, [], frozenset())).endswith("0 flag(s), 0 new")
