"""Responsible gaming in PostgreSQL: the players' limits, exclusions, usage and play sessions (migration 0019).

:class:`ResponsibleGaming` serves the player's requests (``limits``, ``set_limit``, ``exclude``), the
cashier's deposit check and the sign-in's session check. The bet batch and settlement keep usage with the
statements here (:data:`BATCH_LIMITS`, :func:`count_stakes`, :func:`count_paid_back`), in their own
transactions. The rules themselves are :mod:`.limits` (no I/O).

A limit or exclusion is written with the player's wallet row locked (``FOR UPDATE``), the lock every bet
batch takes first: a bet committing meanwhile is either before the change (and counted in the usage the
change starts from) or after it (and checked against it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from protocol import ErrorCode
from protocol import messages as m

from ..db.transactions import Connection, in_transaction
from .limits import (
    Calendar,
    InvalidLimit,
    Limit,
    LimitKind,
    Period,
    PlayerLimits,
    Refusal,
    SessionVerdict,
    Usage,
    change_limit,
    check_limit,
    deposit_refusal,
    exclusion_end,
    lengthens,
    session_verdict,
)

BATCH_LIMITS = """
SELECT coalesce(json_agg(json_build_object(
           'user_id', p.user_id,
           'limits', (SELECT json_agg(json_build_object('kind', l.kind, 'period', l.period, 'amount', l.amount,
                                                         'pending_amount', l.pending_amount,
                                                         'pending_from', l.pending_from))
                      FROM player_limits l WHERE l.user_id = p.user_id AND l.kind IN ('loss', 'wager')),
           'usage', (SELECT json_agg(json_build_object('period', u.period, 'starts_at', u.starts_at,
                                                        'wagered', u.wagered, 'paid', u.paid))
                     FROM player_limit_usage u WHERE u.user_id = p.user_id),
           'excluded', e.kind, 'until', e.until)), '[]')
FROM unnest($1::bigint[]) AS p(user_id)
LEFT JOIN player_exclusions e ON e.user_id = p.user_id AND (e.until IS NULL OR e.until > now())
"""
"""The loss and wager limits, usage and active exclusion of each of the users ``$1`` (wallets flagged ``limited``),
as one JSON array (:func:`read_batch_limits`; primary-key probes per user): a bet batch reads it after locking
their wallets, only when it holds flagged ones."""

_COUNT_STAKES = """
INSERT INTO player_limit_usage AS u (user_id, period, starts_at, wagered)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::bigint[])
ON CONFLICT (user_id, period) DO UPDATE
SET wagered = CASE WHEN u.starts_at = EXCLUDED.starts_at THEN u.wagered + EXCLUDED.wagered ELSE EXCLUDED.wagered END,
    paid = CASE WHEN u.starts_at = EXCLUDED.starts_at THEN u.paid ELSE 0 END,
    starts_at = EXCLUDED.starts_at
"""

# One row per paid user (their payouts summed in Python).
_COUNT_PAID_BACK = """
UPDATE player_limit_usage u SET paid = u.paid + d.amount
FROM unnest($1::bigint[], $2::bigint[]) AS d(user_id, amount)
WHERE u.user_id = d.user_id
"""

_LOCK_WALLET = "UPDATE accounts SET limited = true WHERE user_id = $1 RETURNING id"
"""Lock the player's wallet (the lock every bet batch takes first) and flag it: from now on the bet batches and
settlements look at this player's limits."""

_LIMITS = """
SELECT kind, period, amount, pending_amount, pending_from FROM player_limits WHERE user_id = $1 ORDER BY kind, period
"""

_EXCLUSION = "SELECT kind, until, (until IS NULL OR until > now()) AS active FROM player_exclusions WHERE user_id = $1"

_USAGE = "SELECT period, starts_at, wagered, paid FROM player_limit_usage WHERE user_id = $1"

_UPSERT_LIMIT = """
INSERT INTO player_limits (user_id, kind, period, amount, pending_amount, pending_from) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (user_id, kind, period) DO UPDATE
SET amount = EXCLUDED.amount, pending_amount = EXCLUDED.pending_amount, pending_from = EXCLUDED.pending_from,
    set_at = now()
"""

_DROP_LIMIT = "DELETE FROM player_limits WHERE user_id = $1 AND kind = $2 AND period = $3"

# What the player staked and got back in each period so far, from their bets (a limit set mid-period).
_BACKFILL = """
SELECT coalesce(sum(amount) FILTER (WHERE created_at >= $2), 0)::bigint AS day_wagered,
       coalesce(sum(payout) FILTER (WHERE settled_at >= $2), 0)::bigint AS day_paid,
       coalesce(sum(amount) FILTER (WHERE created_at >= $3), 0)::bigint AS week_wagered,
       coalesce(sum(payout) FILTER (WHERE settled_at >= $3), 0)::bigint AS week_paid,
       coalesce(sum(amount) FILTER (WHERE created_at >= $4), 0)::bigint AS month_wagered,
       coalesce(sum(payout) FILTER (WHERE settled_at >= $4), 0)::bigint AS month_paid
FROM bets WHERE user_id = $1 AND (created_at >= least($2, $3, $4) OR settled_at >= least($2, $3, $4))
"""

_SET_USAGE = """
INSERT INTO player_limit_usage (user_id, period, starts_at, wagered, paid) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id, period) DO UPDATE SET starts_at = $3, wagered = $4, paid = $5
"""

_SET_EXCLUSION = """
INSERT INTO player_exclusions (user_id, kind, until) VALUES ($1, $2, $3)
ON CONFLICT (user_id) DO UPDATE SET kind = EXCLUDED.kind, until = EXCLUDED.until, set_at = now()
"""

_DEPOSITED = """
SELECT coalesce(sum(stars) FILTER (WHERE created_at >= $2), 0)::bigint AS day,
       coalesce(sum(stars) FILTER (WHERE created_at >= $3), 0)::bigint AS week,
       coalesce(sum(stars) FILTER (WHERE created_at >= $4), 0)::bigint AS month
FROM star_orders
WHERE user_id = $1 AND status <> 'cancelled' AND created_at >= least($2, $3, $4) AND id IS DISTINCT FROM $5
"""

# A deposit's check, in one statement: no row for a player who never set a limit or an exclusion (most).
_DEPOSIT_STATE = """
SELECT e.kind AS excluded, e.until, (e.until IS NULL OR e.until > now()) AS active,
       (SELECT json_agg(json_build_object('kind', l.kind, 'period', l.period, 'amount', l.amount,
                                          'pending_amount', l.pending_amount, 'pending_from', l.pending_from))
        FROM player_limits l WHERE l.user_id = a.user_id AND l.kind = 'deposit') AS limits
FROM accounts a LEFT JOIN player_exclusions e ON e.user_id = a.user_id
WHERE a.user_id = $1 AND a.limited
"""

_DEPOSITS_LOCK_CLASS = 0x53544152
"""The advisory lock class of a user's deposits, "STAR" (server/telegram/orders.py takes the same lock)."""
_LOCK_DEPOSITS = "SELECT pg_advisory_xact_lock($1::integer, ($2::bigint % 2147483647)::integer)"

_SESSION = """
SELECT l.amount, l.pending_amount, l.pending_from, s.started_at
FROM player_limits l LEFT JOIN player_sessions s ON s.user_id = l.user_id
WHERE l.user_id = $1 AND l.kind = 'session'
"""

_START_SESSION = """
INSERT INTO player_sessions (user_id, started_at) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET started_at = EXCLUDED.started_at
"""


def _time(value: Any) -> dt.datetime | None:
    """A timestamp as PostgreSQL's ``json_build_object`` writes it (or a datetime from asyncpg)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)


def _limit(row: Mapping[str, Any]) -> Limit:
    return Limit(LimitKind(row["kind"]), Period(row["period"]), row["amount"], row["pending_amount"],
                 _time(row["pending_from"]))  # fmt: skip


def read_batch_limits(data: str) -> dict[int, PlayerLimits]:
    """The result of :data:`BATCH_LIMITS`, by user."""
    players: dict[int, PlayerLimits] = {}
    for entry in orjson.loads(data):
        usage = {}
        for row in entry["usage"] or ():
            starts_at = _time(row["starts_at"])
            assert starts_at is not None
            usage[Period(row["period"])] = Usage(starts_at, row["wagered"], row["paid"])
        players[entry["user_id"]] = PlayerLimits(
            [_limit(row) for row in entry["limits"] or ()],
            excluded_until=_time(entry["until"]),
            excluded=entry["excluded"],
            usage=usage,
        )
    return players


async def count_stakes(conn: Connection, stakes: Iterable[tuple[int, int]], now: dt.datetime,
                       calendar: Calendar) -> None:  # fmt: skip
    """Add accepted stakes (user, amount) at ``now`` to their users' usage (users with a loss or wager limit)."""
    users: list[int] = []
    periods: list[str] = []
    starts: list[dt.datetime] = []
    amounts: list[int] = []
    for user_id, amount in stakes:
        for period, starts_at in calendar.starts(now).items():
            users.append(user_id)
            periods.append(period)
            starts.append(starts_at)
            amounts.append(amount)
    if users:
        await conn.execute(_COUNT_STAKES, users, periods, starts, amounts)


async def count_paid_back(conn: Connection, payouts: Iterable[tuple[int, int]]) -> None:
    """Add chips paid back (user, amount: payouts and refunds) to the usage of their current periods (pass the
    users whose wallets are flagged ``limited``; one without a loss or wager limit has no usage row)."""
    paid: dict[int, int] = {}
    for user_id, amount in payouts:
        if amount > 0:
            paid[user_id] = paid.get(user_id, 0) + amount
    if paid:
        await conn.execute(_COUNT_PAID_BACK, list(paid), list(paid.values()))


def _ms(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class SessionCheck:
    """A sign-in under a session time limit: refused (``refusal``) or allowed until ``ends_at``."""

    ends_at: dt.datetime | None
    refusal: Refusal | None


class ResponsibleGaming:
    """The players' own limits and exclusions in PostgreSQL, on ``calendar``'s periods; ``clock``: now."""

    def __init__(self, pool: asyncpg.Pool, calendar: Calendar,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:  # fmt: skip
        self._pool = pool
        self.calendar = calendar
        self._clock = clock

    async def state(self, user_id: int, request_id: m.RequestId = 0) -> m.LimitsReply:
        """Every limit of ``user_id`` with what is used of it, and their active exclusion."""
        async with self._pool.acquire() as conn:
            return await self._state(conn, user_id, request_id)

    async def set_limit(self, user_id: int, kind: str, period: str, amount: int | None,
                        request_id: m.RequestId = 0) -> m.LimitsReply:  # fmt: skip
        """Set (or, with ``amount`` None, remove) one limit: see :func:`~.limits.change_limit`. Raises
        :class:`~.limits.InvalidLimit`."""
        limit_kind, limit_period = check_limit(kind, period, amount)
        now = self._clock()

        async def work(conn: Connection) -> m.LimitsReply:
            if await conn.fetchval(_LOCK_WALLET, user_id) is None:
                raise InvalidLimit("no wallet for this user: sign in first", "t")
            rows = await conn.fetch(_LIMITS, user_id)
            current = next((_limit(r) for r in rows if (r["kind"], r["period"]) == (limit_kind, limit_period)), None)
            changed = change_limit(current, limit_kind, limit_period, amount, now)
            if changed is None:
                await conn.execute(_DROP_LIMIT, user_id, limit_kind, limit_period)
            else:
                await conn.execute(_UPSERT_LIMIT, user_id, limit_kind, limit_period, changed.amount,
                                   changed.pending_amount, changed.pending_from)  # fmt: skip
            counted = any(LimitKind(r["kind"]) in (LimitKind.LOSS, LimitKind.WAGER) for r in rows)
            if limit_kind in (LimitKind.LOSS, LimitKind.WAGER) and changed is not None and not counted:
                await self._start_usage(conn, user_id, now)  # usage was not kept for them: start it from the bets
            return await self._state(conn, user_id, request_id)

        return await in_transaction(self._pool, work)

    async def exclude(self, user_id: int, kind: str, days: int | None, request_id: m.RequestId = 0) -> m.LimitsReply:
        """Start a cool-off or self-exclusion (or lengthen the active one); raises :class:`~.limits.InvalidLimit`
        for one that would end sooner than the active one."""
        now = self._clock()
        exclusion, until = exclusion_end(kind, days, now)

        async def work(conn: Connection) -> m.LimitsReply:
            if await conn.fetchval(_LOCK_WALLET, user_id) is None:
                raise InvalidLimit("no wallet for this user: sign in first", "t")
            current = await conn.fetchrow(_EXCLUSION, user_id)
            if current is not None and not lengthens(current["until"], current["active"], until):
                raise InvalidLimit(f"an active {current['kind'].replace('_', '-')} cannot be shortened or lifted",
                                   "days")  # fmt: skip
            await conn.execute(_SET_EXCLUSION, user_id, exclusion, until)
            return await self._state(conn, user_id, request_id)

        return await in_transaction(self._pool, work)

    async def deposit_refusal(self, conn: Connection, user_id: int, stars: int,
                              order_id: int | None = None) -> Refusal | None:  # fmt: skip
        """Why a deposit of ``stars`` by ``user_id`` is refused now (an exclusion, a deposit limit), in the
        caller's transaction; ``order_id``: the order being paid, not counted twice. With a deposit limit, the
        user's deposits are serialized first (the advisory lock :func:`server.telegram.orders.open_order` takes):
        two at once cannot both pass it."""
        state = await conn.fetchrow(_DEPOSIT_STATE, user_id)
        if state is None:  # never set a limit or an exclusion
            return None
        now = self._clock()
        if state["excluded"] is not None and state["active"]:
            player = PlayerLimits([], excluded=state["excluded"], excluded_until=state["until"])
            return player.exclusion_refusal()
        limits = [_limit(row) for row in orjson.loads(state["limits"] or "[]")]
        if not limits:
            return None
        await conn.execute(_LOCK_DEPOSITS, _DEPOSITS_LOCK_CLASS, user_id)
        starts = self.calendar.starts(now)
        row = await conn.fetchrow(_DEPOSITED, user_id, starts[Period.DAY], starts[Period.WEEK], starts[Period.MONTH],
                                  order_id)  # fmt: skip
        assert row is not None
        deposited = {Period.DAY: row["day"], Period.WEEK: row["week"], Period.MONTH: row["month"]}
        return deposit_refusal(limits, deposited, stars, now, self.calendar)

    async def sign_in(self, user_id: int) -> SessionCheck | None:
        """The session check of a sign-in by ``user_id``: None without a session limit; else the end of the
        session (a new one starts if the last one and its break are over) or the refusal (in the break)."""
        now = self._clock()
        row = await self._pool.fetchrow(_SESSION, user_id)
        if row is None:
            return None
        minutes = Limit(LimitKind.SESSION, Period.SESSION, row["amount"], row["pending_amount"],
                        row["pending_from"]).in_force(now)  # fmt: skip
        if minutes is None:
            return None
        verdict: SessionVerdict = session_verdict(minutes, row["started_at"], now)
        if verdict.refused_until is not None:
            message = f"your session time limit of {minutes} minutes is used up: take a break until " \
                      f"{verdict.refused_until.isoformat()}"  # fmt: skip
            return SessionCheck(None, Refusal(ErrorCode.LIMIT_REACHED, message, verdict.refused_until))
        if verdict.restart:
            await self._pool.execute(_START_SESSION, user_id, now)
        return SessionCheck(verdict.ends_at, None)

    async def _start_usage(self, conn: Connection, user_id: int, now: dt.datetime) -> None:
        starts = self.calendar.starts(now)
        row = await conn.fetchrow(_BACKFILL, user_id, starts[Period.DAY], starts[Period.WEEK], starts[Period.MONTH])
        assert row is not None
        for period, starts_at in starts.items():
            await conn.execute(_SET_USAGE, user_id, period, starts_at, row[f"{period}_wagered"], row[f"{period}_paid"])

    async def _state(self, conn: Connection, user_id: int, request_id: m.RequestId) -> m.LimitsReply:
        now = self._clock()
        limits = [_limit(row) for row in await conn.fetch(_LIMITS, user_id)]
        usage = {Period(r["period"]): Usage(r["starts_at"], r["wagered"], r["paid"])
                 for r in await conn.fetch(_USAGE, user_id)}  # fmt: skip
        exclusion_row = await conn.fetchrow(_EXCLUSION, user_id)
        player = PlayerLimits(limits, usage=usage)
        deposited: dict[Period, int] = {}
        if any(limit.kind is LimitKind.DEPOSIT for limit in limits):
            starts = self.calendar.starts(now)
            row = await conn.fetchrow(_DEPOSITED, user_id, starts[Period.DAY], starts[Period.WEEK],
                                      starts[Period.MONTH], None)  # fmt: skip
            assert row is not None
            deposited = {Period.DAY: row["day"], Period.WEEK: row["week"], Period.MONTH: row["month"]}
        shown: list[m.PlayerLimit] = []
        for limit in limits:
            in_force = limit.in_force(now)
            if in_force is None:
                continue  # removed: the removal is due
            view = m.PlayerLimit(kind=limit.kind.value, period=limit.period.value, amount=in_force)
            if limit.pending_from is not None and limit.pending_from > now:
                view.pending_amount, view.pending_from = limit.pending_amount, _ms(limit.pending_from)
            if limit.kind is LimitKind.DEPOSIT:
                view.used = deposited.get(limit.period, 0)
            elif limit.kind is not LimitKind.SESSION:
                view.used = player.used(limit.kind, limit.period, self.calendar.start(limit.period, now))
            if limit.kind is not LimitKind.SESSION:
                view.resets_at = _ms(self.calendar.end(limit.period, now))
            shown.append(view)
        exclusion = None
        if exclusion_row is not None and exclusion_row["active"]:
            exclusion = m.Exclusion(kind=exclusion_row["kind"], until=_ms(exclusion_row["until"]))
        return m.LimitsReply(id=request_id, limits=shown, exclusion=exclusion)
