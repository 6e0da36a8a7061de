"""The plug-in interface game designers implement: :class:`RoundHandler`.

Shaped like Nakama's match handler. A round goes ``betting`` -> ``running`` -> ``settled``;
the engine owns time, persistence, money and sockets, and calls the handler at each step:

- :meth:`RoundHandler.validate_bet` while betting: check and normalise a bet's ``params``;
- :meth:`RoundHandler.outcome` when the round is created: draw the outcome from the fair RNG
  (a pure function of the round's seed and public inputs, fixed before anyone bets);
- :meth:`RoundHandler.start` when betting closes, then :meth:`RoundHandler.tick` every
  ``tick_ms`` until it says the round is done; :meth:`RoundHandler.action` for player actions
  during ``running`` (e.g. a crash cash-out);
- :meth:`RoundHandler.payout` for each bet at settlement.

A handler never touches the database or sockets: it gets a :class:`RoundContext` (clock,
fair RNG, params, logger) and returns values; the engine does the I/O. A handler that raises
voids its round: every bet is refunded and the next round starts.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .fair import FairRng


class InvalidBet(Exception):
    """A bet's params are not acceptable to the game; ``field`` names the offending param."""

    def __init__(self, message: str, field: str = "params") -> None:
        super().__init__(message)
        self.field = field


class ActionRefused(Exception):
    """A player action is not possible now (e.g. cash-out after the crash, or twice)."""


@dataclass(frozen=True, slots=True)
class RoundContext:
    """What a handler may use: the clock (ms), the round's fair RNG, the game's params, a logger."""

    round_id: int
    now_ms: Callable[[], int]
    rng: FairRng
    params: Mapping[str, Any]
    log: logging.Logger
    max_payout: int = 100_000_000
    """The most one bet may pay on this game (the operator's cap): a game whose multiplier is not
    bounded in advance (crash) must end a bet's climb where it reaches this."""


@dataclass(frozen=True, slots=True)
class BetInfo:
    """A bet as the handler sees it."""

    bet_id: int
    user_id: int
    amount: int
    params: Mapping[str, Any]
    cashout: int | None = None
    """A recorded cash-out multiplier (hundredths), for games that have one."""


@dataclass(slots=True)
class TickResult:
    """What one tick produced: game fields for a ``tick`` push (None: no push), and whether the round is over."""

    event: dict[str, Any] | None = None
    done: bool = False


@dataclass(slots=True)
class ActionResult:
    """The ``result`` map of ``action_ok``, and a cash-out multiplier to record (if any)."""

    result: dict[str, Any]
    cashout: int | None = None


@dataclass(slots=True)
class RunState:
    """Mutable state of a running round, owned by the handler; the engine keeps it between calls."""

    started_ms: int
    outcome: Mapping[str, Any]
    bets: list[BetInfo]
    data: dict[str, Any] = field(default_factory=dict)


class RoundHandler(ABC):
    """Base class of a game. Subclass, set ``name``, implement the abstract methods, register it.

    ``default_params`` holds every tunable (house edge, timings, limits); the deployment may
    override them. ``tick_ms`` is how often :meth:`tick` runs during ``running``.
    """

    name: ClassVar[str]
    default_params: ClassVar[Mapping[str, Any]] = {}
    tick_ms: ClassVar[int] = 100

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        unknown = set(params or {}) - set(self.default_params)
        if unknown:
            raise ValueError(f"{self.name}: unknown params {sorted(unknown)}")
        self.params: dict[str, Any] = {**self.default_params, **(params or {})}

    @abstractmethod
    def validate_bet(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalised params of a valid bet, or raise :class:`InvalidBet`."""

    @abstractmethod
    def outcome(self, rng: FairRng) -> dict[str, Any]:
        """Draw the round's outcome. Must depend on ``rng`` and ``self.params`` only."""

    @abstractmethod
    def payout(self, bet: BetInfo, outcome: Mapping[str, Any]) -> int:
        """What ``bet`` pays (stake included; 0 for a loss) given the outcome and its cash-out."""

    def max_multiplier(self, params: Mapping[str, Any]) -> int | None:
        """The most a bet with these (validated) params can pay per unit staked, in hundredths, or
        None when no bound is known before the round runs. A bet whose ``amount * max_multiplier // 100``
        exceeds the game's ``max_payout`` is refused when it is placed."""
        return None

    def exposure_cap(self) -> int | None:
        """The most one round may pay out in total, counting every bet at its ``max_multiplier``
        (None: no cap). A bet that would take the round's sum past it is refused."""
        return None

    def declared_rtp(self, params: Mapping[str, Any]) -> float:
        """The return to player this game promises for a bet with ``params`` (checked by the simulator)."""
        return 1.0 - float(self.params.get("house_edge_bp", 0)) / 10_000

    def start(self, ctx: RoundContext, state: RunState) -> dict[str, Any]:
        """Betting closed and ``running`` begins; return extra fields for the ``running`` round event."""
        return {}

    def tick(self, ctx: RoundContext, state: RunState) -> TickResult:
        """Advance a running round. The default ends it after ``params['running_ms']`` (default 0)."""
        done = ctx.now_ms() - state.started_ms >= int(self.params.get("running_ms", 0))
        return TickResult(done=done)

    def action(self, ctx: RoundContext, state: RunState, bet: BetInfo, action: str,
               params: Mapping[str, Any]) -> ActionResult:  # fmt: skip
        """Handle a player action during ``running``; games without actions refuse all."""
        raise ActionRefused(f"{self.name} has no action {action!r}")

    def public_outcome(self, outcome: Mapping[str, Any]) -> dict[str, Any]:
        """The outcome as published at settlement (the contract's ``outcome`` map)."""
        return dict(outcome)
