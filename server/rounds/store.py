"""Rounds and seed chains in PostgreSQL. Used by the round engine only (leases and fencing: :mod:`.lease`).

A game's rounds take the seeds of its chains in order, and its chains in the order they were committed
(:meth:`RoundStore.commit_chain`: by the driver when the last is used up, or ahead of time by
``croupier chain new``). A chain's salt is null until its first round closes betting: then the client
seeds of that round's bets fix it (:func:`~.fair.chain_salt`), in the transaction that closes betting.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from protocol.messages import SeedChain

from ..db.roundlock import close_betting
from ..db.transactions import Connection, in_transaction
from .events import RoundView
from .fair import chain_salt, generate_chain, sha256_hex
from .lease import fence_game, fence_round, take_lease

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewRound:
    """A round just opened for betting, with its (still secret) seed."""

    round_id: int
    seed: str
    seed_hash: str
    salt: str | None
    """None in a chain's first round: its salt is fixed when its betting closes (:meth:`RoundStore.start_running`)."""
    closes_at_ms: int
    chain: SeedChain | None = None
    """In a chain's first round: the chain it opens, announced with the round."""


@dataclass(frozen=True, slots=True)
class ClosedBetting:
    """A round whose betting is closed (:meth:`RoundStore.start_running`)."""

    started_at_ms: int | None
    """When it started running; None when it was no longer betting (it had started before)."""
    salt: str
    """Its chain's salt, which every draw of the round uses (fixed now if the round is the chain's first)."""
    chain: SeedChain | None
    """In a chain's first round: the chain, with the client seeds of its salt."""


@dataclass(frozen=True, slots=True)
class StoredRound:
    round_id: int
    phase: str
    seed: str
    seed_hash: str
    salt: str | None
    outcome: dict[str, Any] | None
    started_at_ms: int | None
    chain: SeedChain | None = None
    """In a chain's first round: the chain (see :class:`~protocol.messages.SeedChain`)."""


@dataclass(frozen=True, slots=True)
class OpenBet:
    """A bet still open in a round, its params as stored (the driver reads them into the game's bet type)."""

    bet_id: int
    user_id: int
    amount: int
    params: dict[str, Any]
    cashout: int | None


_SEED = "SELECT seed FROM seeds WHERE chain_id = $1 AND idx = $2"
_CHAIN_COLUMNS = "id, terminating_hash, length, next_index, committed_at, salt, client_seeds"
_CURRENT_CHAIN = f"""
SELECT {_CHAIN_COLUMNS} FROM seed_chains WHERE game = $1 AND next_index <= length ORDER BY id LIMIT 1 FOR UPDATE
"""  # noqa: S608 - composed of constant SQL, no data
"""The chain a game's next round takes its seed from: the first committed that is not used up."""
_INSERT_CHAIN = f"""
INSERT INTO seed_chains (game, terminating_hash, length) VALUES ($1, $2, $3) RETURNING {_CHAIN_COLUMNS}
"""  # noqa: S608 - composed of constant SQL, no data
_ROUND_CHAIN = "c.id AS chain_id, c.terminating_hash, c.length, c.committed_at, c.salt, c.client_seeds, r.chain_idx"
"""A round's chain, as :func:`_chain_view` reads it (``rounds r JOIN seed_chains c``)."""
_CLOSING_CHAIN = f"""
SELECT r.game, {_ROUND_CHAIN} FROM rounds r JOIN seed_chains c ON c.id = r.chain_id WHERE r.id = $1 FOR UPDATE OF c
"""  # noqa: S608 - composed of constant SQL, no data
_CURRENT_VIEW = f"""
SELECT r.id, r.phase, r.seed_hash, r.closes_at, r.started_at, {_ROUND_CHAIN} FROM rounds r
JOIN seed_chains c ON c.id = r.chain_id WHERE r.game = $1 AND r.phase IN ('betting', 'running')
ORDER BY r.id DESC LIMIT 1
"""  # noqa: S608 - composed of constant SQL, no data
_ROUNDS = f"""
SELECT r.id, r.phase, s.seed, r.seed_hash, r.outcome, r.started_at, {_ROUND_CHAIN}
FROM rounds r JOIN seeds s ON s.chain_id = r.chain_id AND s.idx = r.chain_idx
JOIN seed_chains c ON c.id = r.chain_id WHERE r.game = $1 AND r.phase = ANY($3::text[])
ORDER BY r.id DESC LIMIT $2
"""  # noqa: S608 - composed of constant SQL, no data
_CLIENT_SEEDS = """
SELECT coalesce(array_agg(client_seed ORDER BY id), '{}') FROM bets
WHERE game = $1 AND round_id = $2 AND status = 'accepted' AND client_seed IS NOT NULL
"""
"""The client seeds of the bets accepted in a round, in bet id order."""
_LEGACY_SALT = "UPDATE seed_chains SET salt = terminating_hash WHERE id = $1 AND salt IS NULL"
"""A chain a node from before migration 0015 committed and played (with its terminating hash as the salt) keeps
that salt, as the chains of that time do."""


def _ms(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _chain_view(row: Mapping[str, Any] | asyncpg.Record) -> SeedChain | None:
    """The chain of a round read with :data:`_ROUND_CHAIN`, if the round is its first; None otherwise, and for
    a chain committed before migration 0015 (its salt is its terminating hash, from no client seeds)."""
    if row["chain_idx"] != 1 or (row["salt"] is not None and row["client_seeds"] is None):
        return None
    committed = _ms(row["committed_at"])
    assert committed is not None
    return SeedChain(id=row["chain_id"], terminating_hash=row["terminating_hash"], length=row["length"],
                     committed_at=committed, client_seeds=row["client_seeds"])  # fmt: skip


class RoundStore:
    """Parameterized queries over ``rounds``, ``seed_chains`` and ``seeds``."""

    def __init__(self, pool: asyncpg.Pool, *, chain_length: int) -> None:
        self._pool = pool
        self._chain_length = chain_length

    async def take_lease(self, game: str, holder: str) -> int:
        """:func:`~server.rounds.lease.take_lease` on this store's pool: ``game``'s new fencing token."""
        return await take_lease(self._pool, game, holder)

    async def open_round(self, game: str, betting_ms: int, token: int) -> NewRound:
        """Take the game's next seed and open a round. The seed comes from the first chain committed that is
        not used up; with none left, a new chain is committed first, in this transaction."""

        async def work(conn: Connection) -> NewRound:
            await fence_game(conn, game, token)
            while True:
                chain = await conn.fetchrow(_CURRENT_CHAIN, game) or await self._commit_chain(conn, game)
                index = chain["next_index"]
                seed = await conn.fetchval(_SEED, chain["id"], index)
                if seed is not None:
                    break
                # A chain whose seeds are missing can prove nothing: retire it and take the next.
                await conn.execute("UPDATE seed_chains SET next_index = length + 1 WHERE id = $1", chain["id"])
            salt = chain["salt"]
            if salt is None and index > 1:  # its first round closed betting on a node from before migration 0015
                log.warning("%s: seed chain %d was played without the salt rule; its salt stays its terminating hash",
                            game, chain["id"])  # fmt: skip
                await conn.execute(_LEGACY_SALT, chain["id"])
                salt = chain["terminating_hash"]
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
            first = _chain_view({**chain, "chain_id": chain["id"], "chain_idx": index})
            return NewRound(row["id"], seed, sha256_hex(seed), salt, closes, first)

        return await in_transaction(self._pool, work)

    async def commit_chain(self, game: str) -> SeedChain:
        """Generate a chain of this store's length for ``game`` and commit to it now: its terminating hash is
        stored (print it, publish it) and the game's rounds take it once the chains committed before it are
        used up. ``croupier chain new`` runs this."""

        async def work(conn: Connection) -> SeedChain:
            chain = await self._commit_chain(conn, game)
            committed = _ms(chain["committed_at"])
            assert committed is not None
            return SeedChain(id=chain["id"], terminating_hash=chain["terminating_hash"], length=chain["length"],
                             committed_at=committed)  # fmt: skip

        return await in_transaction(self._pool, work)

    async def _commit_chain(self, conn: Connection, game: str) -> asyncpg.Record:
        seeds = generate_chain(self._chain_length)
        chain = await conn.fetchrow(_INSERT_CHAIN, game, sha256_hex(seeds[0]), len(seeds))
        assert chain is not None
        record: asyncpg.Record = chain
        await conn.copy_records_to_table(
            "seeds", records=[(chain["id"], i + 1, s) for i, s in enumerate(seeds)], columns=["chain_id", "idx", "seed"]
        )
        log.info("%s: committed to seed chain %d of %d rounds, terminating hash %s",
                 game, chain["id"], len(seeds), chain["terminating_hash"])  # fmt: skip
        return record

    async def start_running(self, round_id: int, token: int) -> ClosedBetting:
        """Close betting and mark the round running; returns its start and the salt its draws use.

        Takes the round's betting lock exclusively (:func:`~server.db.roundlock.close_betting`), so it
        waits for the bet batches that hold it shared, and any later batch sees the round closed. In a
        chain's first round it then fixes the chain's salt from the client seeds of the round's bets
        (:func:`~.fair.chain_salt`), all of them committed by then, in the same transaction.
        """

        async def work(conn: Connection) -> ClosedBetting:
            await fence_round(conn, round_id, token)
            await close_betting(conn, round_id)
            started = await conn.fetchval(
                "UPDATE rounds SET phase = 'running', started_at = now() WHERE id = $1 AND phase = 'betting' "
                "RETURNING started_at",
                round_id,
            )
            row = await conn.fetchrow(_CLOSING_CHAIN, round_id)
            assert row is not None
            chain = dict(row)
            if chain["salt"] is None and chain["chain_idx"] == 1 and started is not None:
                # The chain's first round closes betting now: every bet on it is committed, their seeds final.
                seeds: list[str] = await conn.fetchval(_CLIENT_SEEDS, chain["game"], round_id)
                chain.update(salt=chain_salt(chain["terminating_hash"], seeds), client_seeds=seeds)
                await conn.execute("UPDATE seed_chains SET salt = $2, client_seeds = $3 WHERE id = $1",
                                   chain["chain_id"], chain["salt"], seeds)  # fmt: skip
            elif chain["salt"] is None:  # opened, or run, by a node from before migration 0015
                await conn.execute(_LEGACY_SALT, chain["chain_id"])
                chain["salt"] = chain["terminating_hash"]
            return ClosedBetting(_ms(started), chain["salt"], _chain_view(chain))

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
        row = await self._pool.fetchrow(_CURRENT_VIEW, game)
        if row is None:
            return None
        return RoundView(
            game=game,
            round=row["id"],
            seed_hash=row["seed_hash"],
            salt=row["salt"],
            closes_at=_ms(row["closes_at"]),
            phase=row["phase"],
            started_at=_ms(row["started_at"]),
            chain=_chain_view(row),
        )

    async def unfinished(self, game: str) -> list[StoredRound]:
        """Rounds of ``game`` left in betting or running (their driver stopped)."""
        return await self._rounds(game, ("betting", "running"), 1000)

    async def history(self, game: str, limit: int) -> list[StoredRound]:
        """The most recent settled rounds of ``game``, newest first."""
        return await self._rounds(game, ("settled",), limit)

    async def _rounds(self, game: str, phases: tuple[str, ...], limit: int) -> list[StoredRound]:
        rows = await self._pool.fetch(_ROUNDS, game, limit, list(phases))
        return [
            StoredRound(r["id"], r["phase"], r["seed"], r["seed_hash"], r["salt"],
                        None if r["outcome"] is None else orjson.loads(r["outcome"]), _ms(r["started_at"]),
                        _chain_view(r))
            for r in rows
        ]  # fmt: skip
