"""The leaderboards as sessions use them: :class:`Leaderboards` (the ``leaderboard`` request and its pushes).

A request reads the board period holding now (in ``CROUPIER_LEADERBOARD_TZ``) from the store: its first
``limit`` players, named from ``users`` (cached: :mod:`.names`), and the caller's own place, also when
outside them. A board with ``watch`` is pushed to the socket when its top changes (:mod:`.watch`), driven
by the relay's notices on the broker (:mod:`.notices`). Every node serves every board: in Redis the boards
are shared, and a node alone on the in-process broker holds them itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime, tzinfo

from protocol import messages as m

from ..broker import Broker, Subscription
from ..metrics import READS
from .boards import Board, BoardKey
from .memory import MemoryStore
from .names import PlayerNames
from .notices import NOTICES, read_notice
from .store import LeaderboardStore, Standing
from .watch import BoardWatchers, Push

log = logging.getLogger(__name__)


class Leaderboards:
    """Boards read from ``store``, names from ``pool``'s ``users``, pushes driven by ``broker``'s notices.

    :meth:`start` subscribes to the notices; :meth:`close` stops the pushes."""

    def __init__(self, store: LeaderboardStore, names: PlayerNames, broker: Broker, *, tz: tzinfo,
                 clock: Callable[[], float] = time.time, push_every: float = 1.0) -> None:  # fmt: skip
        self._store = store
        self._read = READS["leaderboard", "memory" if isinstance(store, MemoryStore) else "redis"]
        self._names = names
        self._broker = broker
        self._tz = tz
        self._clock = clock
        self._watchers = BoardWatchers(self._read_top, self._store.standings, tz=tz, clock=clock, every=push_every)
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Listen to the relay's notices and start pushing watched boards."""
        self._subscription = await self._broker.subscribe(NOTICES, self._on_notice)
        self._broker.on_resume(self._watchers.touch_all)
        self._watchers.start()

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
        await self._watchers.close()

    @property
    def watchers(self) -> BoardWatchers:
        return self._watchers

    async def standings(self, game: str, metric: m.LeaderboardMetric, period: m.LeaderboardPeriod, limit: int,
                        user_id: int, /) -> m.LeaderboardReply:  # fmt: skip
        """The board of ``game`` (or ``all``) for ``metric`` and the period holding now: its first ``limit``
        players and ``user_id``'s own place (``me``; None when not on it). Raises
        :class:`~.store.LeaderboardUnavailable` when the store does not answer, and the database's errors
        when names cannot be read."""
        key = Board(game, metric, period).at(datetime.fromtimestamp(self._clock(), UTC), self._tz)
        self._read.n += 1
        reply = await self._read_top(key, limit)
        mine = next((entry for entry in reply.top if entry.user == user_id), None)
        if mine is not None:
            reply.me = m.LeaderboardStanding(rank=mine.rank, score=mine.score)
        else:
            found = (await self._store.standings(key, [user_id])).get(user_id)
            reply.me = None if found is None else m.LeaderboardStanding(rank=found.rank, score=found.score)
        return reply

    def watch(self, owner: Hashable, user_id: int, shown: m.LeaderboardReply, limit: int, push: Push, /) -> None:
        """Push ``shown``'s board (its first ``limit`` players, just sent to ``owner``) through ``push`` when
        its top changes, at most once a second, until :meth:`unwatch` (or another :meth:`watch` by ``owner``)."""
        self._watchers.add(owner, user_id, shown, limit, push)

    def unwatch(self, owner: Hashable, /) -> None:
        """Stop pushing to ``owner``."""
        self._watchers.remove(owner)

    async def _read_top(self, key: BoardKey, limit: int) -> m.LeaderboardReply:
        top: list[Standing] = await self._store.top(key, limit)
        names = await self._names.names(standing.user_id for standing in top)
        board = key.board
        return m.LeaderboardReply(
            game=board.scope, metric=board.metric, period=board.period, period_key=key.period_key, me=None,
            top=[m.LeaderboardEntry(user=s.user_id, name=names.get(s.user_id, ""), score=s.score, rank=s.rank,
                                    multiplier=None if s.win is None else s.win.multiplier,
                                    bet=None if s.win is None else s.win.bet_id) for s in top],
        )  # fmt: skip

    def _on_notice(self, channel: str, payload: bytes) -> None:
        names = read_notice(payload)
        if names is None:
            log.warning("unreadable leaderboard notice ignored")
            return
        self._watchers.changed(names)
