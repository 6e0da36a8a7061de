"""Watched boards: a socket that asked for a board with ``watch`` gets it pushed when its top changes.

Per node, the sockets watching the same board with the same ``limit`` form one group. The relay's
notices (:mod:`.notices` on the broker, naming the boards a batch changed) mark groups dirty;
once a second (:attr:`BoardWatchers.every`) each dirty group is read once, and if its top differs from
what its sockets were last shown (or its period rolled over: a new day, a new week), every socket of the
group gets the board, with its own place (one read for all of them). So a board is read and pushed at most
once a second per node, however many sockets watch it and however often it changes; a board nobody
watches is never read. Every :attr:`BoardWatchers.refresh` seconds every group is read again anyway (a
notice lost while the broker reconnected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

import msgspec

from protocol import messages as m

from ..db import UNAVAILABLE_ERRORS
from .boards import Board, BoardKey
from .store import Standing

log = logging.getLogger(__name__)

Push = Callable[[m.LeaderboardReply], object]
"""Hands a board to one socket (queues it; never blocks)."""
ReadTop = Callable[[BoardKey, int], Awaitable[m.LeaderboardReply]]
"""The first ``limit`` players of a board period, named (``me`` left null)."""
ReadStandings = Callable[[BoardKey, Sequence[int]], Awaitable[dict[int, Standing]]]


@dataclass(slots=True)
class _Watcher:
    user_id: int
    push: Push


@dataclass(slots=True)
class _Group:
    board: Board
    limit: int
    shown: tuple[object, ...]
    """What the group's sockets were last shown: the period key and the top."""
    watchers: dict[Hashable, _Watcher] = field(default_factory=dict)
    dirty: bool = False


def _shown(reply: m.LeaderboardReply) -> tuple[object, ...]:
    return (reply.period_key, *((e.user, e.score, e.multiplier, e.bet, e.name) for e in reply.top))


class BoardWatchers:
    """The watched boards of one node (see the module's docstring). :meth:`start`, then :meth:`close`."""

    def __init__(self, read_top: ReadTop, read_standings: ReadStandings, *, tz: tzinfo,
                 clock: Callable[[], float] = time.time, every: float = 1.0,
                 refresh: float = 15.0) -> None:  # fmt: skip
        self._read_top = read_top
        self._read_standings = read_standings
        self._tz = tz
        self._clock = clock
        self.every = every
        self.refresh = refresh
        self._groups: dict[tuple[Board, int], _Group] = {}
        self._owners: dict[Hashable, tuple[Board, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, owner: Hashable, user_id: int, shown: m.LeaderboardReply, limit: int, push: Push) -> None:
        """Push the board of ``shown`` (just sent to ``owner``) to ``owner`` from now on when its top changes;
        a board ``owner`` watched before is dropped."""
        self.remove(owner)
        board = Board(shown.game, shown.metric, shown.period)
        group = self._groups.get((board, limit))
        if group is None:
            group = self._groups[(board, limit)] = _Group(board, limit, _shown(shown))
        group.watchers[owner] = _Watcher(user_id, push)
        self._owners[owner] = (board, limit)

    def remove(self, owner: Hashable) -> None:
        """Stop pushing to ``owner`` (nothing when it watches nothing)."""
        where = self._owners.pop(owner, None)
        if where is None:
            return
        group = self._groups[where]
        group.watchers.pop(owner, None)
        if not group.watchers:
            del self._groups[where]

    def changed(self, names: Iterable[str]) -> None:
        """The boards named (:attr:`Board.name`) changed: re-read them at the next pass."""
        touched = set(names)
        for group in self._groups.values():
            if group.board.name in touched:
                group.dirty = True

    def touch_all(self) -> None:
        """Re-read every watched board at the next pass (notices may have been lost)."""
        for group in self._groups.values():
            group.dirty = True

    @property
    def watching(self) -> int:
        """Sockets watching a board on this node."""
        return len(self._owners)

    async def push_changes(self) -> int:
        """One pass: read each dirty group (or one whose period rolled over) and push it where its top
        changed. Returns how many sockets got a board."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        pushed = 0
        for group in list(self._groups.values()):
            key = group.board.at(now, self._tz)
            if not group.dirty and key.period_key == group.shown[0]:
                continue
            group.dirty = False
            try:
                reply = await self._read_top(key, group.limit)
                shown = _shown(reply)
                if shown == group.shown:
                    continue
                places = {entry.user: m.LeaderboardStanding(rank=entry.rank, score=entry.score) for entry in reply.top}
                outside = sorted({w.user_id for w in group.watchers.values()} - places.keys())
                for user, standing in (await self._read_standings(key, outside)).items():
                    places[user] = m.LeaderboardStanding(rank=standing.rank, score=standing.score)
            except UNAVAILABLE_ERRORS as exc:  # the store (LeaderboardUnavailable: a ConnectionError) or PostgreSQL
                group.dirty = True  # the next pass tries again
                log.warning("watched leaderboard %s not read: %s", group.board.name, exc)
                continue
            group.shown = shown
            for watcher in list(group.watchers.values()):
                watcher.push(msgspec.structs.replace(reply, id=None, me=places.get(watcher.user_id)))
                pushed += 1
        return pushed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leaderboard-watchers")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._groups.clear()
        self._owners.clear()

    async def _run(self) -> None:
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(self.every)
            if not self._groups:
                continue
            if time.monotonic() - last_refresh >= self.refresh:
                last_refresh = time.monotonic()
                self.touch_all()
            try:
                await self.push_changes()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pushing watched leaderboards failed")
