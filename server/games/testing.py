"""A test harness for game designers: play one round of a handler on a fake clock, in a few lines.

No database, no sockets, no event loop: a :class:`GameTable` takes bets, closes betting, steps
the clock tick by tick, applies player actions and settles, through the same steps the engine
plays (:mod:`server.rounds.play`), so what passes here behaves the same on a live node::

    table = GameTable(Crash(), outcome={"crash_point": 250})  # or drawn from a seed and salt
    auto = table.bet(100, {"auto_cashout": 150})
    manual = table.bet(100)
    table.start()
    table.advance(Crash().elapsed_for(200))  # the clock moves in ms, ticking every tick_ms
    table.act(manual, "cashout")
    assert table.settle() == {auto.bet_id: 150, manual.bet_id: 200}

``table.events`` lists what clients would have been sent while the round ran: the ``running``
event's ``info`` and each ``tick``'s fields, each with the time (ms after the round started).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal

from ..rounds.fair import FairRng
from ..rounds.handler import B, BetInfo, InvalidBet, P, RoundContext, RoundHandler, RunState
from ..rounds.play import Settled, begin_running, settle_bets, stake_limit, tick_fields

TEST_SEED = "0" * 64
TEST_SALT = "5a17" * 16


@dataclass(frozen=True, slots=True)
class Pushed:
    """Something clients would have been sent while the round ran: ``kind`` ``running`` (its ``info``)
    or ``tick`` (its fields), ``at`` ms after the round started."""

    kind: Literal["running", "tick"]
    at: int
    fields: dict[str, Any]


class GameTable(Generic[P, B]):
    """One round of ``handler``: bets while betting, then :meth:`start`, :meth:`advance` (or
    :meth:`run`), :meth:`act`, :meth:`settle`.

    The outcome is drawn from ``seed`` and ``salt`` as a live round would draw it, unless ``outcome``
    is given (to test a case: a crash at 2.50x, a roll of 42; then nothing was drawn from the round's
    stream before ``start``, so what ``start`` or ``tick`` draw from ``ctx.rng`` differs from a live
    round's). Bets get ids 1, 2, 3, ... in order. The round's ``exposure_cap`` is not applied.
    ``max_payout`` is the operator's cap per bet, as ``CROUPIER_GAME_PARAMS`` sets it.
    """

    def __init__(
        self,
        handler: RoundHandler[P, B],
        *,
        seed: str = TEST_SEED,
        salt: str = TEST_SALT,
        outcome: Mapping[str, Any] | None = None,
        max_payout: int = 100_000_000,
        round_id: int = 1,
    ) -> None:
        self.handler = handler
        self.rng = FairRng(seed, salt, handler.name)
        self.outcome: dict[str, Any] = dict(outcome) if outcome is not None else handler.outcome(self.rng)
        self.max_payout = max_payout
        self.now = 0
        """The fake clock (ms); the round starts running at 0."""
        self.ctx = RoundContext(round_id, self._now, self.rng, handler.params, logging.getLogger(handler.name),
                                max_payout)  # fmt: skip
        self.state: RunState[B] = RunState(0, self.outcome, [])
        self.events: list[Pushed] = []
        self.phase: Literal["betting", "running", "done", "settled"] = "betting"
        self.settled: dict[int, Settled] = {}
        """Each bet's settlement (payout, and its own draw in per-bet games), after :meth:`settle`."""
        self._next_tick = 0

    def _now(self) -> int:
        return self.now

    @property
    def bets(self) -> list[BetInfo[B]]:
        """The round's bets, with their cash-outs as recorded."""
        return self.state.bets

    def bet(self, amount: int, params: Mapping[str, Any] | None = None, *, user: int = 1) -> BetInfo[B]:
        """Place a bet of ``amount`` with ``params`` (a bet's JSON params), as the engine checks it:
        read into the bet type, ``validate_bet``, the payout cap. Raises :class:`InvalidBet`."""
        if self.phase != "betting":
            raise InvalidBet(f"betting is closed ({self.phase})", "round")
        bet = self.handler.read_bet(params or {}, amount)
        stake_limit(self.handler, bet, amount, self.max_payout)
        placed = BetInfo(len(self.state.bets) + 1, user, amount, bet)
        self.state.bets.append(placed)
        return placed

    def start(self) -> dict[str, Any]:
        """Close betting and start running: the ``running`` event's ``info``, and the first tick."""
        assert self.phase == "betting", f"the round is {self.phase}"
        self.phase = "running"
        info = begin_running(self.handler, self.ctx, self.state)
        self.events.append(Pushed("running", self.now, info))
        self._tick()
        return info

    def advance(self, ms: int) -> list[dict[str, Any]]:
        """Move the clock ``ms`` on, ticking every ``tick_ms`` as the engine does (and no more once
        the round is done); the fields of the ticks pushed meanwhile."""
        assert self.phase in ("running", "done"), "start() the round first"
        pushed = len(self.events)
        until = self.now + ms
        while self.phase == "running" and self._next_tick <= until:
            self.now = self._next_tick
            self._tick()
        self.now = until
        return [event.fields for event in self.events[pushed:]]

    def run(self, limit_ms: int = 3_600_000) -> list[dict[str, Any]]:
        """Start the round if it is still betting, and tick until the game says it is done."""
        if self.phase == "betting":
            self.start()
        pushed = len(self.events)
        while self.phase == "running":
            assert self._next_tick <= limit_ms, f"the round still runs after {limit_ms} ms"
            self.now = self._next_tick
            self._tick()
        return [event.fields for event in self.events[pushed:]]

    def _tick(self) -> None:
        result = self.handler.tick(self.ctx, self.state)
        fields = tick_fields(self.handler.name, result)
        if fields is not None:
            self.events.append(Pushed("tick", self.now, fields))
        if result.done:
            self.phase = "done"
        self._next_tick = self.now + self.handler.tick_ms

    def act(self, bet: BetInfo[B], action: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A player action on ``bet`` now (raises the game's ``ActionRefused``): its ``result``; a
        cash-out is recorded on the bet."""
        assert self.phase == "running", f"the round is {self.phase}"
        index = next(i for i, placed in enumerate(self.state.bets) if placed.bet_id == bet.bet_id)
        outcome = self.handler.action(self.ctx, self.state, self.state.bets[index], action, params or {})
        if outcome.cashout is not None:
            self.state.bets[index] = replace(self.state.bets[index], cashout=outcome.cashout)
        return outcome.result

    def settle(self) -> dict[int, int]:
        """Settle the round (running it to its end first if needed): each bet's payout by id."""
        if self.phase != "done":
            self.run()
        settled = settle_bets(self.handler, self.rng, self.outcome, self.state.bets, self.max_payout)
        self.settled = {bet.bet_id: bet for bet in settled}
        self.phase = "settled"
        return {bet.bet_id: bet.payout for bet in settled}

    def result(self, bet: BetInfo[B]) -> dict[str, Any] | None:
        """The bet's own draw, after :meth:`settle` (per-bet games)."""
        return self.settled[bet.bet_id].result

    def public_outcome(self) -> dict[str, Any]:
        """The outcome as the ``settled`` event publishes it."""
        return self.handler.public_outcome(self.outcome)
