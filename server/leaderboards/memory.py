"""The in-process leaderboard store: a node alone on the in-process broker keeps its boards here.

The same rules as the Redis store (:mod:`.store`), on plain dicts: a board's users ranked by a list
sorted when the board is next read after a change (a batch changes a board at most a few times a
second). Expiry uses ``clock`` (Unix seconds) where Redis uses its own. Nothing here survives the
process: the node rebuilds the boards from PostgreSQL when it starts.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .boards import BoardChanges, BoardKey, Win, parse_key
from .store import GUARD_TTL, Standing


@dataclass(slots=True)
class _Board:
    scores: dict[int, int] = field(default_factory=dict)
    wins: dict[int, Win] = field(default_factory=dict)
    expires: int | None = None
    ranked: list[tuple[int, str, int]] | None = None
    """(score, user id as text, user id), ascending: Redis's order read from the end. None: stale."""

    def ranking(self) -> list[tuple[int, str, int]]:
        if self.ranked is None:
            self.ranked = sorted((score, str(user), user) for user, score in self.scores.items())
        return self.ranked


class MemoryStore:
    """Boards in this process (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._boards: dict[str, _Board] = {}
        self._applied: dict[int, float] = {}
        self._built = False

    async def built(self) -> bool:
        return self._built

    async def apply(self, batch: int, changes: BoardChanges) -> bool:
        now = self._clock()
        if self._applied.get(batch, 0.0) > now:
            return False
        self._applied[batch] = now + GUARD_TTL
        if len(self._applied) > 10_000:
            self._applied = {b: until for b, until in self._applied.items() if until > now}
        self._merge(changes, now)
        return True

    def _merge(self, changes: BoardChanges, now: float) -> None:
        for key, scores in changes.net.items():
            board = self._board(key, changes.expiries.get(key), now)
            for user, delta in scores.items():
                board.scores[user] = board.scores.get(user, 0) + delta
            board.ranked = None
        for key, wins in changes.wins.items():
            board = self._board(key, changes.expiries.get(key), now)
            for user, win in wins.items():
                if win.beats(board.wins.get(user)):
                    board.wins[user] = win
                    board.scores[user] = win.payout
            board.ranked = None

    async def top(self, board: BoardKey, limit: int) -> list[Standing]:
        found = self._live(board.key)
        if found is None:
            return []
        ranked = found.ranking()
        return [Standing(user, rank, score, found.wins.get(user))
                for rank, (score, _, user) in enumerate(reversed(ranked[-limit:]), start=1)]  # fmt: skip

    async def standings(self, board: BoardKey, user_ids: Sequence[int]) -> dict[int, Standing]:
        found = self._live(board.key)
        if found is None:
            return {}
        ranked = found.ranking()
        standings: dict[int, Standing] = {}
        for user in user_ids:
            score = found.scores.get(user)
            if score is not None:
                index = bisect.bisect_left(ranked, (score, str(user), user))
                standings[user] = Standing(user, len(ranked) - index, score)
        return standings

    async def replace(self, content: BoardChanges, applied: Sequence[int]) -> None:
        now = self._clock()
        self._boards = {}
        self._merge(content, now)
        self._boards = {key: board for key, board in self._boards.items()
                        if board.expires is None or board.expires > now}  # fmt: skip
        for batch in applied:
            self._applied[batch] = now + GUARD_TTL
        self._built = True

    async def dump(self) -> BoardChanges:
        now = self._clock()
        content = BoardChanges()
        for key, board in self._boards.items():
            if board.expires is not None and board.expires <= now:
                continue
            content.expiries[key] = board.expires
            parsed = parse_key(key)
            if parsed is not None and parsed.board.metric == "win":
                content.wins[key] = dict(board.wins)
            else:
                content.net[key] = dict(board.scores)
        return content

    async def close(self) -> None:
        self._boards.clear()
        self._applied.clear()
        self._built = False

    def _board(self, key: str, expires: int | None, now: float) -> _Board:
        board = self._live(key, now)
        if board is None:
            board = self._boards[key] = _Board()
        board.expires = expires
        return board

    def _live(self, key: str, now: float | None = None) -> _Board | None:
        board = self._boards.get(key)
        if board is not None and board.expires is not None and board.expires <= (self._clock() if now is None else now):
            del self._boards[key]
            return None
        return board
