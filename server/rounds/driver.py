"""The round driver: one game's rounds, played on the node that drives the game.

::

    open round (next seed of the chain) -> publish `round` betting
    -> at closes_at: close betting (waits for bet batches on the round; a chain's first round fixes
       the chain's salt) -> outcome drawn from seed and salt -> handler.start
    -> handler.tick every tick_ms, publishing `tick` -> done
    -> payouts; ledger.settle(all bets + mark round settled, one transaction)
    -> publish `round` settled with the seed (the players' bet_settled / balance events were
       written with the settlement and go out through the outbox relay)

A handler that raises voids its round: every bet is refunded, the seed is revealed, the next round
starts. Time comes from the injected :class:`~.clock.Clock`, so a test plays a round on a clock it
moves. Which node drives is settled by :mod:`.lease`; rounds a previous driver left unfinished are
finished with :meth:`RoundDriver.finish` by :mod:`.recovery`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from functools import partial
from typing import Any

from msgspec.structs import replace

from ..broker import Broker, HistoryPolicy
from ..db.transactions import Connection
from ..ledger import ClosedBet, Ledger
from ..metrics import game as game_metrics
from . import GameRules
from .actions import RunningRound
from .clock import Clock
from .events import RoundView, Stamp, encode_round, encode_tick, game_channel
from .fair import FairRng
from .handler import BetInfo, RoundContext, RoundHandler, RunState
from .play import Settled, begin_running, settle_bets, tick_fields
from .store import RoundStore

log = logging.getLogger(__name__)


class RoundDriver:
    """Plays the rounds of one game while this node drives it, publishing them on ``game:<name>``.

    The engine decides when: :meth:`take_over` once this node holds the game's lock, then
    :meth:`play_round` again and again; :meth:`stand_by` when it no longer drives.
    """

    def __init__(
        self,
        *,
        handler: RoundHandler[Any, Any],
        rules: GameRules,
        store: RoundStore,
        ledger: Ledger,
        broker: Broker,
        clock: Clock,
        history: HistoryPolicy,
        betting_ms: int,
        pause_ms: int,
    ) -> None:
        self.handler = handler
        self.rules = rules
        self.store = store
        self.clock = clock
        self._ledger = ledger
        self._broker = broker
        self._history = history
        self._betting_ms = betting_ms
        self._pause_ms = pause_ms
        self._channel = game_channel(handler.name)
        self._metrics = game_metrics(handler.name)
        self._driving = False
        self.token = 0
        """The lease (fencing) token: every write to a round carries it."""
        self.running: RunningRound | None = None
        """The round running now, which takes actions."""
        self.handing_over = False
        """Set by a drain: finish the round in flight, open no other."""
        self._epoch = ""
        self._published = 0
        """Events published in this epoch: the last one's offset."""

    @property
    def game(self) -> str:
        return self.handler.name

    @property
    def driving(self) -> bool:
        """This node drives the game (it took the lease and has not lost it)."""
        return self._driving

    @driving.setter
    def driving(self, value: bool) -> None:
        self._driving = value
        self._metrics.leases.n = int(value)  # croupier_driver_leases

    async def take_over(self, holder: str) -> None:
        """Drive the game (call while holding its lock): a new lease token, and a new epoch of the
        channel, whose offsets start again from 1."""
        self.token = await self.store.take_lease(self.game, holder)
        self._metrics.takeovers.n += 1
        self.driving = True
        self._epoch, self._published = secrets.token_hex(4), 0
        log.info("driving %s rounds on this node (lease token %d)", self.game, self.token)

    def stand_by(self) -> None:
        """No longer drive the game: a round in flight is left to the next driver."""
        self.driving = False
        self.running = None

    async def play_round(self) -> None:
        """Open a round, take bets until it closes, run it, settle it; then pause (unless handing over)."""
        new = await self.store.open_round(self.game, self._betting_ms, self.token)
        base = RoundView(
            game=self.game,
            round=new.round_id,
            seed_hash=new.seed_hash,
            salt=new.salt,
            closes_at=new.closes_at_ms,
            phase="betting",
            chain=new.chain,
        )
        await self._announce(base)
        await self.clock.sleep(max(0.0, (new.closes_at_ms - self.clock.now_ms()) / 1000))
        closed = await self.store.start_running(new.round_id, self.token)
        # Drawn only now: in a chain's first round the salt was fixed by closing betting.
        base = replace(base, salt=closed.salt, chain=closed.chain)
        rng = FairRng(new.seed, closed.salt, self.game)
        outcome = self.draw(rng, new.round_id)
        await self.finish(base, rng, new.seed, outcome, closed.started_at_ms or self.clock.now_ms())
        if not self.handing_over:
            await self.clock.sleep(self._pause_ms / 1000)

    def draw(self, rng: FairRng, round_id: int) -> dict[str, Any] | None:
        """The round's outcome, or None (the round is voided) when the handler fails to draw it."""
        try:
            return self.handler.outcome(rng)
        except Exception:
            log.exception("%s outcome failed: round %d voided", self.game, round_id)
            return None

    async def finish(
        self, base: RoundView, rng: FairRng, seed: str, outcome: dict[str, Any] | None, started: int
    ) -> None:
        """Run a round whose betting is closed from ``started`` (ms) to its end, settle it (or void it:
        ``outcome`` None, or a handler failure) and announce the result with the seed.

        ``base`` is the round as its ``betting`` event describes it, with the salt fixed by closing betting;
        each later event is ``base`` in another phase."""
        stored = await self.store.open_bets(base.round)
        try:
            bets = [BetInfo(b.bet_id, b.user_id, b.amount, self.handler.load_bet(b.params), b.cashout) for b in stored]
        except Exception:  # stored params the game's bet type no longer reads (its schema changed mid-round)
            log.exception("%s round %d: bets unreadable by the game: voided, bets refunded", self.game, base.round)
            outcome, bets = None, [BetInfo(b.bet_id, b.user_id, b.amount, b.params, b.cashout) for b in stored]
        settled: list[Settled] | None = None
        if outcome is not None:
            try:
                await self._run(base, rng, outcome, bets, started)
            except Exception:
                log.exception("%s handler failed in round %d: voided, bets refunded", self.game, base.round)
                outcome = None
            if self.running is not None:
                self.running.finished = True
                bets = self.running.state.bets
        if outcome is not None:
            try:
                settled = settle_bets(self.handler, rng, outcome, bets, self.rules.max_payout)
            except Exception:
                log.exception("%s handler failed settling round %d: voided, bets refunded", self.game, base.round)
        try:
            await self._settle(base.round, outcome, bets, settled)
        finally:
            self.running = None
        if outcome is None or settled is None:
            announced = replace(base, phase="settled", seed=seed, voided=True)
        else:
            announced = replace(base, phase="settled", seed=seed, outcome=self.handler.public_outcome(outcome))
        await self._announce(announced)

    async def _run(
        self, base: RoundView, rng: FairRng, outcome: dict[str, Any], bets: list[BetInfo[Any]], started: int
    ) -> None:
        handler = self.handler
        ctx = RoundContext(
            base.round, self.clock.now_ms, rng, handler.params, log.getChild(self.game), self.rules.max_payout
        )
        state = RunState(started, outcome, bets)
        info = begin_running(handler, ctx, state)
        self.running = running = RunningRound(base.round, handler, state, ctx)
        await self._announce(replace(base, phase="running", started_at=started, info=info or None))
        due = self.clock.now_ms()
        while True:
            result = handler.tick(ctx, state)
            fields = tick_fields(self.game, result)
            if fields is not None:
                await self._publish("tick", partial(encode_tick, self.game, base.round, fields))
            if result.done:
                running.finished = True
                return
            now = self.clock.now_ms()
            due = next_tick(due, handler.tick_ms, now)
            await self.clock.sleep((due - now) / 1000)

    async def _settle(
        self, round_id: int, outcome: dict[str, Any] | None, bets: list[BetInfo[Any]], settled: list[Settled] | None
    ) -> list[ClosedBet]:
        """Pay every bet as ``settled`` says (None: refund them all, the round is voided) and mark the
        round closed, in one fenced transaction."""
        voided = settled is None
        payouts: list[tuple[int, int]] = []
        results: dict[int, dict[str, Any]] = {}
        cashouts: dict[int, int] = {}
        refunds: list[int] = []
        if settled is None:
            refunds = [bet.bet_id for bet in bets]
        else:
            over = [(bet.bet_id, bet.capped_from) for bet in settled if bet.capped_from is not None]
            if over:  # bets are refused or cashed out before they can pass the cap: this is a game's bug
                log.error("%s round %d: payouts over the cap of %d cut to it: %s",
                          self.game, round_id, self.rules.max_payout, over)  # fmt: skip
            payouts = [(bet.bet_id, bet.payout) for bet in settled]
            results = {bet.bet_id: bet.result for bet in settled if bet.result is not None}
            # The cash-outs the payouts were computed with: one whose own write is still in flight is stored too.
            cashouts = {bet.bet_id: bet.cashout for bet in bets if bet.cashout is not None}
        phase, stored = ("voided", None) if voided else ("settled", outcome)
        token = self.token

        async def mark(conn: Connection) -> None:
            await RoundStore.mark_closed(conn, round_id, phase, stored, token)

        return await self._ledger.settle(payouts, refunds=refunds, results=results, cashouts=cashouts, also=mark)

    async def _announce(self, view: RoundView) -> None:
        self._metrics.phases.of("voided" if view.voided else view.phase).n += 1
        await self._publish("round", partial(encode_round, view))

    async def _publish(self, kind: str, encode: Callable[[Stamp], bytes]) -> None:
        self._published += 1
        stamp = Stamp(self._channel, self._published, self._epoch, self.clock.now_ms())
        try:
            await self._broker.publish(self._channel, encode(stamp), history=self._history)
        except Exception as exc:  # the round goes on; subscribers recover with a snapshot
            log.warning("could not publish %s event of %s: %s", kind, self.game, exc)


def next_tick(due: int, tick_ms: int, now: int) -> int:
    """When the tick after the one due at ``due`` is due: ``tick_ms`` later, on the round's own schedule (the
    time a tick took to publish does not stretch the period), skipping the ticks already missed when the
    loop ran late (never a burst to catch up: the handler reads the clock, so a skipped tick loses nothing)."""
    due += tick_ms
    if due <= now:
        due += ((now - due) // tick_ms + 1) * tick_ms
    return due
