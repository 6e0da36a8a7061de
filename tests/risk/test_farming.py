"""Welcome-credit farming on synthetic sign-ins (no database)."""

from __future__ import annotations

import datetime as dt

from server.risk.farming import NewAccount, farming_flags
from server.risk.flags import FlagKind

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def account(user: int, address: str, minute: int = 0, welcomed: bool = True) -> NewAccount:
    return NewAccount(user, address, T0 + dt.timedelta(minutes=minute), welcomed)


def test_many_welcomed_accounts_from_one_address_are_each_flagged() -> None:
    farm = [account(100 + i, "203.0.113.7", i) for i in range(6)]
    honest = [account(i, f"198.51.100.{i}") for i in range(50)]
    shared = [account(200 + i, "192.0.2.1") for i in range(4)]  # four new players behind one NAT: below 5
    unwelcomed = [account(300 + i, "192.0.2.9", welcomed=False) for i in range(9)]  # claimed nothing
    flags = farming_flags(farm + honest + shared + unwelcomed)
    assert sorted(flag.user_id for flag in flags) == [100, 101, 102, 103, 104, 105]
    flag = flags[0]
    assert (flag.kind, flag.score, flag.evidence["address"], flag.evidence["count"]) == (
        FlagKind.WELCOME_FARMING, 6, "203.0.113.7", 6)  # fmt: skip
    assert flag.evidence["accounts"] == [100, 101, 102, 103, 104, 105]
    assert flag.summary == ("one of 6 new accounts claiming the welcome credit from 203.0.113.7, created "
                            "2026-03-01 00:00 to 2026-03-01 00:05 UTC")  # fmt: skip


def test_an_account_on_two_farms_gets_one_flag_for_the_bigger() -> None:
    rows = [account(i, "203.0.113.7") for i in range(5)] + [account(i, "2001:db8::1") for i in range(3, 10)]
    flags = {flag.user_id: flag for flag in farming_flags(rows)}
    assert sorted(flags) == list(range(10))
    assert flags[3].evidence["address"] == "2001:db8::1" and flags[0].evidence["address"] == "203.0.113.7"
    assert farming_flags(rows, min_accounts=8) == []
