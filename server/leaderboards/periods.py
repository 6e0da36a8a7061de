"""A leaderboard's periods: which day, ISO week or all time a settlement counts in, and when a board expires.

Pure functions of a time and a time zone (``CROUPIER_LEADERBOARD_TZ``): a day starts at midnight there and
an ISO week on Monday at midnight there. A day or week board is kept :data:`KEEP_AFTER` past its period's
end (the previous period stays readable a while), then it expires: in Redis by ``EXPIREAT``, in the
in-process store by the same time.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Period = Literal["day", "week", "all"]
PERIODS: Final[tuple[Period, ...]] = get_args(Period)
ALL_TIME: Final = "all"
"""The period key of the all-time boards (they never expire)."""
KEEP_AFTER: Final = timedelta(days=3)
"""How long a day or week board outlives its period."""


def time_zone(name: str) -> tzinfo:
    """The time zone named ``name`` (an IANA name: ``Europe/Berlin``; ``UTC``). Raises ``ValueError``
    naming it when this machine's time zone database does not know it."""
    if name == "UTC":
        return UTC  # no time zone database needed for the default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not a time zone this machine knows (an IANA name: Europe/Berlin)") from exc


def period_key(period: Period, at: datetime, tz: tzinfo) -> str:
    """The period ``at`` (an aware time) falls in: ``2026-12-03`` (day), ``2026-W49`` (ISO week), ``all``."""
    if period == "all":
        return ALL_TIME
    local = at.astimezone(tz)
    if period == "day":
        return local.date().isoformat()
    year, week, _ = local.isocalendar()
    return f"{year}-W{week:02d}"


def period_end(period: Period, at: datetime, tz: tzinfo) -> datetime | None:
    """When the period ``at`` falls in ends (the next local midnight, or Monday midnight); None for all time."""
    if period == "all":
        return None
    day = at.astimezone(tz).date()
    following = day + timedelta(days=1) if period == "day" else day + timedelta(days=7 - day.weekday())
    return _midnight(following, tz)


def expires_at(period: Period, at: datetime, tz: tzinfo) -> int | None:
    """The Unix second the board of ``at``'s period expires at (:data:`KEEP_AFTER` past its end); None: never."""
    end = period_end(period, at, tz)
    return None if end is None else math.ceil((end + KEEP_AFTER).timestamp())


def _midnight(day: date, tz: tzinfo) -> datetime:
    # Where midnight does not exist (a DST change at 00:00), zoneinfo reads it with the offset before the change.
    return datetime.combine(day, time(), tzinfo=tz)
