"""``croupier leaderboard rebuild [--check]``: every board recomputed from the settled bets in PostgreSQL.

Without ``--check`` the stored boards are replaced at once (:func:`~.rebuild.rebuild_boards`); with it,
the feed is relayed first and the stored boards compared with the rebuilt ones, nothing replaced
(:func:`~.rebuild.check_boards`; exit 1 on a difference). Both wait for the relays' lock (a relay holds it
for a cycle, a second at most), so nodes may keep running. Without ``REDIS_URL`` there is nothing to do:
the node alone keeps its boards in its memory and rebuilds them this same way whenever it starts.
"""

from __future__ import annotations

import sys
import time

from .boards import Planner
from .lock import RelayLock
from .periods import time_zone
from .rebuild import check_boards, rebuild_boards
from .store import LeaderboardUnavailable, store_from_url

LOCK_WAIT = 60.0
"""Seconds to wait for the relays' lock."""


async def run_rebuild(dsn: str, redis_url: str | None, tz_name: str, *, check: bool) -> int:
    """Rebuild (or, with ``check``, compare) the boards in Redis at ``redis_url`` from the database at ``dsn``
    (a session DSN: the lock is a session lock); print what was done; return the exit status."""
    if redis_url is None:
        print("no REDIS_URL: a node alone keeps its leaderboards in memory and rebuilds them from PostgreSQL "
              "whenever it starts; there is nothing to rebuild here")  # fmt: skip
        return 0
    planner = Planner(time_zone(tz_name))
    store = store_from_url(redis_url)
    lock = RelayLock(dsn)
    try:
        if not await lock.take(wait=LOCK_WAIT):
            print(f"croupier: the leaderboards' relay lock stayed taken for {LOCK_WAIT:.0f} s; try again",
                  file=sys.stderr)  # fmt: skip
            return 1
        if check:
            found = await check_boards(lock.conn, store, planner)
            for line in found:
                print(line)
            print("the boards differ from the settled bets" if found else "every board matches the settled bets")
            return 1 if found else 0
        report = await rebuild_boards(lock.conn, store, planner, time.time())
    except LeaderboardUnavailable as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return 1
    finally:
        await lock.close()
        await store.close()
    print(f"rebuilt {report.boards} boards from {report.bets} settled bets ({report.batches} feed batches folded in)")
    return 0
