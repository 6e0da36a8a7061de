"""Deposit-then-refund cycling on synthetic refunds (no database)."""

from __future__ import annotations

import datetime as dt

from server.risk.cycling import CyclingRule, RefundedDeposit, cycling_flags
from server.risk.flags import FlagKind

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def refund(user: int, charge: str, *, after: dt.timedelta = HOUR, staked: int = 0, credited: int = 100,
           taken: int = 100, deposited: bool = True) -> RefundedDeposit:  # fmt: skip
    return RefundedDeposit(user, charge, credited, taken, T0 + after, T0 if deposited else None, staked)


def test_two_refunds_in_the_window_flag_the_user() -> None:
    [flag] = cycling_flags([refund(1, "a"), refund(1, "b", after=5 * HOUR), refund(2, "c")])
    assert (flag.user_id, flag.kind, flag.score) == (1, FlagKind.REFUND_CYCLING, 2)
    assert [r["charge_id"] for r in flag.evidence["refunds"]] == ["a", "b"]
    assert flag.summary == "2 refunds; 200 chips credited, 0 short"


def test_one_refund_soon_after_its_chips_were_played() -> None:
    played = refund(1, "a", staked=60)  # more than half the 100 credited, an hour after the deposit
    short = refund(2, "b", taken=30)  # the wallet had lost 70 of them
    late = refund(3, "c", staked=100, after=30 * HOUR)  # played, but refunded more than 24 h later
    unplayed = refund(4, "d", staked=10)  # refunded soon, barely played
    unknown = refund(5, "e", staked=500, deposited=False)  # no deposit on the books: nothing to compare
    flags = cycling_flags([played, short, late, unplayed, unknown])
    assert [flag.user_id for flag in flags] == [1, 2]
    assert flags[0].evidence["refunds"][0]["played_soon"] is True
    assert "within 24 h of a deposit whose chips were played" in flags[0].summary
    assert flags[1].summary.endswith("100 chips credited, 70 short")


def test_the_rule_is_adjustable() -> None:
    rule = CyclingRule(min_refunds=3, soon=dt.timedelta(hours=2), played_share=0.05)
    assert cycling_flags([refund(1, "a", after=3 * HOUR), refund(1, "b", after=4 * HOUR)], rule) == []
    assert [flag.user_id for flag in cycling_flags([refund(4, "d", staked=10)], rule)] == [4]
