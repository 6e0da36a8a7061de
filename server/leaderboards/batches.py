"""The relay's three steps on one batch of the feed: claim, apply, finish (see :mod:`.relay`).

Each is a function of its own so that a test can run them one by one and stop between any two (a relay
that "dies" after claiming, or after applying): whatever a dead relay left, the next one finishes, and a
batch counts once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from .boards import BoardChanges, Planner, SettledBet
from .store import LeaderboardStore

BATCH_SIZE = 500
"""Rows a batch takes at most: one Lua script applies them, about 10 ms of Redis (``loadtest/bench_leaderboard.py``)."""
CYCLE_SECONDS = 1.0
"""Longest a cycle holds the lock before letting a rebuild (or another node) have a turn."""

_ROWS = "batch, bet_id, user_id, game, stake, payout, settled_at"
_LEFTOVER = f"""
SELECT {_ROWS} FROM leaderboard_feed
WHERE batch = (SELECT min(batch) FROM leaderboard_feed WHERE batch IS NOT NULL) ORDER BY id
"""  # noqa: S608 - column names only
_CLAIM = f"""
WITH b AS (SELECT nextval('leaderboard_batches') AS batch),
     picked AS (SELECT id FROM leaderboard_feed WHERE batch IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
UPDATE leaderboard_feed f SET batch = b.batch FROM b, picked WHERE f.id = picked.id AND f.batch IS NULL
RETURNING {", ".join("f." + column for column in _ROWS.split(", "))}
"""  # noqa: S608 - column names only
_FINISH = "DELETE FROM leaderboard_feed WHERE batch = $1"


@dataclass(frozen=True, slots=True)
class Batch:
    """Feed rows claimed under one batch number."""

    id: int
    bets: list[SettledBet]


@dataclass(slots=True)
class CycleResult:
    """What one cycle did."""

    batches: int = 0
    rows: int = 0
    skipped: int = 0
    """Batches found applied already (a relay died before deleting them)."""
    boards: set[str] = field(default_factory=set)


def _batch(rows: list[asyncpg.Record]) -> Batch | None:
    if not rows:
        return None
    bets = [SettledBet(r["bet_id"], r["user_id"], r["game"], r["stake"], r["payout"], r["settled_at"]) for r in rows]
    return Batch(rows[0]["batch"], bets)


async def claim_batch(conn: asyncpg.Connection, size: int = BATCH_SIZE) -> Batch | None:
    """A batch to apply: an unfinished one (a dead relay's), else up to ``size`` unclaimed rows under a new
    batch number (committed when this returns, unless ``conn`` is in a transaction); None when the feed is
    empty. Call it holding the lock."""
    return (await _claim(conn, size, True))[0]


async def _claim(conn: asyncpg.Connection, size: int, leftovers: bool) -> tuple[Batch | None, bool]:
    """The next batch (a leftover first, when ``leftovers`` may remain), and whether more leftovers may remain."""
    if leftovers and (batch := _batch(await conn.fetch(_LEFTOVER))) is not None:
        return batch, True
    return _batch(await conn.fetch(_CLAIM, size)), False


async def apply_batch(store: LeaderboardStore, batch: Batch, planner: Planner, now: float) -> BoardChanges | None:
    """Apply ``batch`` to ``store`` once; its changes, or None when it had been applied before."""
    changes = planner.plan(batch.bets, now)
    return changes if await store.apply(batch.id, changes) else None


async def finish_batch(conn: asyncpg.Connection, batch: Batch) -> None:
    """Delete ``batch``'s rows from the feed (it is applied)."""
    await conn.execute(_FINISH, batch.id)


async def relay_batches(conn: asyncpg.Connection, store: LeaderboardStore, planner: Planner, *,
                        clock: Callable[[], float] = time.time, size: int = BATCH_SIZE,
                        budget: float = CYCLE_SECONDS) -> CycleResult:  # fmt: skip
    """Claim, apply and finish batches until the feed is empty or ``budget`` seconds have passed. Call it
    holding the lock, on its connection (``conn``)."""
    result = CycleResult()
    deadline = time.monotonic() + budget
    # A dead relay's batches first (they can only be left before this cycle: the lock is ours now).
    batch, leftovers = await _claim(conn, size, True)
    while batch is not None:
        changes = await apply_batch(store, batch, planner, clock())
        result.batches += 1
        result.rows += len(batch.bets)
        if changes is None:
            result.skipped += 1
        else:
            result.boards |= changes.boards
        if time.monotonic() >= deadline:
            await finish_batch(conn, batch)
            break
        # One commit finishes this batch and claims the next: a crash in between loses neither (the batch is
        # applied again, as a no-op, and the next is claimed again).
        async with conn.transaction():
            await finish_batch(conn, batch)
            batch, leftovers = await _claim(conn, size, leftovers)
    return result
