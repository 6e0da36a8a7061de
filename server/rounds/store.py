"""Rounds and seed chains in PostgreSQL. Used by the round engine only (leases and fencing: :mod:`.lease`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from ..db.roundlock import close_betting
from ..db.transactions import Connection, in_transaction
from .events import RoundView
from .fair import generate_chain, sha256_hex
from .lease import fence_game, fence_round, take_lease


@dataclass(frozen=True, slots=True)
class NewRound:
    """A round just opened for betting, with its (still secret) seed."""

    round_id: int
    seed: str
    seed_hash: str
    salt: str
    closes_at_ms: int


@dataclass(frozen=True, slots=True)
class StoredRound:
    round_id: int
    phase: str
    seed: str
    seed_hash: str
    salt: str
    outcome: dict[str, Any] | None
    started_at_ms: int | None


@dataclass(frozen=True, slots=True)
class OpenBet:
    """A bet still open in a round, its params as stored (the driver reads them into the game's bet type)."""

    bet_id: int
    user_id: int
    amount: int
    params: dict[str, Any]
    cashout: int | None


_SEED = "SELECT seed FROM seeds WHERE chain_id = $1 AND idx = $2"


def _ms(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


class RoundStore:
    """Parameterized queries over ``rounds``, ``seed_chains`` and ``seeds``."""

    def __init__(self, pool: asyncpg.Pool, *, chain_length: int) -> None:
        self._pool = pool
        self._chain_length = chain_length

    async def take_lease(self, game: str, holder: str) -> int:
        """:func:`~server.rounds.lease.take_lease` on this store's pool: ``game``'s new fencing token."""
        return await take_lease(self._pool, game, holder)

    async def open_round(self, game: str, betting_ms: int, token: int) -> NewRound:
        """Take the game's next seed (starting a new chain when the last is used up) and open a round."""

        async def work(conn: Connection) -> NewRound:
            await fence_game(conn, game, token)
            chain = await conn.fetchrow(
                "SELECT id, terminating_hash, length, next_index FROM seed_chains WHERE game = $1 "
                "ORDER BY id DESC LIMIT 1 FOR UPDATE",
                game,
            )
            if chain is None or chain["next_index"] > chain["length"]:
                chain = await self._new_chain(conn, game)
            index = chain["next_index"]
            seed = await conn.fetchval(_SEED, chain["id"], index)
            if seed is None:  # a chain whose seeds are missing can prove nothing: start a new one
                chain = await self._new_chain(conn, game)
                index = chain["next_index"]
                seed = await conn.fetchval(_SEED, chain["id"], index)
            await conn.execute("UPDATE seed_chains SET next_index = next_index + 1 WHERE id = $1", chain["id"])
            row = await conn.fetchrow(
                "INSERT INTO rounds (game, phase, chain_id, chain_idx, seed_hash, closes_at, driver_token) "
                "VALUES ($1, 'betting', $2, $3, $4, now() + make_interval(secs => $5::float8 / 1000), $6) "
                "RETURNING id, closes_at",
                game, chain["id"], index, sha256_hex(seed), betting_ms, token,
            )  # fmt: skip
            assert row is not None
            closes = _ms(row["closes_at"])
            assert closes is not None
            return NewRound(row["id"], seed, sha256_hex(seed), chain["terminating_hash"], closes)

        return await in_transaction(self._pool, work)

    async def _new_chain(self, conn: Connection, game: str) -> asyncpg.Record:
        seeds = generate_chain(self._chain_length)
        chain = await conn.fetchrow(
            "INSERT INTO seed_chains (game, terminating_hash, length) VALUES ($1, $2, $3) "
            "RETURNING id, terminating_hash, length, next_index",
            game, sha256_hex(seeds[0]), len(seeds),
        )  # fmt: skip
        assert chain is not None
        record: asyncpg.Record = chain
        await conn.copy_records_to_table(
            "seeds", records=[(chain["id"], i + 1, s) for i, s in enumerate(seeds)], columns=["chain_id", "idx", "seed"]
        )
        return record

    async def start_running(self, round_id: int, token: int) -> int | None:
        """Close betting and mark the round running; returns the start (ms).

        Takes the round's betting lock exclusively (:func:`~server.db.roundlock.close_betting`), so it
        waits for the bet batches that hold it shared, and any later batch sees the round closed.
        """

        async def work(conn: Connection) -> int | None:
            await fence_round(conn, round_id, token)
            await close_betting(conn, round_id)
            started = await conn.fetchval(
                "UPDATE rounds SET phase = 'running', started_at = now() WHERE id = $1 AND phase = 'betting' "
                "RETURNING started_at",
                round_id,
            )
            return _ms(started)

        return await in_transaction(self._pool, work)

    async def open_bets(self, round_id: int) -> list[OpenBet]:
        rows = await self._pool.fetch(
            "SELECT id, user_id, amount, params, cashout FROM bets WHERE round_id = $1 AND status = 'accepted' "
            "ORDER BY id",
            round_id,
        )
        return [OpenBet(r["id"], r["user_id"], r["amount"], orjson.loads(r["params"]), r["cashout"]) for r in rows]

    @staticmethod
    async def mark_closed(
        conn: Connection, round_id: int, phase: str, outcome: dict[str, Any] | None, token: int
    ) -> None:
        """Mark a round settled or voided, inside the settlement transaction.

        Fenced: with a stale token it raises :class:`~server.rounds.lease.StaleLease`, which rolls the
        whole settlement back, payouts included.
        """
        await fence_round(conn, round_id, token)
        await conn.execute(
            "UPDATE rounds SET phase = $2, outcome = $3::jsonb, settled_at = now() WHERE id = $1",
            round_id, phase, None if outcome is None else orjson.dumps(outcome).decode(),
        )  # fmt: skip

    async def current_view(self, game: str) -> RoundView | None:
        """The game's latest unfinished round as a ``round`` event would describe it (no seed), or None."""
        row = await self._pool.fetchrow(
            "SELECT r.id, r.phase, r.seed_hash, c.terminating_hash, r.closes_at, r.started_at FROM rounds r "
            "JOIN seed_chains c ON c.id = r.chain_id WHERE r.game = $1 AND r.phase IN ('betting', 'running') "
            "ORDER BY r.id DESC LIMIT 1",
            game,
        )
        if row is None:
            return None
        return RoundView(
            game=game,
            round=row["id"],
            seed_hash=row["seed_hash"],
            salt=row["terminating_hash"],
            closes_at=_ms(row["closes_at"]),
            phase=row["phase"],
            started_at=_ms(row["started_at"]),
        )

    async def unfinished(self, game: str) -> list[StoredRound]:
        """Rounds of ``game`` left in betting or running (their driver stopped)."""
        return await self._rounds(game, ("betting", "running"), 1000)

    async def history(self, game: str, limit: int) -> list[StoredRound]:
        """The most recent settled rounds of ``game``, newest first."""
        return await self._rounds(game, ("settled",), limit)

    async def _rounds(self, game: str, phases: tuple[str, ...], limit: int) -> list[StoredRound]:
        rows = await self._pool.fetch(
            "SELECT r.id, r.phase, s.seed, r.seed_hash, c.terminating_hash, r.outcome, r.started_at "
            "FROM rounds r JOIN seeds s ON s.chain_id = r.chain_id AND s.idx = r.chain_idx "
            "JOIN seed_chains c ON c.id = r.chain_id WHERE r.game = $1 AND r.phase = ANY($3::text[]) "
            "ORDER BY r.id DESC LIMIT $2",
            game,
            limit,
            list(phases),
        )
        return [
            StoredRound(r["id"], r["phase"], r["seed"], r["seed_hash"], r["terminating_hash"],
                        None if r["outcome"] is None else orjson.loads(r["outcome"]), _ms(r["started_at"]))
            for r in rows
        ]  # fmt: skip
