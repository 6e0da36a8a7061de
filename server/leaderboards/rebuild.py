"""Boards rebuilt from PostgreSQL: every bet settled won or lost in ``bets``, through the relay's own rules.

:func:`rebuild_boards` (``croupier leaderboard rebuild``, and a node alone at start) runs holding the
relay's lock (:mod:`.lock`), so no batch is applied meanwhile. In one repeatable-read snapshot it claims
every unclaimed feed row into one new batch, notes every batch in the feed, and reads the bets; the
boards they make (:class:`~.boards.Planner`, as the relay makes them) then replace the stored ones at
once, and the noted batches are marked applied in the same step (:meth:`~.store.LeaderboardStore.replace`):
their bets are in the snapshot, so when the relay meets those batches their apply is a no-op. A bet
settled after the snapshot is in neither: its feed row is relayed as usual. If the replace fails, the
batches were not marked, and the relay applies them to the old boards, which never had them.

:func:`check_boards` (``croupier leaderboard rebuild --check``) relays what the feed holds, then compares
the stored boards with the rebuilt ones without replacing anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from ..db.transactions import Connection
from .batches import relay_batches
from .boards import BoardChanges, Planner, SettledBet
from .store import LeaderboardStore

_CHUNK = 10_000
_BETS = "SELECT id, user_id, game, amount, payout, settled_at FROM bets WHERE status IN ('won', 'lost')"
_SNAPSHOT_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild read and wrote."""

    bets: int
    boards: int
    batches: int
    """Feed batches marked applied (their bets were in the snapshot)."""


async def read_boards(conn: Connection, planner: Planner, now: float) -> BoardChanges:
    """Every board as the settled bets make it, read in the caller's transaction (chunk by chunk)."""
    content = BoardChanges()
    cursor = await conn.cursor(_BETS)
    while rows := await cursor.fetch(_CHUNK):
        bets = (SettledBet(r["id"], r["user_id"], r["game"], r["amount"], r["payout"], r["settled_at"]) for r in rows)
        planner.plan(bets, now, into=content)
    return content


async def rebuild_boards(conn: asyncpg.Connection, store: LeaderboardStore, planner: Planner,
                         now: float) -> RebuildReport:  # fmt: skip
    """Replace every board in ``store`` with the boards rebuilt from ``bets`` (see the module's docstring).
    Call it holding the relay's lock, on its connection."""
    for attempt in range(1, _SNAPSHOT_ATTEMPTS + 1):
        try:
            async with conn.transaction(isolation="repeatable_read"):
                batch = await conn.fetchval("SELECT nextval('leaderboard_batches')")  # the snapshot starts here
                await conn.execute("UPDATE leaderboard_feed SET batch = $1 WHERE batch IS NULL", batch)
                batches = [row["batch"] for row in await conn.fetch("SELECT DISTINCT batch FROM leaderboard_feed")]
                content = await read_boards(conn, planner, now)
            break
        except asyncpg.SerializationError:  # a relay that lost the lock deleted a batch meanwhile
            if attempt == _SNAPSHOT_ATTEMPTS:
                raise
    await store.replace(content, batches)
    return RebuildReport(content.bets, len(content.expiries), len(batches))


async def check_boards(conn: asyncpg.Connection, store: LeaderboardStore, planner: Planner, *,
                       clock: Callable[[], float] = time.time) -> list[str]:  # fmt: skip
    """Relay what the feed holds, then compare the stored boards with the boards ``bets`` make; the
    differences, for people (empty: the same). Call it holding the relay's lock, on its connection."""
    for _ in range(_SNAPSHOT_ATTEMPTS):
        await relay_batches(conn, store, planner, clock=clock, budget=60.0)
        async with conn.transaction(isolation="repeatable_read"):
            if await conn.fetchval("SELECT count(*) FROM leaderboard_feed"):
                continue  # settled since: relay those too
            expected = await read_boards(conn, planner, clock())
        return differences(expected, await store.dump())
    return ["bets keep being settled: the feed was never empty long enough to compare"]


def differences(expected: BoardChanges, actual: BoardChanges, *, most: int = 20) -> list[str]:
    """How ``actual`` boards differ from ``expected`` ones (at most ``most`` lines)."""
    found: list[str] = []
    for key in sorted(expected.expiries.keys() | actual.expiries.keys()):
        if key not in actual.expiries:
            found.append(f"{key}: missing ({len(_members(expected, key))} players expected)")
        elif key not in expected.expiries:
            found.append(f"{key}: should not exist ({len(_members(actual, key))} players)")
        else:
            want, have = _members(expected, key), _members(actual, key)
            for user in sorted(want.keys() | have.keys()):
                if want.get(user) != have.get(user):
                    found.append(f"{key}: user {user} is {have.get(user)}, expected {want.get(user)}")
            if expected.expiries[key] != actual.expiries[key]:
                found.append(f"{key}: expires at {actual.expiries[key]}, expected {expected.expiries[key]}")
    return found[:most] + ([f"... and {len(found) - most} more"] if len(found) > most else [])


def _members(content: BoardChanges, key: str) -> dict[int, object]:
    return dict(content.wins[key]) if key in content.wins else dict(content.net.get(key, {}))
