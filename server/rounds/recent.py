"""The last settled rounds of each game, as this node saw them settle: ``history`` without PostgreSQL.

A node follows every game's channel (:mod:`.follower`), so each ``settled`` event tells it a round's record
(seed, salt, public outcome, and the chain on a chain's first round): :meth:`RecentRounds.record` puts it in
front. The first ``history`` request of a game reads PostgreSQL and fills the list
(:meth:`RecentRounds.fill`); later ones are served from it (:meth:`RecentRounds.get`) while it is complete:
an event missed (a gap in the channel's offsets, a new epoch: :meth:`RecentRounds.forget`) or a list older
than ``max_age`` since it was read sends the next request to PostgreSQL again. Voided rounds are not in a
game's history (as in PostgreSQL's).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol import messages as m

from .events import RoundView


@dataclass(slots=True)
class _Recent:
    records: deque[m.RoundRecord]
    filled_at: float


@dataclass(slots=True)
class RecentRounds:
    """Up to ``size`` settled rounds per game, newest first; ``clock``: monotonic seconds."""

    size: int = 100
    max_age: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _games: dict[str, _Recent] = field(default_factory=dict)
    _early: dict[str, deque[m.RoundRecord]] = field(default_factory=dict)
    """Rounds settled while a game's list was not filled: one settling during the read that fills it is not lost."""

    def get(self, game: str, limit: int) -> list[m.RoundRecord] | None:
        """The ``limit`` newest settled rounds of ``game``, or None: ask PostgreSQL (then :meth:`fill`)."""
        recent = self._games.get(game)
        if recent is None or limit > self.size or self.clock() - recent.filled_at > self.max_age:
            return None
        return list(recent.records)[:limit]

    def fill(self, game: str, records: list[m.RoundRecord]) -> None:
        """``game``'s newest settled rounds as PostgreSQL has them (newest first), with any seen settling since."""
        newest = records[0].round if records else 0
        settled_since = [r for r in self._early.pop(game, ()) if r.round > newest]
        merged = sorted(settled_since, key=lambda r: r.round, reverse=True) + records
        self._games[game] = _Recent(deque(merged[: self.size], maxlen=self.size), self.clock())

    def record(self, view: RoundView) -> None:
        """A ``settled`` event: its round goes in front (a voided round, or one older than the newest, does not)."""
        if view.phase != "settled" or view.voided or view.seed is None:
            return
        record = m.RoundRecord(round=view.round, outcome=view.outcome or {}, seed=view.seed,
                               seed_hash=view.seed_hash, salt=view.salt, chain=view.chain)  # fmt: skip
        recent = self._games.get(view.game)
        if recent is None:
            self._early.setdefault(view.game, deque(maxlen=self.size)).appendleft(record)
        elif not recent.records or recent.records[0].round < view.round:
            recent.records.appendleft(record)

    def forget(self, game: str) -> None:
        """Events of ``game`` may have been missed: the next request reads PostgreSQL."""
        self._games.pop(game, None)
        self._early.pop(game, None)
