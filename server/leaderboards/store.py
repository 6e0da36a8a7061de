"""Where the boards live: the :class:`LeaderboardStore` interface and its two backends.

- :class:`~.redisstore.RedisStore`: sorted sets in Redis (``REDIS_URL``), shared by every node; a batch is
  applied by one Lua script, so it counts once (the guard) and whole;
- :class:`~.memory.MemoryStore`: the same in this process, for a node alone on the in-process broker; it
  does not outlive the node.

A store knows whether its boards were ever built whole (:meth:`LeaderboardStore.built`): a new in-process
store, a new Redis, or one that lost its data (restarted without persistence, flushed) was not, and the
relay rebuilds the boards from PostgreSQL before it relays anything into it (:mod:`.rebuild`).

Chosen by :func:`store_from_url` like the broker and the quotas. One conformance suite runs over both
(``tests/leaderboards/test_store.py``): ranks, ties, wins, the guard and replacing every board agree.

Ranks: users by score, highest first; equal scores in the order Redis keeps them (by the user id as
text, the greater first). Ranks start at 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .boards import BoardChanges, BoardKey, Win

GUARD_TTL = 86_400
"""Seconds a batch's guard is kept: a batch applied and not deleted from the feed within this time (the
relay's PostgreSQL gone for a day) would count again."""


class LeaderboardUnavailable(ConnectionError):
    """The store (Redis) did not answer: nothing was changed, or read."""


@dataclass(frozen=True, slots=True)
class Standing:
    """A user's place on a board: ``rank`` from 1, ``score``, and on ``win`` boards the win scored."""

    user_id: int
    rank: int
    score: int
    win: Win | None = None


class LeaderboardStore(Protocol):
    """The boards of one deployment (every node of a Redis cluster shares one)."""

    async def built(self) -> bool:
        """Whether :meth:`replace` ever built the boards whole in this store (and they are still there)."""
        ...

    async def apply(self, batch: int, changes: BoardChanges) -> bool:
        """Apply ``changes`` once per ``batch`` id, whole or not at all: True when applied now, False when
        ``batch`` was applied before (within :data:`GUARD_TTL`), and nothing changed."""
        ...

    async def top(self, board: BoardKey, limit: int) -> list[Standing]:
        """The first ``limit`` users of ``board``, best first (no board: empty)."""
        ...

    async def standings(self, board: BoardKey, user_ids: Sequence[int]) -> dict[int, Standing]:
        """The place of each of ``user_ids`` on ``board`` (those on it; without the win)."""
        ...

    async def replace(self, content: BoardChanges, applied: Sequence[int]) -> None:
        """Make ``content`` every board there is, at once (boards not in it are dropped), mark the batches
        ``applied`` as applied (their rows are in ``content``), and the store :meth:`built`."""
        ...

    async def dump(self) -> BoardChanges:
        """Every board's content (what :meth:`replace` would have made it): for checks and tests."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def store_from_url(url: str | None, *, prefix: str = "croupier:") -> LeaderboardStore:
    """The in-process store when ``url`` is None (one node), else the store in Redis at ``url`` (one server
    or Sentinels: :mod:`server.broker.connect`). Backends are imported lazily."""
    if url is None:
        from .memory import MemoryStore

        return MemoryStore()
    from .redisstore import RedisStore

    return RedisStore(url, prefix=prefix)
