"""The round engine: one driver per game runs rounds; every node follows them through the broker.

Driver (on the one node holding the game's PostgreSQL advisory lock)::

    open round (next seed of the chain, outcome drawn now) -> publish `round` betting
    -> at closes_at: mark running (waits for bet batches on the round) -> handler.start
    -> handler.tick every tick_ms, publishing `tick` -> done
    -> payouts; ledger.settle(all bets + mark round settled, one transaction)
    -> publish `round` settled with the seed (the players' bet_settled / balance events were
       written with the settlement and go out through the outbox relay)

Every node (the driver included) subscribes to each game's channel on the broker, keeps a
view of the current round from the events (for bet validation and ``subscribe`` snapshots),
and fans events out to its subscribed sockets, encoded once per subprotocol.

A handler that raises voids its round: every bet is refunded, the seed is revealed, the next
round starts. A driver that stops mid-round (crash, restart) leaves the round unfinished in
PostgreSQL; the next driver voids it if it was still betting, or resumes it from its recorded
start if it was running (see :meth:`RoundEngine._recover_round`), before opening a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import orjson

from protocol import ErrorCode
from protocol import messages as m

from ..broker import Broker, HistoryPolicy
from ..edge.audience import Audience, game_channel
from ..ledger import ClosedBet, Ledger, LedgerError
from . import GameRules
from .fair import FairRng
from .handler import ActionRefused, BetInfo, InvalidBet, RoundContext, RoundHandler, RunState
from .store import RoundStore, StaleLease, StoredRound

log = logging.getLogger(__name__)
_HISTORY_SLACK = 16  # read a few more events than needed: the broker may have some newer than this node's view
_LOCK_CLASS = 0x43524F55  # advisory lock namespace "CROU"; the game name's hash is the second key


ACTION_FORWARD_TIMEOUT = 3.0
"""Seconds a node waits for the driving node to answer a forwarded action."""


def _actions_channel(game: str) -> str:
    return f"actions:{game}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RoundRefused(Exception):
    """A request about a round cannot be served; ``code`` and ``field`` go into the error reply."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True, slots=True)
class CheckedBet:
    """A bet the round and the game accept: its normalised params, the most it can pay (counted in
    its round's exposure) and the round's exposure cap (None: the game has none)."""

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


@dataclass(slots=True)
class _Running:
    round_id: int
    state: RunState
    ctx: RoundContext
    finished: bool = False
    """The last tick said done: the round is being settled and takes no more actions."""
    by_user: dict[int, list[int]] = field(default_factory=dict)
    """user id -> positions of their bets in ``state.bets`` (fixed while running: betting closed),
    so a crowd cashing out at once costs one lookup each, not a scan of every bet."""

    def __post_init__(self) -> None:
        for index, bet in enumerate(self.state.bets):
            self.by_user.setdefault(bet.user_id, []).append(index)


@dataclass(slots=True)
class GameTable:
    """One game on this node: its handler and rules, the current round as the events tell it,
    and (on the driver) the running round's state."""

    handler: RoundHandler
    rules: GameRules
    view: dict[str, Any] | None = None
    offset: int = 0
    epoch: str = ""
    published: int = 0
    """The driver's own count of events it published on this game's channel (their offsets)."""
    token: int = 0
    """The driver's lease (fencing) token: every write to a round carries it."""
    running: _Running | None = None
    driving: bool = False

    @property
    def name(self) -> str:
        return self.handler.name


class RoundEngine:
    """Runs the rounds of every configured game. Open with :meth:`start`, stop with :meth:`close`."""

    def __init__(
        self,
        *,
        dsn: str,
        node_id: str,
        pool: asyncpg.Pool,
        ledger: Ledger,
        broker: Broker,
        audience: Audience,
        handlers: Mapping[str, RoundHandler],
        rules: Mapping[str, GameRules],
        settings: EngineSettings,
    ) -> None:
        self._dsn = dsn
        self._node_id = node_id
        self._ledger = ledger
        self._broker = broker
        self._audience = audience
        self._settings = settings
        self._store = RoundStore(pool, chain_length=settings.chain_length)
        self._history = HistoryPolicy(settings.history_size, settings.history_ttl)
        self._tables = {name: GameTable(handler, rules[name]) for name, handler in handlers.items()}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Any] = []
        self._lock_conn: asyncpg.Connection | None = None
        self._lock_guard = asyncio.Lock()
        self._held: set[str] = set()
        self._stopping = False
        self._handing_over = False
        self._inbox = f"node:{node_id}:{secrets.token_hex(4)}"
        """This engine's own channel: answers to the actions it forwarded arrive here."""
        self._awaiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._answering: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Follow every game's channel and start a driver task per game (it waits for the game's lock)."""
        self._subscriptions.append(await self._broker.subscribe(self._inbox, self._on_action_reply))
        for table in self._tables.values():
            self._subscriptions.append(await self._broker.subscribe(_actions_channel(table.name),
                                                                    self._on_action_request))  # fmt: skip
            self._subscriptions.append(await self._broker.subscribe(game_channel(table.name), self._on_event))
            if await self._hold_lock(table.name):
                # This node drives the game: its driver task first finishes what a previous driver left.
                await self._become_driver(table)
            elif table.view is None:  # driven by another node: show its round until the next event arrives
                table.view = await self._store.current_view(table.name)
            self._tasks.append(asyncio.create_task(self._drive(table), name=f"round-driver-{table.name}"))

    async def close(self) -> None:
        """Stop driving (a round in flight is left for the next driver to settle or refund)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for subscription in self._subscriptions:
            await subscription.close()
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close()

    # ------------------------------------------------------------------ queries from sessions

    def games(self) -> tuple[str, ...]:
        return tuple(self._tables)

    def rules(self, game: str) -> GameRules | None:
        table = self._tables.get(game)
        return None if table is None else table.rules

    def limits(self, game: str) -> m.GameLimits:
        """The game's limits as clients see them (``welcome``, ``subscribed``)."""
        table = self._tables[game]
        rules = table.rules
        return m.GameLimits(min_bet=rules.min_bet, max_bet=rules.max_bet, max_payout=rules.max_payout,
                            max_exposure=table.handler.exposure_cap())  # fmt: skip

    def validate_bet(self, game: str, round_id: int, amount: int, params: Mapping[str, Any]) -> CheckedBet:
        """A bet of ``amount`` with ``params`` on ``round_id``, checked against the round and the game's
        rules and caps, or :class:`RoundRefused` / :class:`InvalidBet`."""
        table = self._tables[game]
        view = table.view
        if view is None or view["phase"] != "betting" or now_ms() >= view["closes_at"]:
            raise RoundRefused(ErrorCode.BETTING_CLOSED, f"betting on {game} is closed; wait for the next round",
                               "round")  # fmt: skip
        if view["round"] != round_id:
            raise RoundRefused(ErrorCode.ROUND_MISMATCH,
                               f"round {round_id} is not taking bets; round {view['round']} is", "round")  # fmt: skip
        handler = table.handler
        normalised = handler.validate_bet(params)
        cap = table.rules.max_payout
        multiplier = handler.max_multiplier(normalised)
        worst = amount * (multiplier if multiplier is not None else 101) // 100
        if worst > cap:
            could = "could pay" if multiplier is not None else "would pay at 1.01x"
            raise InvalidBet(f"this bet {could} {worst}; the most one bet may pay on {game} is {cap}", "amount")
        exposure_cap = handler.exposure_cap()
        if exposure_cap is not None and multiplier is None:
            exposure_cap = None  # no worst case to count (crash caps its rounds with force_point instead)
        return CheckedBet(normalised, worst if exposure_cap is not None else 0, exposure_cap)

    def handler_params(self, game: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` as the game normalises them, or as sent when the game refuses them."""
        try:
            return self._tables[game].handler.validate_bet(params)
        except InvalidBet:
            return dict(params)

    def snapshot(self, game: str) -> tuple[dict[str, Any] | None, int, str]:
        """The current round as last announced, the channel offset and epoch."""
        table = self._tables[game]
        return (None if table.view is None else dict(table.view)), table.offset, table.epoch

    async def missed_since(self, game: str, offset: int, epoch: str) -> list[dict[str, Any]] | None:
        """The events of ``game`` after ``offset`` in ``epoch``, oldest first, up to this node's current
        offset when it returns (take the snapshot right after it, with no await in between).

        None when the channel's history (kept by the broker, shared by every node) no longer holds all
        of them (another epoch, too old, or unreadable): then the client needs a snapshot."""
        table = self._tables[game]
        if epoch != table.epoch or offset > table.offset:
            return None
        if offset == table.offset:
            return []
        if table.offset - offset > self._history.size:
            return None
        try:
            kept = await self._broker.history(game_channel(game), table.offset - offset + _HISTORY_SLACK)
        except ConnectionError as exc:
            log.warning("history of %s unavailable: %s", game, exc)
            return None
        # No await from here on: the caller takes its snapshot at exactly this offset.
        upto = table.offset
        if epoch != table.epoch:
            return None
        missed: list[dict[str, Any]] = []
        for payload in kept:
            event = orjson.loads(payload)
            if event.get("epoch") == epoch and offset < event.get("offset", 0) <= upto:
                missed.append(event)
        if [event["offset"] for event in missed] != list(range(offset + 1, upto + 1)):
            return None
        return missed

    async def action(self, game: str, round_id: int, user_id: int, action: str,
                     params: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
        """Apply a player action to the running round: here when this node drives the game, else
        forwarded through the broker to the node that does (see :meth:`_forward`)."""
        if self._tables[game].driving:
            return await self._act(game, round_id, user_id, action, params)
        return await self._forward(game, round_id, user_id, action, dict(params))

    async def _forward(self, game: str, round_id: int, user_id: int, action: str,
                       params: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        """Ask the driving node to apply an action, and wait for its answer (``unavailable`` if none comes)."""
        request_id = secrets.token_hex(8)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._awaiting[request_id] = answer
        request = {"rid": request_id, "reply_to": self._inbox, "game": game, "round": round_id, "user": user_id,
                   "action": action, "params": params}  # fmt: skip
        try:
            await self._broker.publish(_actions_channel(game), orjson.dumps(request))
            async with asyncio.timeout(ACTION_FORWARD_TIMEOUT):
                reply = await answer
        except TimeoutError:
            raise RoundRefused(ErrorCode.UNAVAILABLE, f"the node driving {game} did not answer; retry") from None
        finally:
            self._awaiting.pop(request_id, None)
        if "error" in reply:
            error = reply["error"]
            raise RoundRefused(ErrorCode(error["code"]), error["message"], error.get("field"))
        result: dict[str, Any] = reply["result"]
        return result

    def _on_action_request(self, channel: str, payload: bytes) -> None:
        """On the driving node: apply a forwarded action (in a task of its own: the broker's reader
        must not wait for the database) and answer the node that forwarded it."""
        request = orjson.loads(payload)
        table = self._tables.get(request.get("game", ""))
        if table is None or not table.driving:
            return  # another node drives it (or will, and the asker times out and retries)
        task = asyncio.create_task(self._answer(table, request), name=f"forwarded-action-{table.name}")
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, table: GameTable, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"rid": request["rid"]}
        try:
            reply["result"] = await self._act(table.name, request["round"], request["user"], request["action"],
                                              request["params"])  # fmt: skip
        except RoundRefused as exc:
            reply["error"] = {"code": exc.code.value, "message": str(exc), "field": exc.field}
        except LedgerError as exc:
            reply["error"] = {"code": exc.code.value, "message": str(exc), "field": None}
        except Exception as exc:  # the asker must get an answer, not a timeout
            log.warning("forwarded %s action failed: %s", table.name, exc)
            reply["error"] = {"code": ErrorCode.UNAVAILABLE.value, "message": "could not apply the action; retry",
                              "field": None}  # fmt: skip
        await self._broker.publish(request["reply_to"], orjson.dumps(reply))

    def _on_action_reply(self, channel: str, payload: bytes) -> None:
        reply = orjson.loads(payload)
        answer = self._awaiting.get(reply.get("rid", ""))
        if answer is not None and not answer.done():
            answer.set_result(reply)

    async def _act(self, game: str, round_id: int, user_id: int, action: str,
                   params: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
        """Apply a player action to the running round, on the node driving the game."""
        table = self._tables[game]
        running = table.running
        if running is None or running.round_id != round_id:
            view = table.view
            if view is None or view["round"] != round_id:
                raise RoundRefused(ErrorCode.ROUND_MISMATCH, f"round {round_id} is not the current round", "round")
            raise RoundRefused(ErrorCode.BAD_REQUEST, f"round {round_id} is {view['phase']}, not running", "round")
        state = running.state
        mine = [(i, state.bets[i]) for i in running.by_user.get(user_id, ())]
        if not mine:
            raise RoundRefused(ErrorCode.BAD_REQUEST, f"you have no bet in round {round_id}", "round")
        named = params.get("bet")
        if named is not None:
            mine = [(i, bet) for i, bet in mine if bet.bet_id == named]
            if not mine:
                raise RoundRefused(ErrorCode.BAD_REQUEST, f"bet {named!r} is not one of yours in round {round_id}",
                                   "params.bet")  # fmt: skip
        if running.finished:  # over, settling now: let the game say why it is too late, and change nothing
            try:
                table.handler.action(running.ctx, state, mine[0][1], action, params)
            except ActionRefused as exc:
                raise RoundRefused(ErrorCode.BAD_REQUEST, str(exc), "action") from None
            raise RoundRefused(ErrorCode.BAD_REQUEST, f"too late: round {round_id} is over", "action")
        results: list[dict[str, Any]] = []
        recorded: list[tuple[int, BetInfo]] = []
        refusals: list[ActionRefused] = []
        for index, bet in mine:  # the action applies to each of the user's bets it can (one refusal skips one bet)
            try:
                outcome = table.handler.action(running.ctx, state, bet, action, params)
            except ActionRefused as exc:
                refusals.append(exc)
                continue
            if outcome.cashout is not None:
                # Into the state at once (no await in between): a settlement from here on pays it.
                state.bets[index] = replace(bet, cashout=outcome.cashout)
                recorded.append((index, bet))
            results.append({"bet": bet.bet_id, **outcome.result})
        if not results:
            raise RoundRefused(ErrorCode.BAD_REQUEST, str(refusals[0]), "action")
        for multiplier in {state.bets[i].cashout for i, _ in recorded}:
            ids = [state.bets[i].bet_id for i, _ in recorded if state.bets[i].cashout == multiplier]
            try:
                assert multiplier is not None
                await self._ledger.record_cashout(ids, multiplier)
            except LedgerError:
                for index, bet in recorded:
                    state.bets[index] = bet
                raise
        if len(mine) == 1:
            return results[0]
        return {"bets": results}

    async def history(self, game: str, limit: int) -> list[m.RoundRecord]:
        rounds = await self._store.history(game, limit)
        handler = self._tables[game].handler
        return [m.RoundRecord(round=r.round_id, outcome=handler.public_outcome(r.outcome or {}), seed=r.seed,
                              seed_hash=r.seed_hash) for r in rounds]  # fmt: skip

    # ------------------------------------------------------------------ events

    def _on_event(self, channel: str, payload: bytes) -> None:
        game = channel.removeprefix("game:")
        table = self._tables.get(game)
        if table is None:
            return
        event = orjson.loads(payload)
        table.offset, table.epoch = event["offset"], event["epoch"]
        kind = event["t"]
        if kind == "round":
            table.view = {k: v for k, v in event.items() if k not in ("t", "ch", "offset", "epoch", "ts")}
        elif kind == "tick" and table.view is not None and table.view.get("round") == event.get("round"):
            table.view["multiplier"] = event.get("multiplier")
        self._audience.push_json(channel, payload, droppable=kind == "tick")

    async def _publish(self, table: GameTable, event: dict[str, Any]) -> None:
        table.published += 1
        event = {**event, "ch": game_channel(table.name), "offset": table.published, "epoch": table.epoch,
                 "ts": now_ms()}  # fmt: skip
        try:
            await self._broker.publish(game_channel(table.name), orjson.dumps(event), history=self._history)
        except Exception as exc:  # the round goes on; subscribers recover with a snapshot
            log.warning("could not publish %s event of %s: %s", event["t"], table.name, exc)

    # ------------------------------------------------------------------ driving

    async def hand_over(self, budget: float) -> None:
        """Stop driving, for a drain: no new round opens; a round in flight finishes if it can within
        ``budget`` seconds (one still betting past that is left to the next driver, which refunds it);
        then every game lock is released, so a standby node takes the games over within a second."""
        self._handing_over = True
        waiting: list[asyncio.Task[None]] = []
        horizon = now_ms() + budget * 1000
        for table, task in zip(self._tables.values(), self._tasks, strict=True):
            view = table.view
            if table.driving and not (view is not None and view["phase"] == "betting" and view["closes_at"] > horizon):
                waiting.append(task)
            else:
                task.cancel()
        if waiting:
            log.info("handing over: finishing the rounds of %s (at most %.1f s)",
                     ", ".join(t.get_name().removeprefix("round-driver-") for t in waiting), budget)  # fmt: skip
            await asyncio.wait(waiting, timeout=budget)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        handed = [table.name for table in self._tables.values() if table.driving]
        await self._drop_locks()
        log.info("handed over %s", ", ".join(handed) or "nothing (this node drove no game)")

    async def _drive(self, table: GameTable) -> None:
        while not self._stopping and not self._handing_over:
            try:
                if not await self._hold_lock(table.name):
                    table.driving = False
                    await asyncio.sleep(1.0)
                    continue
                if not table.driving:
                    await self._become_driver(table)
                await self._recover(table)
                await self._play_round(table)
            except asyncio.CancelledError:
                raise
            except StaleLease as exc:
                # Another node took the game over (this one lost its lock without noticing): stop at once.
                log.warning("stopped driving %s: %s", table.name, exc)
                table.driving, table.running = False, None
                await self._drop_locks()
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("%s round driver failed; retrying", table.name)
                table.running = None
                await asyncio.sleep(1.0)

    async def _become_driver(self, table: GameTable) -> None:
        table.token = await self._store.take_lease(table.name, self._node_id)
        table.driving = True
        table.epoch, table.published = secrets.token_hex(4), 0
        log.info("driving %s rounds on this node (lease token %d)", table.name, table.token)

    async def _drop_locks(self) -> None:
        """Give up every game lock of this node (they are re-taken, one by one, if still free)."""
        async with self._lock_guard:
            if self._lock_conn is not None:
                self._lock_conn.terminate()
            self._lock_conn = None
            self._held.clear()
        for table in self._tables.values():
            table.driving = False

    async def _hold_lock(self, game: str) -> bool:
        """True while this node holds ``game``'s advisory lock (taking it when free).

        The locks live on one dedicated connection: if it drops, PostgreSQL releases them and
        another node may take over, so every game this node drove starts over as a standby.
        """
        async with self._lock_guard:
            try:
                if self._lock_conn is None or self._lock_conn.is_closed():
                    self._held.clear()
                    self._lock_conn = await asyncpg.connect(self._dsn)
                if game in self._held:
                    await self._lock_conn.fetchval("SELECT 1")
                    return True
                if await self._lock_conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _LOCK_CLASS, game):
                    self._held.add(game)
                    return True
                return False
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("round lock for %s unavailable: %s", game, exc)
                if self._lock_conn is not None:
                    self._lock_conn.terminate()
                self._lock_conn = None
                self._held.clear()
                return False

    def _context(self, round_id: int, rng: FairRng, table: GameTable) -> RoundContext:
        handler = table.handler
        return RoundContext(round_id, now_ms, rng, handler.params, log.getChild(handler.name), table.rules.max_payout)

    async def _play_round(self, table: GameTable) -> None:
        new = await self._store.open_round(table.name, self._settings.betting_ms, table.token)
        rng = FairRng(new.seed, new.salt, table.name)
        base = {"t": "round", "game": table.name, "round": new.round_id, "seed_hash": new.seed_hash,
                "salt": new.salt, "closes_at": new.closes_at_ms}  # fmt: skip
        outcome = self._draw(table, rng, new.round_id)
        await self._publish(table, {**base, "phase": "betting"})
        await asyncio.sleep(max(0.0, (new.closes_at_ms - now_ms()) / 1000))
        started = await self._store.start_running(new.round_id, table.token) or now_ms()
        await self._finish(table, new.round_id, rng, base, new.seed, outcome, started)
        if not self._handing_over:
            await asyncio.sleep(self._settings.pause_ms / 1000)

    def _draw(self, table: GameTable, rng: FairRng, round_id: int) -> dict[str, Any] | None:
        """The round's outcome, or None (the round is voided) when the handler fails to draw it."""
        try:
            return table.handler.outcome(rng)
        except Exception:
            log.exception("%s outcome failed: round %d voided", table.name, round_id)
            return None

    async def _finish(self, table: GameTable, round_id: int, rng: FairRng, base: dict[str, Any], seed: str,
                      outcome: dict[str, Any] | None, started: int) -> None:  # fmt: skip
        """Run a round whose betting is closed from ``started`` (ms) to its end, settle it (or void it:
        ``outcome`` None, or a handler failure) and announce the result with the seed."""
        bets = await self._store.open_bets(round_id)
        voided = outcome is None
        if outcome is not None:
            try:
                await self._run(table, round_id, rng, outcome, bets, started, base)
            except Exception:
                log.exception("%s handler failed in round %d: voided, bets refunded", table.name, round_id)
                voided = True
            if table.running is not None:
                table.running.finished = True
                bets = table.running.state.bets
        try:
            await self._close_round(table, round_id, outcome or {}, bets, voided=voided)
        finally:
            table.running = None
        settled = {**base, "phase": "settled", "seed": seed}
        if voided or outcome is None:
            settled["voided"] = True
        else:
            settled["outcome"] = table.handler.public_outcome(outcome)
        await self._publish(table, settled)

    async def _run(self, table: GameTable, round_id: int, rng: FairRng, outcome: dict[str, Any],
                   bets: list[BetInfo], started: int, base: dict[str, Any]) -> None:  # fmt: skip
        handler = table.handler
        ctx = self._context(round_id, rng, table)
        state = RunState(started, outcome, bets)
        outcome.update(handler.start(ctx, state))
        table.running = _Running(round_id, state, ctx)
        await self._publish(table, {**base, "phase": "running", "started_at": started})
        while True:
            result = handler.tick(ctx, state)
            if result.event is not None:
                await self._publish(table, {"t": "tick", "game": table.name, "round": round_id, **result.event})
            if result.done:
                table.running.finished = True
                return
            await asyncio.sleep(handler.tick_ms / 1000)

    async def _close_round(self, table: GameTable, round_id: int, outcome: dict[str, Any], bets: list[BetInfo],
                           *, voided: bool) -> list[ClosedBet]:  # fmt: skip
        cap = table.rules.max_payout
        if voided:
            payouts: list[tuple[int, int]] = []
            refunds = [bet.bet_id for bet in bets]
        else:
            payouts = [(bet.bet_id, table.handler.payout(bet, outcome)) for bet in bets]
            refunds = []
            over = [(bet, paid) for bet, paid in payouts if paid > cap]
            if over:  # bets are refused or cashed out before they can pass the cap: this is a game's bug
                log.error("%s round %d: payouts over the cap of %d cut to it: %s", table.name, round_id, cap, over)
                payouts = [(bet, min(paid, cap)) for bet, paid in payouts]
        phase, stored = ("voided", None) if voided else ("settled", outcome)
        token = table.token

        async def mark(conn: Any) -> None:
            await RoundStore.mark_closed(conn, round_id, phase, stored, token)

        return await self._ledger.settle(payouts, refunds=refunds, also=mark)

    async def _recover(self, table: GameTable) -> None:
        """Settle or refund rounds a previous driver left unfinished, revealing their seeds."""
        for stored in await self._store.unfinished(table.name):
            await self._recover_round(table, stored)

    async def _recover_round(self, table: GameTable, stored: StoredRound) -> None:
        """Finish a round a previous driver left unfinished (it stopped, or lost its lease).

        Betting is closed first, under the lock every bet batch holds shared (see
        :meth:`RoundStore.start_running`): a bet another node commits now either committed before
        (and is read with the others) or finds the round closed; none is left behind in a round that
        nothing settles again. A round still betting is voided: every bet refunded. A running round
        goes on from its recorded start, as if its driver had never stopped: the game's clock is the
        wall clock since ``started_at``, so a crash curve is where it would be now; auto cash-outs it
        passed are paid, recorded cash-outs are paid, and the rest is settled by the game's rule
        (crash: a bet still in when the curve reaches the crash point loses).
        """
        closed_at = await self._store.start_running(stored.round_id, table.token)
        rng = FairRng(stored.seed, stored.salt, table.name)
        base = {"t": "round", "game": table.name, "round": stored.round_id, "seed_hash": stored.seed_hash,
                "salt": stored.salt}  # fmt: skip
        if stored.phase == "betting":
            outcome = None
            started = closed_at or now_ms()
        else:
            outcome = self._draw(table, rng, stored.round_id)
            started = stored.started_at_ms or closed_at or now_ms()
        log.info("%s round %d left %s by its driver: %s", table.name, stored.round_id, stored.phase,
                 "voiding it" if outcome is None else "resuming it from its start")  # fmt: skip
        await self._finish(table, stored.round_id, rng, base, stored.seed, outcome, started)


__all__ = ["CheckedBet", "EngineSettings", "GameTable", "InvalidBet", "RoundEngine", "RoundRefused"]
