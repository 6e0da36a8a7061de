"""The round engine: one driver per game runs rounds; every node follows them through the broker.

:class:`RoundEngine` is what the node and its sessions use. It puts together one module per concept:

- :mod:`.lease`: which node drives a game (its advisory lock) and the fencing token of its writes;
- :mod:`.driver`: a driven game's round loop (betting -> running -> settled) on an injected clock;
- :mod:`.recovery`: finishing the rounds a previous driver left, before opening a new one;
- :mod:`.actions`: player actions (cash-outs), applied by the driver, forwarded from other nodes;
- :mod:`.follower`: every node's view of every game from its events; snapshots and resume;
- :mod:`.events`: the events of ``game:<name>``, typed, encoded as the wire has them.

The engine publishes events on the broker; the edge delivers them to sockets
(:class:`server.edge.gamefeeds.GameFeeds`). The engine imports nothing from the edge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from protocol import ErrorCode
from protocol import messages as m

from ..broker import Broker, HistoryPolicy
from ..ledger import Ledger
from ..metrics import READS
from . import GameRules
from .actions import ActionRouter
from .clock import Clock, WallClock
from .driver import RoundDriver
from .errors import RoundRefused
from .events import RoundView
from .fair import FairRng
from .follower import RoundFollower
from .handler import InvalidBet, RoundHandler
from .lease import GameLocks, StaleLease
from .play import stake_limit
from .recent import RecentRounds
from .recovery import recover, recover_round
from .schemas import game_info
from .store import RoundStore

log = logging.getLogger(__name__)

STANDBY_RETRY = 1.0
"""Seconds between a standby's attempts to take a game's lock (and a failed driver's retries)."""


class CheckedBet(msgspec.Struct, frozen=True):
    """A bet the round and the game accept: its normalised params, the most it can pay (counted in
    its round's exposure) and the round's exposure cap (None: the game has none). (A struct: one per bet,
    see :class:`~server.ledger.events.UserEvent`.)"""

    params: dict[str, Any]
    exposure: int
    exposure_cap: int | None


@dataclass(frozen=True, slots=True)
class EngineSettings:
    betting_ms: int = 10_000
    pause_ms: int = 3_000
    chain_length: int = 100_000
    history_size: int = 500
    history_ttl: float = 300.0


class RoundEngine:
    """Runs the rounds of every configured game. Open with :meth:`start`, stop with :meth:`close`.

    ``handlers`` are the games by name (with their ``rules``), instances of the game classes: a
    test passes its own, nothing is registered. ``clock`` defaults to the wall clock. ``alone``: no
    other node can take this node's games over, so a drain hands them to nobody (see :meth:`hand_over`);
    by default, when ``broker`` is the in-process one (a node on it holds its database alone).
    """

    def __init__(
        self,
        *,
        dsn: str,
        node_id: str,
        pool: asyncpg.Pool,
        ledger: Ledger,
        broker: Broker,
        handlers: Mapping[str, RoundHandler[Any, Any]],
        rules: Mapping[str, GameRules],
        settings: EngineSettings,
        clock: Clock | None = None,
        alone: bool | None = None,
    ) -> None:
        self._node_id = node_id
        self._alone = _in_process(broker) if alone is None else alone
        self._clock = clock or WallClock()
        self._store = RoundStore(pool, chain_length=settings.chain_length)
        self._locks = GameLocks(dsn)
        history = HistoryPolicy(settings.history_size, settings.history_ttl)
        self._drivers = {
            name: RoundDriver(
                handler=handler,
                rules=rules[name],
                store=self._store,
                ledger=ledger,
                broker=broker,
                clock=self._clock,
                history=history,
                betting_ms=settings.betting_ms,
                pause_ms=settings.pause_ms,
            )
            for name, handler in handlers.items()
        }
        self._recent = RecentRounds()
        self._follower = RoundFollower(broker, self._drivers, history, self._recent)
        self._actions = ActionRouter(broker, node_id, ledger, self._drivers, self._follower.view, void=self._void_here)
        self._voiding = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._info: dict[str, m.GameInfo] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Follow every game's channel and start a driver task per game (it waits for the game's lock).

        Start whatever pushes the game channels to sockets after this (see :mod:`.follower`)."""
        await self._actions.start(self._drivers)
        await self._follower.start()
        for driver in self._drivers.values():
            if await self._locks.hold(driver.game):
                # This node drives the game: its driver task first finishes what a previous driver left.
                await driver.take_over(self._node_id)
            else:  # driven by another node: show its round until the next event arrives
                self._follower.show(driver.game, await self._store.current_view(driver.game))
            self._tasks.append(asyncio.create_task(self._drive(driver), name=f"round-driver-{driver.game}"))

    async def close(self) -> None:
        """Stop driving (a round in flight is left for the next driver to settle or refund)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._actions.close()
        await self._follower.close()
        await self._locks.close()

    async def hand_over(self, budget: float) -> None:
        """Stop driving, for a drain: no new round opens; a round in flight finishes if it can within
        ``budget`` seconds (one still betting past that is left to the next driver, which refunds it);
        then every game lock is released, so a standby node takes the games over within a second.

        A node that is ``alone`` is its own next driver: it waits only for rounds holding bets that can
        finish within ``budget``, then voids the rounds still betting, refunding their bets now rather
        than at its next start. A ``running`` round it could not finish is resumed at its next start,
        from its recorded start, as any next driver resumes one (:mod:`.recovery`)."""
        horizon = self._clock.now_ms() + budget * 1000
        waiting: list[asyncio.Task[None]] = []
        for driver in self._drivers.values():
            driver.handing_over = True
        for driver, task in zip(self._drivers.values(), self._tasks, strict=True):
            view = self._follower.view(driver.game)
            betting_past_budget = view is not None and view.phase == "betting" and (view.closes_at or 0) > horizon
            if driver.driving and not betting_past_budget and (not self._alone or await self._holds_bets(view)):
                waiting.append(task)
            else:
                task.cancel()
        if waiting:
            log.info(
                "handing over: finishing the rounds of %s (at most %.1f s)",
                ", ".join(t.get_name().removeprefix("round-driver-") for t in waiting),
                budget,
            )
            await asyncio.wait(waiting, timeout=budget)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        handed = [driver.game for driver in self._drivers.values() if driver.driving]
        if self._alone:
            await self._void_betting_rounds()
        await self._drop_locks()
        if self._alone:
            log.info("stopped driving %s: no other node takes them over", ", ".join(handed) or "nothing")
        else:
            log.info("handed over %s", ", ".join(handed) or "nothing (this node drove no game)")

    async def _holds_bets(self, view: RoundView | None) -> bool:
        """Whether the round ``view`` shows is in flight with bets (True when that cannot be read)."""
        if view is None or view.phase == "settled":
            return False
        try:
            return bool(await self._store.open_bets(view.round))
        except Exception:
            log.exception("%s: could not read the bets of round %d; waiting for it", view.game, view.round)
            return True

    async def _void_betting_rounds(self) -> None:
        """Alone, at a drain: void the rounds of this node's games still betting, refunding their bets now
        (no other driver would, before this node's next start)."""
        for driver in self._drivers.values():
            if not driver.driving:
                continue
            try:
                for stored in await self._store.unfinished(driver.game):
                    if stored.phase == "betting":
                        log.info("stopping: %s round %d still takes bets: voiding it now", driver.game, stored.round_id)
                        await recover_round(driver, stored)
            except Exception:
                log.exception("%s: could not void the round still betting; the next start will", driver.game)

    async def _drive(self, driver: RoundDriver) -> None:
        """Drive the game whenever this node holds its lock: finish what a previous driver left, then
        play rounds; stand by (and retry) while another node holds it."""
        while not self._stopping and not driver.handing_over:
            try:
                if not await self._locks.hold(driver.game):
                    driver.driving = False
                    await self._clock.sleep(STANDBY_RETRY)
                    continue
                if not driver.driving:
                    await driver.take_over(self._node_id)
                await recover(driver)
                await driver.play_round()
            except asyncio.CancelledError:
                raise
            except StaleLease as exc:
                # Another node took the game over (this one lost its lock without noticing): stop at once.
                log.warning("stopped driving %s: %s", driver.game, exc)
                driver.stand_by()
                await self._drop_locks()
                await self._clock.sleep(STANDBY_RETRY)
            except Exception:
                log.exception("%s round driver failed; retrying", driver.game)
                driver.running = None
                await self._clock.sleep(STANDBY_RETRY)

    async def _drop_locks(self) -> None:
        """Give up every game lock of this node: each driver takes its game over again (a new lease)
        once it holds the lock again."""
        await self._locks.drop()
        for driver in self._drivers.values():
            driver.driving = False

    # ------------------------------------------------------------------ for the back office

    def driven(self) -> tuple[str, ...]:
        """The games this node drives now."""
        return tuple(game for game, driver in self._drivers.items() if driver.driving)

    async def void(self, game: str, round_id: int, reason: str) -> dict[str, Any]:
        """Void ``game``'s round ``round_id``, betting or running (an operator's decision), on the node that
        drives the game (see :mod:`.actions`): every bet refunded, the round announced ``settled`` with
        ``voided`` and its seed. What was refunded, or :class:`RoundRefused` (a round already settling or
        settled, not the current one; ``unavailable`` when the driving node does not answer)."""
        return await self._actions.void(game, round_id, reason)

    async def _void_here(self, game: str, round_id: int, reason: str) -> dict[str, Any]:
        """:meth:`void` on the node driving ``game``: the driver's task is stopped first (nothing of the round
        moves meanwhile), the round voided with the driver's lease token, and the task started again."""
        driver = self._drivers[game]
        async with self._voiding:
            index = list(self._drivers).index(game)
            if not driver.driving or self._stopping or driver.handing_over or index >= len(self._tasks):
                raise RoundRefused(ErrorCode.UNAVAILABLE, f"this node is not driving {game} now; retry")
            _check_voidable(driver, self._follower.view(game), round_id)
            task = self._tasks[index]  # no await since the check: the round is where the check saw it
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            driver.running = None
            try:
                return await _void_round(driver, round_id, reason)
            except StaleLease as exc:
                raise RoundRefused(ErrorCode.UNAVAILABLE, f"{game} changed driver ({exc}); retry") from None
            finally:
                if not self._stopping and not driver.handing_over:
                    self._tasks[index] = asyncio.create_task(self._drive(driver), name=f"round-driver-{game}")

    # ------------------------------------------------------------------ for sessions

    def games(self) -> tuple[str, ...]:
        return tuple(self._drivers)

    def rules(self, game: str) -> GameRules | None:
        driver = self._drivers.get(game)
        return None if driver is None else driver.rules

    def game_info(self, game: str) -> m.GameInfo:
        """The game's params in effect and the JSON Schemas of its params and bets (``welcome``, ``subscribed``)."""
        info = self._info.get(game)
        if info is None:
            info = self._info[game] = game_info(self._drivers[game].handler)
        return info

    def limits(self, game: str) -> m.GameLimits:
        """The game's limits as clients see them (``welcome``, ``subscribed``)."""
        driver = self._drivers[game]
        rules = driver.rules
        return m.GameLimits(
            min_bet=rules.min_bet,
            max_bet=rules.max_bet,
            max_payout=rules.max_payout,
            max_exposure=driver.handler.exposure_cap(),
        )

    def validate_bet(self, game: str, round_id: int, amount: int, params: Mapping[str, Any]) -> CheckedBet:
        """A bet of ``amount`` with ``params`` on ``round_id``, checked against the round and the game's
        rules and caps, or :class:`RoundRefused` / :class:`InvalidBet`."""
        driver = self._drivers[game]
        view = self._follower.view(game)
        if view is None or view.phase != "betting" or self._clock.now_ms() >= (view.closes_at or 0):
            raise RoundRefused(
                ErrorCode.BETTING_CLOSED, f"betting on {game} is closed; wait for the next round", "round"
            )
        if view.round != round_id:
            raise RoundRefused(
                ErrorCode.ROUND_MISMATCH, f"round {round_id} is not taking bets; round {view.round} is", "round"
            )
        handler = driver.handler
        bet = handler.read_bet(params, amount)
        worst, multiplier = stake_limit(handler, bet, amount, driver.rules.max_payout)
        exposure_cap = handler.exposure_cap()
        if exposure_cap is not None and multiplier is None:
            exposure_cap = None  # no worst case to count (crash caps its rounds with force_point instead)
        return CheckedBet(handler.bet_wire(bet), worst if exposure_cap is not None else 0, exposure_cap)

    def handler_params(self, game: str, params: Mapping[str, Any], amount: int) -> dict[str, Any]:
        """``params`` as the game normalises them, or as sent when the game refuses them."""
        handler = self._drivers[game].handler
        try:
            return handler.bet_wire(handler.read_bet(params, amount))
        except InvalidBet:
            return dict(params)

    def snapshot(self, game: str) -> tuple[dict[str, Any] | None, int, str]:
        """The current round as last announced, the channel offset and epoch (see :mod:`.follower`)."""
        return self._follower.snapshot(game)

    async def missed_since(self, game: str, offset: int, epoch: str) -> list[dict[str, Any]] | None:
        """The events of ``game`` after ``offset`` in ``epoch`` (see :meth:`RoundFollower.missed_since`)."""
        return await self._follower.missed_since(game, offset, epoch)

    async def action(
        self, game: str, round_id: int, user_id: int, action: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Apply a player action to the running round, on whichever node drives the game (see :mod:`.actions`)."""
        return await self._actions.apply(game, round_id, user_id, action, params)

    async def history(self, game: str, limit: int) -> list[m.RoundRecord]:
        """The game's last ``limit`` settled rounds, newest first, with their seeds and salts: from the rounds
        this node saw settle (:mod:`.recent`) when it has them, else from PostgreSQL."""
        cached = self._recent.get(game, limit)
        if cached is not None:
            READS["history", "memory"].n += 1
            return cached
        READS["history", "database"].n += 1
        rounds = await self._store.history(game, max(limit, self._recent.size))
        handler = self._drivers[game].handler
        records = [
            m.RoundRecord(
                round=r.round_id,
                outcome=handler.public_outcome(r.outcome or {}),
                seed=r.seed,
                seed_hash=r.seed_hash,
                salt=r.salt,
                chain=r.chain,
            )
            for r in rounds
        ]
        self._recent.fill(game, records)
        return records[:limit]


def _check_voidable(driver: RoundDriver, view: RoundView | None, round_id: int) -> None:
    """Raise :class:`RoundRefused` unless ``round_id`` is the driver's round, betting or running and not
    settling yet (the driver settles a finished round in a transaction a void must not cut short)."""
    game = driver.game
    if view is None or view.round != round_id:
        raise RoundRefused(ErrorCode.ROUND_MISMATCH, f"round {round_id} is not the current round of {game}", "round")
    running = driver.running
    if view.phase == "settled" or (view.phase == "running" and (running is None or running.finished)):
        raise RoundRefused(ErrorCode.BAD_REQUEST, f"round {round_id} of {game} is settled or settling", "round")


async def _void_round(driver: RoundDriver, round_id: int, reason: str) -> dict[str, Any]:
    """Close betting on ``round_id`` and void it with ``driver``'s lease: every bet refunded, the round
    announced ``settled`` with ``voided`` and its seed, as recovery voids a round left betting."""
    stored = next((r for r in await driver.store.unfinished(driver.game) if r.round_id == round_id), None)
    if stored is None:
        raise RoundRefused(ErrorCode.BAD_REQUEST, f"round {round_id} of {driver.game} is settled", "round")
    closed = await driver.store.start_running(round_id, driver.token)
    bets = await driver.store.open_bets(round_id)
    log.warning("%s round %d (%s) voided by the operator, %d bets refunded: %s",
                driver.game, round_id, stored.phase, len(bets), reason)  # fmt: skip
    base = RoundView(game=driver.game, round=round_id, seed_hash=stored.seed_hash, salt=closed.salt,
                     phase="betting", chain=closed.chain)  # fmt: skip
    started = closed.started_at_ms or stored.started_at_ms or driver.clock.now_ms()
    await driver.finish(base, FairRng(stored.seed, closed.salt, driver.game), stored.seed, None, started)
    return {"game": driver.game, "round": round_id, "phase": "voided", "was": stored.phase, "refunded": len(bets),
            "total": sum(bet.amount for bet in bets)}  # fmt: skip


def _in_process(broker: Broker) -> bool:
    """Whether ``broker`` is the in-process one: events reach no other node, and no other node shares the
    database (:class:`~server.db.instance.DatabaseClaim` refuses one)."""
    from ..broker.memory import MemoryBroker

    return isinstance(broker, MemoryBroker)


__all__ = ["CheckedBet", "EngineSettings", "InvalidBet", "RoundEngine", "RoundRefused"]
