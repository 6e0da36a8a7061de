"""Responsible gaming, the rules without I/O: limits a player sets on themselves, exclusions, play sessions.

What a licensed operator must offer, as Croupier applies it (docs/players.md):

- **Deposit, loss and wager limits** per day, week or month (:class:`LimitKind`, :class:`Period`). Periods are
  calendar periods in the operator's time zone (:class:`Calendar`): a day from midnight, a week from Monday,
  a month from the 1st. Deposits are counted in Stars (every order made in the period that was not
  cancelled), wagers in chips staked, losses in chips staked less chips paid back (payouts and refunds).
- **A session time limit** (minutes): a play session starts at a sign-in; when the limit has run, the
  player's sockets are closed and sign-ins are refused until a break of :data:`SESSION_BREAK` has passed.
- **A cool-off** (1 day to 6 weeks) or **a self-exclusion** (6 months to permanent): no bet and no deposit
  until it ends; neither can be shortened or lifted early, only lengthened.

Lowering a limit (or setting a new one) applies at once; raising or removing one waits
:data:`RAISE_DELAY` (:func:`change_limit`). A bet or deposit over a limit is refused with the time the limit
resets (:class:`Refusal`), checked where the money moves: the bet's own transaction, with the wallet locked,
so concurrent bets from several nodes cannot overshoot (:mod:`server.ledger.bets`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from enum import StrEnum

from protocol import ErrorCode

RAISE_DELAY = dt.timedelta(hours=24)
"""How long a raised (or removed) limit waits before it applies."""
SESSION_BREAK = dt.timedelta(minutes=30)
"""The break a player takes after their session time limit ran out, before signing in again."""
COOL_OFF_DAYS = (1, 42)
"""The shortest and longest cool-off, in days (24 hours to 6 weeks)."""
SELF_EXCLUSION_MIN_DAYS = 183
"""The shortest self-exclusion, in days (6 months); none is the longest (permanent)."""
SESSION_MINUTES = (5, 24 * 60)
"""The shortest and longest session time limit, in minutes."""
MAX_AMOUNT = 10**15
"""The largest limit amount taken (chips or Stars)."""


class LimitKind(StrEnum):
    DEPOSIT = "deposit"
    """Stars deposited (orders made) in the period."""
    LOSS = "loss"
    """Chips staked less chips paid back in the period."""
    WAGER = "wager"
    """Chips staked in the period."""
    SESSION = "session"
    """Minutes of one play session (period ``session``)."""


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    SESSION = "session"


class ExclusionKind(StrEnum):
    COOL_OFF = "cool_off"
    SELF_EXCLUSION = "self_exclusion"


class InvalidLimit(ValueError):
    """A limit or exclusion request that cannot be taken; ``field`` names the request field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit of one player: ``amount`` in force, and a raise (``pending_amount``; None with a
    ``pending_from``: a removal) that applies from ``pending_from``."""

    kind: LimitKind
    period: Period
    amount: int
    pending_amount: int | None = None
    pending_from: dt.datetime | None = None

    def in_force(self, now: dt.datetime) -> int | None:
        """The amount that applies at ``now`` (None: the limit was removed and the removal is due)."""
        if self.pending_from is not None and self.pending_from <= now:
            return self.pending_amount
        return self.amount


def check_limit(kind: str, period: str, amount: int | None) -> tuple[LimitKind, Period]:
    """``kind`` and ``period`` as enums, or :class:`InvalidLimit` naming the field at fault."""
    try:
        limit_kind = LimitKind(kind)
    except ValueError:
        raise InvalidLimit(f"kind must be one of {', '.join(LimitKind)}, got {kind!r}", "kind") from None
    if limit_kind is LimitKind.SESSION:
        if period != Period.SESSION:
            raise InvalidLimit("a session limit has period 'session'", "period")
        if amount is not None and not SESSION_MINUTES[0] <= amount <= SESSION_MINUTES[1]:
            raise InvalidLimit(f"a session limit is {SESSION_MINUTES[0]} to {SESSION_MINUTES[1]} minutes", "amount")
        return limit_kind, Period.SESSION
    if period not in (Period.DAY, Period.WEEK, Period.MONTH):
        raise InvalidLimit(f"period must be day, week or month, got {period!r}", "period")
    if amount is not None and not 1 <= amount <= MAX_AMOUNT:
        raise InvalidLimit(f"amount must be from 1 to {MAX_AMOUNT}", "amount")
    return limit_kind, Period(period)


def change_limit(current: Limit | None, kind: LimitKind, period: Period, amount: int | None,
                 now: dt.datetime) -> Limit | None:  # fmt: skip
    """The limit after the player asks for ``amount`` (None: remove it) at ``now``, or None when there is
    no limit any more. Lower (or new): at once, dropping a raise that was waiting. Higher (or removed):
    the amount in force stays until ``now`` + :data:`RAISE_DELAY`."""
    in_force = None if current is None else current.in_force(now)
    if in_force is None:  # no limit in force: a new one applies at once
        return None if amount is None else Limit(kind, period, amount)
    assert current is not None
    if amount is not None and amount <= in_force:
        return Limit(kind, period, amount)
    return replace(current, amount=in_force, pending_amount=amount, pending_from=now + RAISE_DELAY)


def exclusion_end(kind: str, days: int | None, now: dt.datetime) -> tuple[ExclusionKind, dt.datetime | None]:
    """When an exclusion of ``days`` asked at ``now`` ends (None: permanent), or :class:`InvalidLimit`."""
    try:
        exclusion = ExclusionKind(kind)
    except ValueError:
        raise InvalidLimit(f"kind must be cool_off or self_exclusion, got {kind!r}", "kind") from None
    if exclusion is ExclusionKind.COOL_OFF:
        if days is None or not COOL_OFF_DAYS[0] <= days <= COOL_OFF_DAYS[1]:
            raise InvalidLimit(f"a cool-off lasts {COOL_OFF_DAYS[0]} to {COOL_OFF_DAYS[1]} days", "days")
        return exclusion, now + dt.timedelta(days=days)
    if days is None:
        return exclusion, None
    if not SELF_EXCLUSION_MIN_DAYS <= days <= 36_500:
        raise InvalidLimit(f"a self-exclusion lasts at least {SELF_EXCLUSION_MIN_DAYS} days (null: permanent)", "days")
    return exclusion, now + dt.timedelta(days=days)


def lengthens(current_until: dt.datetime | None, current_active: bool, until: dt.datetime | None) -> bool:
    """Whether an exclusion ending at ``until`` may replace the current one (ending ``current_until``,
    None: permanent): only when none is active or the new one ends later."""
    if not current_active:
        return True
    if current_until is None:
        return False
    return until is None or until > current_until


class Calendar:
    """The calendar periods of limits in one time zone (``CROUPIER_LIMITS_TZ``, default UTC)."""

    def __init__(self, zone: dt.tzinfo = dt.UTC) -> None:
        self.zone = zone

    def start(self, period: Period, now: dt.datetime) -> dt.datetime:
        """When the ``period`` holding ``now`` began (in UTC: aware times in one zone compare and subtract by
        their wall clocks, not across a change of summer time)."""
        local = now.astimezone(self.zone)
        day = local.date()
        if period is Period.WEEK:
            day -= dt.timedelta(days=day.weekday())
        elif period is Period.MONTH:
            day = day.replace(day=1)
        elif period is not Period.DAY:
            raise ValueError(f"{period} is not a calendar period")
        return dt.datetime.combine(day, dt.time(), self.zone).astimezone(dt.UTC)

    def end(self, period: Period, now: dt.datetime) -> dt.datetime:
        """When the ``period`` holding ``now`` ends: the next one begins."""
        begun = self.start(period, now).astimezone(self.zone).date()
        if period is Period.DAY:
            following = begun + dt.timedelta(days=1)
        elif period is Period.WEEK:
            following = begun + dt.timedelta(days=7)
        else:
            following = (begun.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return dt.datetime.combine(following, dt.time(), self.zone).astimezone(dt.UTC)

    def starts(self, now: dt.datetime) -> dict[Period, dt.datetime]:
        """The start of the day, week and month holding ``now``."""
        return {period: self.start(period, now) for period in (Period.DAY, Period.WEEK, Period.MONTH)}


@dataclass(slots=True)
class Usage:
    """What a player staked and was paid back in one period that began at ``starts_at``."""

    starts_at: dt.datetime
    wagered: int = 0
    paid: int = 0

    @property
    def lost(self) -> int:
        return self.wagered - self.paid


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a bet or deposit is refused: the protocol ``code``, a message, and when the limit resets (the
    period's end; an exclusion's end; None: never)."""

    code: ErrorCode
    message: str
    resets_at: dt.datetime | None


@dataclass(slots=True)
class PlayerLimits:
    """One player's limits, exclusion and usage, as a bet batch reads them (with their wallet locked)."""

    limits: list[Limit]
    excluded_until: dt.datetime | None = None
    """The end of an active exclusion (meaningful with ``excluded``)."""
    excluded: str | None = None
    """The kind of an active exclusion, or None."""
    usage: dict[Period, Usage] | None = None

    def refuse_bet(self, amount: int, now: dt.datetime, calendar: Calendar) -> Refusal | None:
        """Why a stake of ``amount`` may not be placed at ``now`` (None: it may)."""
        exclusion = self.exclusion_refusal()
        if exclusion is not None:
            return exclusion
        for limit in self.limits:
            if limit.kind not in (LimitKind.LOSS, LimitKind.WAGER):
                continue
            cap = limit.in_force(now)
            if cap is None:
                continue
            used = self.used(limit.kind, limit.period, calendar.start(limit.period, now))
            if used + amount > cap:
                left = max(cap - used, 0)
                what = "loss" if limit.kind is LimitKind.LOSS else "wager"
                return Refusal(
                    ErrorCode.LIMIT_REACHED,
                    f"your {limit.period} {what} limit is {cap}: {left} left until it resets; this bet is {amount}",
                    calendar.end(limit.period, now),
                )
        return None

    def exclusion_refusal(self) -> Refusal | None:
        if self.excluded is None:
            return None
        until = "for good" if self.excluded_until is None else f"until {self.excluded_until.isoformat()}"
        what = "in a cool-off" if self.excluded == ExclusionKind.COOL_OFF else "self-excluded"
        return Refusal(ErrorCode.EXCLUDED, f"you are {what} {until}: no bets and no deposits", self.excluded_until)

    def used(self, kind: LimitKind, period: Period, starts_at: dt.datetime) -> int:
        """Chips lost (``loss``) or staked (``wager``) in the ``period`` beginning ``starts_at``."""
        usage = (self.usage or {}).get(period)
        if usage is None or usage.starts_at != starts_at:
            return 0
        return usage.lost if kind is LimitKind.LOSS else usage.wagered

    def stake(self, amount: int, now: dt.datetime, calendar: Calendar) -> None:
        """Count an accepted stake of ``amount`` at ``now`` (the batch's later bets see it)."""
        usage = self.usage if self.usage is not None else {}
        for period, starts_at in calendar.starts(now).items():
            current = usage.get(period)
            if current is None or current.starts_at != starts_at:
                current = usage[period] = Usage(starts_at)
            current.wagered += amount
        self.usage = usage

    @property
    def counts_usage(self) -> bool:
        """Whether the ledger keeps this player's usage (a loss or wager limit, even one being removed)."""
        return any(limit.kind in (LimitKind.LOSS, LimitKind.WAGER) for limit in self.limits)


def deposit_refusal(limits: list[Limit], deposited: dict[Period, int], stars: int, now: dt.datetime,
                    calendar: Calendar) -> Refusal | None:  # fmt: skip
    """Why a deposit of ``stars`` is refused at ``now``, given the Stars ``deposited`` in each period so far."""
    for limit in limits:
        if limit.kind is not LimitKind.DEPOSIT:
            continue
        cap = limit.in_force(now)
        if cap is None:
            continue
        used = deposited.get(limit.period, 0)
        if used + stars > cap:
            return Refusal(
                ErrorCode.LIMIT_REACHED,
                f"your {limit.period} deposit limit is {cap} Stars: {max(cap - used, 0)} left until it resets",
                calendar.end(limit.period, now),
            )
    return None


@dataclass(frozen=True, slots=True)
class SessionVerdict:
    """A sign-in under a session time limit: refused until ``refused_until``, or allowed until ``ends_at``
    (``restart``: a new session begins now)."""

    ends_at: dt.datetime | None = None
    refused_until: dt.datetime | None = None
    restart: bool = False


def session_verdict(minutes: int, started_at: dt.datetime | None, now: dt.datetime) -> SessionVerdict:
    """Whether a player with a session limit of ``minutes`` whose session began at ``started_at`` may sign
    in at ``now``: within the session (until its end), in the break after it (refused), or after the
    break (a new session)."""
    length = dt.timedelta(minutes=minutes)
    if started_at is None or now >= started_at + length + SESSION_BREAK:
        return SessionVerdict(ends_at=now + length, restart=True)
    if now >= started_at + length:
        return SessionVerdict(refused_until=started_at + length + SESSION_BREAK)
    return SessionVerdict(ends_at=started_at + length)
