"""Deterministic round engine tests: a real engine on a clock the test moves, the in-process broker,
and the suite's PostgreSQL (the round store and the ledger are real).

How a test plays a round (see :class:`Table`): rounds are opened with ``betting_ms=0``, so betting
closes at once in PostgreSQL's time and the driver waits for the test's clock to reach ``closes_at``;
the round then starts (``started_at``, PostgreSQL's time) no earlier than the clock stands, so its
first tick sees no time elapsed. From there the test sets the clock to ``started_at`` plus the
elapsed time it wants: ticks and cash-outs happen at exactly that point of the curve. After a round
the driver pauses until the test moves the clock on (:meth:`Table.next_round`).

Every game is a handler instance passed to the engine, named for its test alone
(:func:`fixed_crash`): nothing is registered, and no other test's rounds meet it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest

from server.broker.memory import MemoryBroker
from server.games.crash import Crash
from server.ledger import BetRequest, Ledger
from server.rounds import GameRules
from server.rounds.engine import EngineSettings, RoundEngine
from server.rounds.events import game_channel
from server.rounds.fair import FairRng
from server.rounds.handler import RoundHandler
from tests.ledger.conftest import next_user_id, sign_up
from tests.rounds.clock import ManualClock

WAIT = 5.0
"""Seconds a test waits for an event before failing (they come within milliseconds)."""
PAUSE_MS = 60_000
"""The pause between rounds: the next round opens when the test moves the clock past it."""


def fixed_crash(crash_point: int, **params: Any) -> Crash:
    """A crash game of this test's own whose every round crashes at ``crash_point``, on a fast curve
    (``growth_per_ms`` 0.001: 1.64x after 500 ms, 2.71x after 1 s)."""

    class FixedCrash(Crash):
        name = f"crash-{secrets.token_hex(4)}"

        def outcome(self, rng: FairRng) -> dict[str, Any]:
            return {"crash_point": crash_point}

    return FixedCrash({"growth_per_ms": 0.001, **params})


class EventLog:
    """Every event published on one game channel, decoded, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.payloads: list[bytes] = []
        self._read = 0
        self._arrived = asyncio.Event()

    def record(self, channel: str, payload: bytes) -> None:
        self.payloads.append(payload)
        self.events.append(orjson.loads(payload))
        self._arrived.set()

    async def next(self, predicate: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        """The first event after the last one returned that matches ``predicate`` (waiting for it)."""
        async with asyncio.timeout(WAIT):
            while True:
                while self._read < len(self.events):
                    event = self.events[self._read]
                    self._read += 1
                    if predicate(event):
                        return event
                self._arrived.clear()
                await self._arrived.wait()

    async def round(self, phase: str) -> dict[str, Any]:
        return await self.next(lambda e: e["t"] == "round" and e["phase"] == phase)

    async def tick(self) -> dict[str, Any]:
        return await self.next(lambda e: e["t"] == "tick")


@dataclass
class Table:
    """One game played by an engine on a clock the test moves, its events recorded."""

    game: RoundHandler
    clock: ManualClock
    broker: MemoryBroker
    ledger: Ledger
    pool: asyncpg.Pool
    events: EventLog
    dsn: str
    engines: list[RoundEngine] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.game.name

    async def engine(self, node_id: str = "node-a", clock: ManualClock | None = None) -> RoundEngine:
        """Start an engine (a node) for the game on the table's broker and database."""
        engine = RoundEngine(
            dsn=self.dsn,
            node_id=node_id,
            pool=self.pool,
            ledger=self.ledger,
            broker=self.broker,
            handlers={self.name: self.game},
            rules={self.name: GameRules(self.name, min_bet=1, max_bet=1_000_000, max_payout=100_000_000)},
            settings=EngineSettings(betting_ms=0, pause_ms=PAUSE_MS, chain_length=10),
            clock=clock or self.clock,
        )
        await engine.start()
        self.engines.append(engine)
        return engine

    async def player(self, balance: int = 1000) -> int:
        user_id = next_user_id()
        await sign_up(self.ledger, user_id)
        await self.ledger.deposit(user_id, balance, ref=f"rounds-{user_id}")
        return user_id

    async def bet(self, user_id: int, round_id: int, amount: int = 100, **params: Any) -> int:
        placed = await self.ledger.place_bet(BetRequest(user_id, self.name, round_id, amount, params))
        return placed.bet_id

    async def close_betting(self, betting: dict[str, Any]) -> dict[str, Any]:
        """Move the clock to the round's ``closes_at``: the round starts; its ``running`` event."""
        self.clock.set(max(self.clock.now_ms(), betting["closes_at"]))
        return await self.events.round("running")

    async def at(self, running: dict[str, Any], elapsed_ms: int) -> None:
        """Once the driver waits for its next tick, make it ``elapsed_ms`` after the round's start."""
        await self.clock.until_asleep()
        self.clock.set(running["started_at"] + elapsed_ms)

    async def next_round(self) -> dict[str, Any]:
        """Once the driver pauses after a round, end the pause: the next round's ``betting`` event."""
        await self.clock.until_asleep()
        self.clock.advance(PAUSE_MS)
        return await self.events.round("betting")

    async def balance(self, user_id: int) -> int:
        return (await self.ledger.balance(user_id)).balance

    async def bets(self, round_id: int) -> dict[int, tuple[str, int | None, int | None]]:
        """bet id -> (status, cashout, payout) of every bet of the round."""
        rows = await self.pool.fetch("SELECT id, status, cashout, payout FROM bets WHERE round_id = $1", round_id)
        return {r["id"]: (r["status"], r["cashout"], r["payout"]) for r in rows}

    async def phase(self, round_id: int) -> str:
        phase: str = await self.pool.fetchval("SELECT phase FROM rounds WHERE id = $1", round_id)
        return phase


OpenTable = Callable[[RoundHandler], contextlib.AbstractAsyncContextManager[Table]]


@pytest.fixture
def open_table(database_url: str, pool: asyncpg.Pool, ledger: Ledger) -> OpenTable:
    """A table for ``game`` (no engine yet: ``await table.engine()`` starts one); every engine it
    started is closed after."""

    @contextlib.asynccontextmanager
    async def open_table(game: RoundHandler) -> AsyncIterator[Table]:
        broker = MemoryBroker()
        # A second behind PostgreSQL's clock: every round opened from now on closes after it, so its
        # driver waits for the test to move the clock.
        clock = ManualClock(await pool.fetchval("SELECT (extract(epoch FROM now()) * 1000)::bigint") - 1000)
        table = Table(game, clock, broker, ledger, pool, EventLog(), database_url)
        subscription = await broker.subscribe(game_channel(game.name), table.events.record)
        try:
            yield table
        finally:
            for engine in table.engines:
                await engine.close()
            await subscription.close()
            await broker.close()

    return open_table
