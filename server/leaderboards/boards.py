"""The boards, and what settled bets do to them: pure values and one pure function (:func:`plan`).

A board is a scope (a game, or :data:`SCOPE_ALL` for every game), a metric and a period
(:mod:`.periods`); each period of it (a day, an ISO week, all time) is one sorted set of users, keyed
``lb:<scope>:<metric>:<period>:<period key>`` (:class:`BoardKey`):

- ``net``: the user's net winnings, the sum of payout - stake over their bets settled won or lost;
- ``win``: the user's biggest single win, a bet that paid more than its stake, scored by its payout,
  with its multiplier (payout / stake in hundredths, rounded down) and bet id kept beside it. Of two
  wins paying the same, the earlier bet (lower id) stands, whatever order they were applied in: a
  board built bet by bet and one rebuilt from PostgreSQL are the same.

Refunded bets count nowhere. A bet counts in the period its settlement's ``settled_at`` falls in; a
bet whose day or week board has already expired (:func:`~.periods.expires_at`) counts only all time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Final, Literal, get_args

from .periods import ALL_TIME, PERIODS, Period, expires_at, period_key

Metric = Literal["net", "win"]
METRICS: Final[tuple[Metric, ...]] = get_args(Metric)
SCOPE_ALL: Final = "all"
"""The scope of the boards over every game."""
KEY_PREFIX: Final = "lb:"


@dataclass(frozen=True, slots=True)
class Board:
    """One board over time: the scope (a game or ``all``), the metric, the period kind."""

    scope: str
    metric: Metric
    period: Period

    @property
    def name(self) -> str:
        """``<scope>:<metric>:<period>``: how the relay's notices name it."""
        return f"{self.scope}:{self.metric}:{self.period}"

    def at(self, when: datetime, tz: tzinfo) -> BoardKey:
        """This board's period holding ``when``."""
        return BoardKey(self, period_key(self.period, when, tz))


@dataclass(frozen=True, slots=True)
class BoardKey:
    """One period of one board: one sorted set (and, for ``win``, one hash beside it)."""

    board: Board
    period_key: str

    @property
    def key(self) -> str:
        b = self.board
        return f"{KEY_PREFIX}{b.scope}:{b.metric}:{b.period}:{self.period_key}"

    @property
    def wins_key(self) -> str:
        """The hash of a ``win`` board: user -> ``<multiplier>:<bet id>`` of the win scored."""
        return self.key + ":bets"


def parse_key(key: str) -> BoardKey | None:
    """The board period a key (:attr:`BoardKey.key`) names, or None for any other key."""
    if not key.startswith(KEY_PREFIX):
        return None
    parts = key[len(KEY_PREFIX) :].rsplit(":", 3)
    if len(parts) != 4:
        return None
    scope, metric, period, pkey = parts
    if metric not in METRICS or period not in PERIODS or not scope or not pkey:
        return None
    if (period == "all") != (pkey == ALL_TIME):
        return None
    return BoardKey(Board(scope, metric, period), pkey)


@dataclass(frozen=True, slots=True)
class Win:
    """A win on a ``win`` board: what it paid, its multiplier (hundredths) and the bet's id."""

    payout: int
    multiplier: int
    bet_id: int

    def beats(self, other: Win | None) -> bool:
        """Whether this win replaces ``other`` on a board: it paid more, or as much and is the earlier bet."""
        if other is None or self.payout != other.payout:
            return other is None or self.payout > other.payout
        return self.bet_id < other.bet_id


@dataclass(frozen=True, slots=True)
class SettledBet:
    """A bet settled won or lost, as the feed (and the rebuild, from ``bets``) gives it."""

    bet_id: int
    user_id: int
    game: str
    stake: int
    payout: int
    settled_at: datetime

    @property
    def win(self) -> Win | None:
        """The bet as a ``win`` board scores it; None when it paid no more than its stake."""
        if self.payout <= self.stake:
            return None
        return Win(self.payout, self.payout * 100 // self.stake, self.bet_id)


@dataclass(slots=True)
class BoardChanges:
    """What some settled bets do to the boards, by board key (:attr:`BoardKey.key`).

    Applied to boards that hold them already it is a change (the relay's batches); applied to no boards
    it is the whole content (a rebuild): ``net`` adds to the users' scores, ``wins`` replaces a user's
    win when it beats it (:meth:`Win.beats`), ``expiries`` sets when each board expires (Unix seconds;
    None: never)."""

    net: dict[str, dict[int, int]] = field(default_factory=dict)
    wins: dict[str, dict[int, Win]] = field(default_factory=dict)
    expiries: dict[str, int | None] = field(default_factory=dict)
    boards: set[str] = field(default_factory=set)
    """The :attr:`Board.name` of every board changed."""
    bets: int = 0
    """How many bets these are."""

    def keys(self) -> dict[str, BoardKey]:
        """Every board period changed, by key."""
        found = {key: parse_key(key) for key in self.expiries}
        return {key: board for key, board in found.items() if board is not None}


class Planner:
    """Turns settled bets into :class:`BoardChanges` in one time zone, skipping the day and week boards that
    have expired at ``now`` (Unix seconds). Keeps the periods of the local dates it has seen."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._dates: dict[date, list[tuple[Period, str, int | None]]] = {}

    def plan(self, bets: Iterable[SettledBet], now: float, into: BoardChanges | None = None) -> BoardChanges:
        """What ``bets`` do to the boards (added to ``into`` when given)."""
        changes = into if into is not None else BoardChanges()
        net, wins, expiries, boards = changes.net, changes.wins, changes.expiries, changes.boards
        for bet in bets:
            changes.bets += 1
            win = bet.win
            delta = bet.payout - bet.stake
            for period, pkey, expiry in self._periods(bet.settled_at):
                if expiry is not None and expiry <= now:
                    continue
                for scope in (bet.game, SCOPE_ALL):
                    key = f"{KEY_PREFIX}{scope}:net:{period}:{pkey}"
                    scores = net.get(key)
                    if scores is None:
                        scores = net[key] = {}
                        expiries[key] = expiry
                        boards.add(f"{scope}:net:{period}")
                    scores[bet.user_id] = scores.get(bet.user_id, 0) + delta
                    if win is None:
                        continue
                    key = f"{KEY_PREFIX}{scope}:win:{period}:{pkey}"
                    best = wins.get(key)
                    if best is None:
                        best = wins[key] = {}
                        expiries[key] = expiry
                        boards.add(f"{scope}:win:{period}")
                    if win.beats(best.get(bet.user_id)):
                        best[bet.user_id] = win
        return changes

    def _periods(self, at: datetime) -> list[tuple[Period, str, int | None]]:
        local = at.astimezone(self.tz)
        day = local.date()
        found = self._dates.get(day)
        if found is None:
            if len(self._dates) > 1000:  # a rebuild walks years of dates
                self._dates.clear()
            found = self._dates[day] = [(period, period_key(period, local, self.tz),
                                         expires_at(period, local, self.tz)) for period in PERIODS]  # fmt: skip
        return found


def plan(bets: Iterable[SettledBet], tz: tzinfo, now: float) -> BoardChanges:
    """What ``bets`` do to the boards in time zone ``tz`` at ``now`` (Unix seconds): see :class:`Planner`."""
    return Planner(tz).plan(bets, now)
