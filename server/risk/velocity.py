"""Velocity: bets a minute, deposits an hour, far above what the population does.

Each user's busiest minute of bets (bets placed, whatever became of them) and busiest hour of deposits
(Stars payments credited) in the window, compared with every other user active in the window by the
rule of :mod:`.population`: above the others' 99th percentile, at least 10 times their median (5 times
for deposits), and at least 60 bets in a minute (a bet a second for a whole minute: a script, or a player who should be
asked) or 10 deposits in an hour. The score is that busiest count; the evidence says when it was and
what the population did.

A bot betting faster than people do is not cheating by itself; it may be farming a promotion, testing
the server's limits, or hedging with other accounts (:mod:`.sides` looks at that). Minutes and hours are
UTC clock minutes and hours (``date_trunc``): a burst straddling two of them counts in each.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from ..db.transactions import Connection
from .flags import Flag, FlagKind, Window
from .population import FarAbove, far_above

BET_RULE = FarAbove(floor=60, multiple=10.0)
"""Bets in one minute."""
DEPOSIT_RULE = FarAbove(floor=10, multiple=5.0)
"""Deposits in one hour."""


@dataclass(frozen=True, slots=True)
class BusiestSpell:
    """A user's busiest minute (bets) or hour (deposits) in the window: when it began and how many."""

    user_id: int
    start: dt.datetime
    count: int


# Bets by their placement time: a seq scan of the window's bets (no index on created_at: the report is
# offline, and an index would cost every bet on the hot path).
_BUSIEST_BET_MINUTES = """
SELECT DISTINCT ON (user_id) user_id, spell, n
FROM (SELECT user_id, date_trunc('minute', created_at, 'UTC') AS spell, count(*) AS n
      FROM bets WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2) AS spells
ORDER BY user_id, n DESC, spell
"""

# Deposits through ledger_txns_deposits_by_time; the wallet's leg names the user.
_BUSIEST_DEPOSIT_HOURS = """
SELECT DISTINCT ON (user_id) user_id, spell, n
FROM (SELECT a.user_id, date_trunc('hour', t.created_at, 'UTC') AS spell, count(*) AS n
      FROM ledger_txns t
      JOIN ledger_legs l ON l.txn_id = t.id
      JOIN accounts a ON a.id = l.account_id AND a.kind = 'wallet'
      WHERE t.kind = 'deposit' AND t.created_at >= $1 AND t.created_at < $2
      GROUP BY 1, 2) AS spells
ORDER BY user_id, n DESC, spell
"""


async def busiest_bet_minutes(conn: Connection, window: Window) -> list[BusiestSpell]:
    """Every user who bet in ``window``, with their busiest minute."""
    rows = await conn.fetch(_BUSIEST_BET_MINUTES, window.start, window.end)
    return [BusiestSpell(row["user_id"], row["spell"], row["n"]) for row in rows]


async def busiest_deposit_hours(conn: Connection, window: Window) -> list[BusiestSpell]:
    """Every user credited a deposit in ``window``, with their busiest hour."""
    rows = await conn.fetch(_BUSIEST_DEPOSIT_HOURS, window.start, window.end)
    return [BusiestSpell(row["user_id"], row["spell"], row["n"]) for row in rows]


def velocity_flags(spells: Iterable[BusiestSpell], kind: FlagKind, rule: FarAbove) -> list[Flag]:
    """The users whose busiest spell is far above the population's (:mod:`.population`), as ``kind``
    (:attr:`FlagKind.BET_VELOCITY`: spells are minutes; :attr:`FlagKind.DEPOSIT_VELOCITY`: hours)."""
    unit = "minute" if kind is FlagKind.BET_VELOCITY else "hour"
    what = "bets" if kind is FlagKind.BET_VELOCITY else "deposits"
    by_user = {spell.user_id: spell for spell in spells}
    flags = []
    for outlier in far_above({user: spell.count for user, spell in by_user.items()}, rule):
        start = by_user[outlier.user_id].start
        flags.append(Flag(outlier.user_id, kind, outlier.count, {
            "summary": f"{outlier.count} {what} in the {unit} from {start:%Y-%m-%d %H:%M} UTC; the others' 99th "
                       f"percentile {outlier.percentile_of_others}, median {outlier.median_of_others:g} "
                       f"({outlier.users} users)",
            what + "_per_" + unit: outlier.count,
            unit + "_start": start.isoformat(),
            "population_p99_of_others": outlier.percentile_of_others,
            "population_median_of_others": outlier.median_of_others,
            "population_users": outlier.users,
            "rule": {"floor": rule.floor, "multiple": rule.multiple, "percentile": rule.percentile},
        }))  # fmt: skip
    return flags
