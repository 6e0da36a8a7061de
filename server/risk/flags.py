"""Risk flags: what a detector found about one user over one window, and the ``risk_flags`` table.

A flag is for people to look at, never a decision: nothing in Croupier refuses a player because of one.
Each detector (:mod:`.velocity`, :mod:`.luck`, :mod:`.cycling`, :mod:`.farming`, :mod:`.sides`) returns
:class:`Flag` values; :func:`store_flags` writes them, one row per (user, kind, window), so a report run
again over the same window adds nothing (a flag nobody reviewed yet gets the new score and evidence).
:func:`list_flags` and :func:`mark_reviewed` are what the back office needs to show them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from ..db.transactions import Connection


class FlagKind(StrEnum):
    """What a flag is about (the ``kind`` column)."""

    BET_VELOCITY = "bet_velocity"
    """Bets a minute far above the population's (:mod:`.velocity`)."""
    DEPOSIT_VELOCITY = "deposit_velocity"
    """Deposits an hour far above the population's (:mod:`.velocity`)."""
    LUCK = "luck"
    """Won far more than the game's odds allow over the bets made (:mod:`.luck`)."""
    REFUND_CYCLING = "refund_cycling"
    """Payments refunded again and again, or soon after their chips were played (:mod:`.cycling`)."""
    WELCOME_FARMING = "welcome_farming"
    """One of many new accounts claiming the welcome credit from one address (:mod:`.farming`)."""
    BOTH_SIDES = "both_sides"
    """Bets covering another account's in the same rounds, round after round (:mod:`.sides`)."""


@dataclass(frozen=True, slots=True)
class Window:
    """The period a report looks at: ``start`` included, ``end`` excluded (aware datetimes)."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a window's bounds must be aware datetimes")
        if not self.start < self.end:
            raise ValueError(f"a window must start before it ends ({self.start:%Y-%m-%d %H:%M} is not before "
                             f"{self.end:%Y-%m-%d %H:%M})")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Flag:
    """One user flagged by one detector: ``score`` (larger: further out; what it counts depends on
    ``kind``) and the ``evidence`` it saw, JSON-ready, whose ``summary`` is one line for people."""

    user_id: int
    kind: FlagKind
    score: float
    evidence: Mapping[str, Any]

    @property
    def summary(self) -> str:
        """The evidence in one line (its ``summary``)."""
        return str(self.evidence.get("summary", ""))


@dataclass(frozen=True, slots=True)
class StoredFlag:
    """A row of ``risk_flags``."""

    id: int
    user_id: int
    kind: FlagKind
    score: float
    evidence: dict[str, Any]
    window: Window
    created_at: dt.datetime
    reviewed_at: dt.datetime | None
    reviewer: str | None


_STORE = """
INSERT INTO risk_flags (user_id, kind, score, evidence, window_start, window_end)
SELECT f.user_id, f.kind, f.score, f.evidence::jsonb, $5, $6
FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::text[]) AS f(user_id, kind, score, evidence)
ON CONFLICT (user_id, kind, window_start, window_end) DO UPDATE
    SET score = EXCLUDED.score, evidence = EXCLUDED.evidence
    WHERE risk_flags.reviewed_at IS NULL
RETURNING id, user_id, kind, (xmax = 0) AS inserted
"""

_COLUMNS = "id, user_id, kind, score, evidence, window_start, window_end, created_at, reviewed_at, reviewer"


async def store_flags(conn: Connection, flags: Sequence[Flag], window: Window) -> set[tuple[int, FlagKind]]:
    """Write ``flags`` found over ``window``, one row per (user, kind, window), in one statement: a row
    already there keeps its id and creation time and takes the new score and evidence unless it was
    reviewed. Returns the (user, kind) of the rows inserted now (the others were known)."""
    if not flags:
        return set()
    rows = await conn.fetch(
        _STORE,
        [flag.user_id for flag in flags],
        [flag.kind.value for flag in flags],
        [float(flag.score) for flag in flags],
        [orjson.dumps(flag.evidence).decode() for flag in flags],
        window.start,
        window.end,
    )
    return {(row["user_id"], FlagKind(row["kind"])) for row in rows if row["inserted"]}


async def list_flags(
    conn: Connection,
    *,
    user_id: int | None = None,
    kind: FlagKind | None = None,
    unreviewed: bool = False,
    before_id: int | None = None,
    limit: int = 100,
) -> list[StoredFlag]:
    """Stored flags, newest first: of one user, of one kind, only those nobody reviewed yet, those older
    than ``before_id`` (the next page: the last id of this one), at most ``limit`` (1 to 1,000)."""
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be from 1 to 1,000")
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM risk_flags "  # noqa: S608 - the column list is a constant
        "WHERE ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR kind = $2) "
        "AND (NOT $3 OR reviewed_at IS NULL) AND ($4::bigint IS NULL OR id < $4) ORDER BY id DESC LIMIT $5",
        user_id,
        None if kind is None else kind.value,
        unreviewed,
        before_id,
        limit,
    )
    return [
        StoredFlag(
            row["id"],
            row["user_id"],
            FlagKind(row["kind"]),
            row["score"],
            orjson.loads(row["evidence"]),
            Window(row["window_start"], row["window_end"]),
            row["created_at"],
            row["reviewed_at"],
            row["reviewer"],
        )
        for row in rows
    ]


async def mark_reviewed(conn: Connection, flag_id: int, reviewer: str) -> bool:
    """Record that ``reviewer`` looked at flag ``flag_id`` (once: a flag reviewed before keeps its first
    review). True when this call recorded it."""
    if not reviewer.strip():
        raise ValueError("a review needs the reviewer's name")
    done = await conn.fetchval(
        "UPDATE risk_flags SET reviewed_at = now(), reviewer = $2 WHERE id = $1 AND reviewed_at IS NULL RETURNING id",
        flag_id,
        reviewer,
    )
    return done is not None
