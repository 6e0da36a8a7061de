"""Players' names on the boards: from the ``users`` table, cached.

A board shows at most 100 players and its top changes rarely, so names are read in one query for those
missing from the cache and kept :data:`NAME_TTL` seconds (a player who renames shows the new name
within that), at most :data:`CACHE_SIZE` of them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import asyncpg

from ..metrics import READS

NAME_TTL = 300.0
CACHE_SIZE = 10_000

_NAMES = "SELECT id, first_name, username FROM users WHERE id = ANY($1::bigint[])"


def display_name(first_name: str | None, username: str | None) -> str:
    """What a board shows for a player: the first name, else the username, else nothing."""
    return (first_name or "").strip() or (username or "")


class PlayerNames:
    """Display names by user id over ``pool``, cached (see the module's docstring)."""

    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._clock = clock
        self._cache: OrderedDict[int, tuple[str, float]] = OrderedDict()

    async def names(self, user_ids: Iterable[int]) -> dict[int, str]:
        """The display name of each of ``user_ids`` (``""`` for one without a user row)."""
        now = self._clock()
        found: dict[int, str] = {}
        missing: list[int] = []
        for user in user_ids:
            cached = self._cache.get(user)
            if cached is not None and cached[1] > now:
                found[user] = cached[0]
            else:
                missing.append(user)
        READS["names", "database" if missing else "memory"].n += 1
        if missing:
            rows = await self._pool.fetch(_NAMES, missing)
            read = {row["id"]: display_name(row["first_name"], row["username"]) for row in rows}
            for user in missing:
                name = found[user] = read.get(user, "")
                self._cache[user] = (name, now + NAME_TTL)
                self._cache.move_to_end(user)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return found
