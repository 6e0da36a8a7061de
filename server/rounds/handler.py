"""The plug-in interface game designers implement: :class:`RoundHandler`.

Shaped like Nakama's match handler. A round goes ``betting`` -> ``running`` -> ``settled``;
the engine owns time, persistence, money and sockets, and calls the handler at each step:

- :meth:`RoundHandler.outcome` when betting closes: draw the round's outcome from the fair RNG (a
  pure function of the round's seed, its chain's salt and the game's params; the seed is fixed and
  its hash published before anyone bets, the salt fixed by a chain's first round at the latest);
- :meth:`RoundHandler.validate_bet` while betting, after the bet's params were read into the
  game's bet type: refuse what the type cannot say (``InvalidBet``), normalise the rest;
- :meth:`RoundHandler.start` when betting closes: the fields of the ``running`` event, and what
  to add to the outcome; then :meth:`RoundHandler.tick` every ``tick_ms`` until it says the round
  is done (each tick may push fields to clients); :meth:`RoundHandler.action` for player actions
  during ``running`` (e.g. a crash cash-out);
- :meth:`RoundHandler.bet_result` at settlement, for games where each bet draws its own result
  (plinko, slots) from the bet's own fair RNG stream; then :meth:`RoundHandler.payout` for each bet.

Outside rounds, :meth:`RoundHandler.return_moments` says what a bet's return should average and how much
it should spread (the operator's risk report tests each player's luck against it: :mod:`server.risk.luck`).

A game declares its types in the class statement: ``class Dice(RoundHandler[DiceParams, DiceBet])``.
``DiceParams`` (a :class:`GameParams`) holds the game's tunables with their defaults; the
deployment's ``CROUPIER_GAME_PARAMS`` overrides them, checked when the node starts. ``DiceBet``
(a :class:`BetParams`, or a tagged union of them, one per bet type) is what a bet's ``params``
must be. The engine reads every bet into it before :meth:`validate_bet` sees it; clients learn
both types as JSON Schema (``welcome.game_info``, ``croupier schema``).

A handler never touches the database or sockets: it gets a :class:`RoundContext` (clock, fair RNG,
params, logger) and returns values; the engine does the I/O. A handler that raises voids its
round: every bet is refunded and the next round starts.
"""

from __future__ import annotations

import hashlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, NamedTuple, TypeVar, get_args, get_origin

import msgspec

from .fair import FairRng


class GameParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of a game's params: subclass it, one field per tunable, each with its default.

    Constrain a field with ``Annotated[int, msgspec.Meta(ge=0, le=10_000)]``; check a combination
    in ``__post_init__`` (raise ``ValueError("params.<field> ...")``, naming the field). Either way
    the node refuses to start with one line naming it. The constraints are part of the JSON Schema
    clients get.
    """

    running_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 0
    """How long ``running`` lasts when the handler keeps the default :meth:`RoundHandler.tick`."""


class BetParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of a bet type: subclass it, one field per bet param (constraints as in :class:`GameParams`).

    Several bet types: give each a ``tag`` and declare their union, e.g.
    ``class Spin(WheelBet, tag="spin")`` with ``class WheelBet(BetParams, tag_field="type")``;
    the bet's ``params.type`` then says which it is."""


P = TypeVar("P", bound=GameParams)
B = TypeVar("B")
"""A game's bet type: a :class:`BetParams` subclass, or a union of tagged ones."""


class InvalidBet(Exception):
    """A bet's params are not acceptable to the game; ``field`` names the offending param."""

    def __init__(self, message: str, field: str = "params") -> None:
        super().__init__(message)
        self.field = field


class ActionRefused(Exception):
    """A player action is not possible now (e.g. cash-out after the crash, or twice)."""


@dataclass(frozen=True, slots=True)
class RoundContext(Generic[P]):
    """What a handler may use: the clock (ms), the round's fair RNG, the game's params, a logger."""

    round_id: int
    now_ms: Callable[[], int]
    rng: FairRng
    params: P
    log: logging.Logger
    max_payout: int = 100_000_000
    """The most one bet may pay on this game (the operator's cap): a game whose multiplier is not
    bounded in advance (crash) must end a bet's climb where it reaches this."""


@dataclass(frozen=True, slots=True)
class BetInfo(Generic[B]):
    """A bet as the handler sees it: its params are of the game's bet type."""

    bet_id: int
    user_id: int
    amount: int
    params: B
    cashout: int | None = None
    """A recorded cash-out multiplier (hundredths), for games that have one."""
    result: dict[str, Any] | None = None
    """The bet's own draw (:meth:`RoundHandler.bet_result`), at settlement, for games that draw per bet."""


class Moments(NamedTuple):
    """The mean and variance of a bet's return ``r = payout / amount`` before its round is played
    (:meth:`RoundHandler.return_moments`), payouts rounded down to whole chips as the game pays them."""

    mean: float
    variance: float
    by_hand: bool = False
    """True when the return depended on what the player did while the round ran (a crash bet cashed out
    by hand, or left to crash): ``mean`` holds whatever the player's plan was, ``variance`` is the one of
    the plan the bet shows (its recorded cash-out; NaN when it recorded none). A cash-out by hand is only
    recorded when it won, so a sum over such bets must estimate their spread from the returns themselves
    (``(r - mean) ** 2``), not from ``variance``."""

    @classmethod
    def of(cls, returns: Iterable[tuple[float, float]]) -> Moments:
        """The moments of a return that is ``r`` with probability ``p`` for each ``(p, r)`` of ``returns``
        (the probabilities sum to at most 1; the rest of the time the return is 0)."""
        mean = squares = 0.0
        for chance, ratio in returns:
            mean += chance * ratio
            squares += chance * ratio * ratio
        return cls(mean, max(squares - mean * mean, 0.0))


@dataclass(slots=True)
class StartResult:
    """What :meth:`RoundHandler.start` returns: ``event`` goes to every client in the ``running``
    event (its ``info``); ``outcome`` is added to the round's outcome, which is stored, given to
    :meth:`RoundHandler.payout`, and published at settlement only as :meth:`RoundHandler.public_outcome` says."""

    event: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)


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
class RunState(Generic[B]):
    """Mutable state of a running round, owned by the handler; the engine keeps it between calls."""

    started_ms: int
    outcome: dict[str, Any]
    """The round's outcome (with what :meth:`RoundHandler.start` added to it)."""
    bets: list[BetInfo[B]]
    data: dict[str, Any] = field(default_factory=dict)


_MOMENTS_CACHED = 4096
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED = re.compile(r"(?:missing required|unknown) field `([^`]*)`")


def read_as(kind: Any, raw: Mapping[str, Any], where: str) -> Any:
    """``raw`` converted to ``kind`` (a msgspec Struct or union), or ``(message, field)`` in a
    ``ValueError`` naming the bad field from ``where`` (``params.target``)."""
    try:
        return msgspec.convert(raw, type=kind, strict=True)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        assert match is not None
        path = where + (match["path"] or "")
        named = _NAMED.search(match["message"])  # a missing or unknown field: name it, not its object
        raise ValueError(match["message"], f"{path}.{named[1]}" if named else path) from None


class RoundHandler(ABC, Generic[P, B]):
    """Base class of a game. Subclass ``RoundHandler[YourParams, YourBet]``, set ``name``, implement
    the abstract methods, register it.

    ``tick_ms`` is how often :meth:`tick` runs during ``running``. ``strategies`` names example
    bets, one per bet type, that ``croupier simulate`` plays to check each one's return.
    """

    name: ClassVar[str]
    tick_ms: ClassVar[int] = 100
    params_type: ClassVar[type[GameParams]]
    """The game's params type (from the class statement's ``RoundHandler[Params, Bet]``)."""
    bet_type: ClassVar[Any]
    """The game's bet type (from the class statement)."""
    strategies: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    moments_rounds: ClassVar[int] = 20_000
    """Rounds the default :meth:`return_moments` simulates per distinct bet (games without exact moments)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is RoundHandler:
                cls.params_type, cls.bet_type = get_args(base)

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        """The game with ``params`` over its defaults; ``ValueError`` names a bad one (``crash: params.x: ...``)."""
        try:
            self.params: P = read_as(self.params_type, params or {}, "params")
        except ValueError as exc:
            message, where = exc.args
            named = message.startswith(f"{where}.")  # a __post_init__ check that names its field
            raise ValueError(f"{self.name}: {message}" if named else f"{self.name}: {where}: {message}") from None

    # ------------------------------------------------------------------ what every game implements

    @abstractmethod
    def outcome(self, rng: FairRng) -> dict[str, Any]:
        """Draw the round's outcome. Must depend on ``rng`` and ``self.params`` only."""

    @abstractmethod
    def payout(self, bet: BetInfo[B], outcome: Mapping[str, Any]) -> int:
        """What ``bet`` pays (stake included; 0 for a loss) given the outcome (and its cash-out or result)."""

    @abstractmethod
    def declared_rtp(self, bet: B) -> float:
        """The return to player this game promises for ``bet`` (checked by ``croupier simulate``)."""

    # ------------------------------------------------------------------ bets

    def validate_bet(self, bet: B, amount: int) -> B:
        """Check a bet the bet type accepted, with its ``amount``; return it (normalised), or raise
        :class:`InvalidBet` naming the field. The default accepts every bet of the type."""
        return bet

    def max_multiplier(self, bet: B) -> int | None:
        """The most ``bet`` can pay per unit staked, in hundredths, or None when no bound is known
        before the round runs. A bet whose ``amount * max_multiplier // 100`` exceeds the game's
        ``max_payout`` is refused when it is placed."""
        return None

    def exposure_cap(self) -> int | None:
        """The most one round may pay out in total, counting every bet at its ``max_multiplier``
        (None: no cap). A bet that would take the round's sum past it is refused."""
        return None

    def read_bet(self, params: Mapping[str, Any], amount: int) -> B:
        """A bet's ``params`` as the game accepts them: read into the bet type, then :meth:`validate_bet`.
        Raises :class:`InvalidBet` naming the field."""
        try:
            bet = read_as(self.bet_type, params, "params")
        except ValueError as exc:
            raise InvalidBet(*exc.args) from None
        return self.validate_bet(bet, amount)

    def load_bet(self, params: Mapping[str, Any]) -> B:
        """A stored bet's params (already accepted) as the bet type."""
        bet: B = msgspec.convert(params, type=self.bet_type)
        return bet

    # ------------------------------------------------------------------ the running phase

    def start(self, ctx: RoundContext[P], state: RunState[B]) -> StartResult:
        """Betting closed and ``running`` begins: the ``running`` event's fields, what to add to the outcome."""
        return StartResult()

    def tick(self, ctx: RoundContext[P], state: RunState[B]) -> TickResult:
        """Advance a running round. The default ends it after ``params.running_ms``, pushing nothing."""
        return TickResult(done=ctx.now_ms() - state.started_ms >= self.params.running_ms)

    def action(self, ctx: RoundContext[P], state: RunState[B], bet: BetInfo[B], action: str,
               params: Mapping[str, Any]) -> ActionResult:  # fmt: skip
        """Handle a player action during ``running``; games without actions refuse all."""
        raise ActionRefused(f"{self.name} has no action {action!r}")

    # ------------------------------------------------------------------ settlement

    def bet_result(self, rng: FairRng, bet: BetInfo[B], outcome: Mapping[str, Any]) -> dict[str, Any] | None:
        """A game where each bet draws its own result returns it here, drawn from ``rng``: the bet's
        own stream (:meth:`FairRng.for_bet`), a pure function of the round's seed, salt and the bet's id.
        It is given to :meth:`payout` as ``bet.result``, stored with the bet and sent in its
        ``bet_settled``. The default (one outcome for everyone) draws nothing."""
        return None

    def return_moments(self, bet: BetInfo[B]) -> Moments:
        """The mean and variance of ``bet``'s return ``payout / amount`` (its params, its amount, whose
        rounding the payouts follow, and its recorded ``cashout``), under this game's own rules. The
        operator's ``max_payout`` is left out, and so is a cut that depends on the round's other bets (crash's
        ``force_point``): both only ever lower a return.

        The default estimates them by playing the bet through the game's own steps (``outcome`` from a
        :class:`FairRng`, ``start``, the bet's own draw, ``payout``) over :attr:`moments_rounds` rounds of a
        fixed seed chain: deterministic, and cached per (bet params, amount, cash-out) on this handler (one
        game with its params). A game whose odds are known in closed form overrides it with the exact
        figures (dice, roulette, crash, the wheel and plinko do).
        """
        cache: dict[tuple[bytes, int, int | None], Moments] = self.__dict__.setdefault("_moments", {})
        key = (msgspec.json.encode(bet.params), bet.amount, bet.cashout)
        found = cache.get(key)
        if found is None:
            if len(cache) >= _MOMENTS_CACHED:
                del cache[next(iter(cache))]  # the oldest: a bounded cache, however many amounts are bet
            found = cache[key] = self._simulated_moments(bet)
        return found

    def _simulated_moments(self, bet: BetInfo[B]) -> Moments:
        from .play import begin_running, settle_bets  # play is built on this module: imported when used

        bet = BetInfo(bet_id=0, user_id=0, amount=bet.amount, params=bet.params, cashout=bet.cashout)
        starts = type(self).start is not RoundHandler.start
        log, seed = logging.getLogger(f"moments.{self.name}"), "moments:" + self.name
        total = squares = 0.0
        for number in range(self.moments_rounds):
            seed = hashlib.sha256(seed.encode("ascii")).hexdigest()
            rng = FairRng(seed, "moments", self.name)
            outcome = self.outcome(rng)
            if starts:
                begin_running(self, RoundContext(number, _zero_ms, rng, self.params, log, 2**62),
                              RunState(0, outcome, [bet]))  # fmt: skip
            ratio = settle_bets(self, rng, outcome, [bet], 2**62)[0].payout / bet.amount
            total += ratio
            squares += ratio * ratio
        mean = total / self.moments_rounds
        return Moments(mean, max(squares / self.moments_rounds - mean * mean, 0.0))

    def public_outcome(self, outcome: Mapping[str, Any]) -> dict[str, Any]:
        """The outcome as published at settlement (the contract's ``outcome`` map)."""
        return dict(outcome)

    # ------------------------------------------------------------------ what clients learn

    def params_wire(self) -> dict[str, Any]:
        """The game's params in effect, as a JSON object (sent to clients in ``game_info``)."""
        wire: dict[str, Any] = msgspec.to_builtins(self.params)
        return wire

    def bet_wire(self, bet: B) -> dict[str, Any]:
        """A bet's params as a JSON object (stored with the bet, echoed in ``bet_ok``)."""
        wire: dict[str, Any] = msgspec.to_builtins(bet)
        return wire


def _zero_ms() -> int:
    return 0
