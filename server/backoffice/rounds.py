"""Rounds as the back office sees them (list, inspect) and voids them.

Reads only here, except :func:`void`, which goes to the node driving the round's game
(:meth:`server.rounds.engine.RoundEngine.void`, through :mod:`server.rounds.actions` like a player's
cash-out): that node stops its driver, voids the round with the driver's lease token (every bet refunded,
the seed revealed, the round announced ``settled`` with ``voided``) and starts the driver again, so a void
never races the driver. A round's seed is shown once the round is closed (settled or voided), never before:
it would tell the outcome.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

import asyncpg
import orjson

from . import audit
from .errors import Conflict, NotFound

_COLUMNS = "SELECT id, game, phase, seed_hash, created_at, closes_at, started_at, settled_at FROM rounds"
_LIST = _COLUMNS + " WHERE id < $1 ORDER BY id DESC LIMIT $2"
_GAME_LIST = _COLUMNS + " WHERE game = $3 AND id < $1 ORDER BY id DESC LIMIT $2"
"""A page of one game's rounds: ``rounds_by_game``."""
_ROUND = """
SELECT r.id, r.game, r.phase, r.seed_hash, c.salt, r.outcome, r.created_at, r.closes_at, r.started_at,
       r.settled_at, r.chain_id, r.chain_idx, r.driver_token,
       CASE WHEN r.phase IN ('settled', 'voided') THEN s.seed END AS seed
FROM rounds r JOIN seed_chains c ON c.id = r.chain_id
LEFT JOIN seeds s ON s.chain_id = r.chain_id AND s.idx = r.chain_idx
WHERE r.id = $1
"""
_BETS = """
SELECT count(*) AS count, coalesce(sum(amount), 0)::bigint AS total, coalesce(sum(payout), 0)::bigint AS paid,
       count(*) FILTER (WHERE status = 'accepted') AS open, count(*) FILTER (WHERE status = 'refunded') AS refunded
FROM bets WHERE round_id = $1
"""
"""A round's bets in numbers: ``bets_by_round`` (migration 0016)."""


class RoundVoids(Protocol):
    """What voids a round: the node's round engine, or (the ``croupier`` command) a router that forwards
    the void to the node driving the game (:class:`server.rounds.actions.ActionRouter`)."""

    async def void(self, game: str, round_id: int, reason: str, /) -> dict[str, Any]:
        """Void the round on the node driving ``game``; what was refunded, or ``RoundRefused``."""
        ...


def _ms(at: dt.datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


def _summary(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "game": row["game"],
        "phase": row["phase"],
        "seed_hash": row["seed_hash"],
        "created_at": _ms(row["created_at"]),
        "closes_at": _ms(row["closes_at"]),
        "started_at": _ms(row["started_at"]),
        "settled_at": _ms(row["settled_at"]),
    }


async def page(pool: asyncpg.Pool, game: str | None, before_id: int, limit: int) -> list[dict[str, Any]]:
    """Rounds (of ``game``, or every game) with ids below ``before_id``, newest first."""
    if game is None:
        rows = await pool.fetch(_LIST, before_id, limit)
    else:
        rows = await pool.fetch(_GAME_LIST, before_id, limit, game)
    return [_summary(row) for row in rows]


async def inspect(pool: asyncpg.Pool, round_id: int) -> dict[str, Any]:
    """A round: its phase, seed hash and salt, its bets (count, total staked, paid, still open, refunded),
    its outcome once settled and its seed once closed. :class:`NotFound` if there is no such round."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_ROUND, round_id)
        if row is None:
            raise NotFound(f"no round {round_id}")
        bets = await conn.fetchrow(_BETS, round_id)
    assert bets is not None
    return {
        **_summary(row),
        "salt": row["salt"],
        "chain": {"id": row["chain_id"], "index": row["chain_idx"]},
        "driver_token": row["driver_token"],
        "bets": {key: bets[key] for key in ("count", "total", "paid", "open", "refunded")},
        "outcome": None if row["outcome"] is None or row["phase"] != "settled" else orjson.loads(row["outcome"]),
        "seed": row["seed"],
    }


async def void(pool: asyncpg.Pool, voids: RoundVoids, actor: str, round_id: int, reason: str) -> dict[str, Any]:
    """Void round ``round_id`` (betting or running) on the node driving its game, then write the audit row;
    what was refunded. :class:`NotFound`, or :class:`Conflict` for a round already closed; the engine's
    ``RoundRefused`` for one it will not void (settling now, not the current one; ``unavailable`` when the
    driving node does not answer: look at the round again before retrying)."""
    before = await inspect(pool, round_id)
    if before["phase"] not in ("betting", "running"):
        raise Conflict(f"round {round_id} is {before['phase']} already", "round")
    result = await voids.void(before["game"], round_id, reason)
    await audit.record(pool, actor, "void", f"round:{round_id}", reason,
                       before={"phase": before["phase"], "bets": before["bets"]}, after=result)  # fmt: skip
    return result
