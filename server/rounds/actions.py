"""Player actions on a running round (crash's cash-out), and their way to the node driving the game.

The driving node applies an action to its running round (:meth:`RunningRound.act`): to each of the
player's bets the game accepts it for, or only to the bet named in ``params.bet``; a cash-out is in
the round's state at once (a settlement from then on pays it) and recorded in ``bets.cashout``
before the player gets ``action_ok``. Any other node forwards the action on ``actions:<game>`` and
waits for the answer on its own channel (:class:`ActionRouter`, at most
:data:`ACTION_FORWARD_TIMEOUT` seconds, else ``unavailable``).

An operator's void of a round (the back office) takes the same way to the driving node, which voids
the round itself (:data:`VoidRound`), so a void never races the driver.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import msgspec

from protocol import ErrorCode

from ..broker import Broker, Subscription
from ..ledger import Ledger, LedgerError
from .errors import RoundRefused
from .events import RoundView
from .handler import ActionRefused, BetInfo, RoundContext, RoundHandler, RunState

log = logging.getLogger(__name__)

ACTION_FORWARD_TIMEOUT = 3.0
"""Seconds a node waits for the driving node to answer a forwarded action."""
VOID_FORWARD_TIMEOUT = 15.0
"""Seconds a node waits for the driving node to answer a forwarded void (it refunds every bet of the round)."""

VoidRound = Callable[[str, int, str], Awaitable[dict[str, Any]]]
"""On the node driving a game: void (game, round id, reason), a round still betting or running; what was
refunded, or :class:`RoundRefused` (:meth:`~server.rounds.engine.RoundEngine.void`)."""


@dataclass(slots=True)
class RunningRound:
    """A round running on this node (its driver): the handler's state, and the actions it takes."""

    round_id: int
    handler: RoundHandler[Any, Any]
    state: RunState[Any]
    ctx: RoundContext[Any]
    finished: bool = False
    """The last tick said done: the round is being settled and takes no more actions."""
    by_user: dict[int, list[int]] = field(default_factory=dict)
    """user id -> positions of their bets in ``state.bets`` (fixed while running: betting closed),
    so a crowd cashing out at once costs one lookup each, not a scan of every bet."""

    def __post_init__(self) -> None:
        for index, bet in enumerate(self.state.bets):
            self.by_user.setdefault(bet.user_id, []).append(index)

    async def act(self, user_id: int, action: str, params: Mapping[str, Any], ledger: Ledger) -> dict[str, Any]:
        """Apply ``action`` to the user's bets (or to the one ``params.bet`` names): the ``result`` of
        ``action_ok`` (a bet's, or ``{"bets": [...]}`` for several), or :class:`RoundRefused`."""
        mine = self._bets_of(user_id, params.get("bet"))
        if self.finished:  # over, settling now: let the game say why it is too late, and change nothing
            try:
                self.handler.action(self.ctx, self.state, mine[0][1], action, params)
            except ActionRefused as exc:
                raise RoundRefused(ErrorCode.BAD_REQUEST, str(exc), "action") from None
            raise RoundRefused(ErrorCode.BAD_REQUEST, f"too late: round {self.round_id} is over", "action")
        bets = self.state.bets
        results: list[dict[str, Any]] = []
        recorded: list[tuple[int, BetInfo[Any]]] = []
        refusals: list[ActionRefused] = []
        for index, bet in mine:  # the action applies to each of the user's bets it can (one refusal skips one bet)
            try:
                outcome = self.handler.action(self.ctx, self.state, bet, action, params)
            except ActionRefused as exc:
                refusals.append(exc)
                continue
            if outcome.cashout is not None:
                # Into the state at once (no await in between): a settlement from here on pays it.
                bets[index] = replace(bet, cashout=outcome.cashout)
                recorded.append((index, bet))
            results.append({"bet": bet.bet_id, **outcome.result})
        if not results:
            raise RoundRefused(ErrorCode.BAD_REQUEST, str(refusals[0]), "action")
        await self._record_cashouts(recorded, ledger)
        return results[0] if len(mine) == 1 else {"bets": results}

    def _bets_of(self, user_id: int, named: object) -> list[tuple[int, BetInfo[Any]]]:
        mine = [(index, self.state.bets[index]) for index in self.by_user.get(user_id, ())]
        if not mine:
            raise RoundRefused(ErrorCode.BAD_REQUEST, f"you have no bet in round {self.round_id}", "round")
        if named is not None:
            mine = [(index, bet) for index, bet in mine if bet.bet_id == named]
            if not mine:
                raise RoundRefused(
                    ErrorCode.BAD_REQUEST, f"bet {named!r} is not one of yours in round {self.round_id}", "params.bet"
                )
        return mine

    async def _record_cashouts(self, recorded: list[tuple[int, BetInfo[Any]]], ledger: Ledger) -> None:
        """Record the cash-outs in ``bets.cashout``, one call per multiplier; if the ledger fails, the
        bets are put back as they were (the player is told, and may try again)."""
        bets = self.state.bets
        for multiplier in {bets[index].cashout for index, _ in recorded}:
            assert multiplier is not None
            ids = [bets[index].bet_id for index, _ in recorded if bets[index].cashout == multiplier]
            try:
                await ledger.record_cashout(ids, multiplier)
            except LedgerError:
                for index, before in recorded:
                    bets[index] = before
                raise


class Driving(Protocol):
    """A game's driver as actions see it (:class:`~server.rounds.driver.RoundDriver`)."""

    @property
    def driving(self) -> bool:
        """This node drives the game now."""
        ...

    @property
    def running(self) -> RunningRound | None:
        """The round running on this node, if any."""
        ...


class _Refusal(msgspec.Struct, frozen=True):
    code: str
    message: str
    field: str | None


class _Request(msgspec.Struct, frozen=True):
    """A forwarded action, on ``actions:<game>``."""

    rid: str
    reply_to: str
    game: str
    round: int
    user: int
    action: str
    params: dict[str, Any]
    void: str | None = None
    """An operator's void of the round, with its reason (``user`` 0, ``action`` "void"): not a player's action."""


class _Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    """The driving node's answer, on the asking node's inbox: a result or an error."""

    rid: str
    result: dict[str, Any] | None = None
    error: _Refusal | None = None


class ActionRouter:
    """Brings each player action to the node that drives its game, and its answer back.

    Open with :meth:`start`, stop with :meth:`close`.
    """

    def __init__(
        self,
        broker: Broker,
        node_id: str,
        ledger: Ledger,
        drivers: Mapping[str, Driving],
        views: Callable[[str], RoundView | None],
        void: VoidRound | None = None,
    ) -> None:
        self._broker = broker
        self._void = void
        self._ledger = ledger
        self._drivers = drivers
        self._views = views
        self._inbox = f"node:{node_id}:{secrets.token_hex(4)}"
        """This node's own channel: answers to the actions it forwarded arrive here."""
        self._awaiting: dict[str, asyncio.Future[_Reply]] = {}
        self._answering: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Subscription] = []

    async def start(self, games: Iterable[str]) -> None:
        """Listen for answers, and for the actions of ``games`` other nodes forward."""
        self._subscriptions.append(await self._broker.subscribe(self._inbox, self._on_reply))
        for game in games:
            self._subscriptions.append(await self._broker.subscribe(_actions_channel(game), self._on_request))

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()

    async def apply(
        self, game: str, round_id: int, user_id: int, action: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Apply a player action to the running round: here when this node drives the game, else on
        the node that does. The ``result`` of ``action_ok``, or :class:`RoundRefused`."""
        if self._drivers[game].driving:
            return await self._act(game, round_id, user_id, action, params)
        return await self._forward(
            _Request(secrets.token_hex(8), self._inbox, game, round_id, user_id, action, dict(params))
        )

    async def void(self, game: str, round_id: int, reason: str) -> dict[str, Any]:
        """Void round ``round_id`` of ``game`` (an operator's decision, for ``reason``): here when this node
        drives the game, else on the node that does (a router with no drivers, such as the ``croupier``
        command's, always forwards). What was refunded, or :class:`RoundRefused`."""
        driver = self._drivers.get(game)
        if driver is not None and driver.driving and self._void is not None:
            return await self._void(game, round_id, reason)
        request = _Request(secrets.token_hex(8), self._inbox, game, round_id, 0, "void", {}, void=reason)
        return await self._forward(request, wait=VOID_FORWARD_TIMEOUT)

    async def _act(
        self, game: str, round_id: int, user_id: int, action: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        running = self._drivers[game].running
        if running is None or running.round_id != round_id:
            view = self._views(game)
            if view is None or view.round != round_id:
                raise RoundRefused(ErrorCode.ROUND_MISMATCH, f"round {round_id} is not the current round", "round")
            raise RoundRefused(ErrorCode.BAD_REQUEST, f"round {round_id} is {view.phase}, not running", "round")
        return await running.act(user_id, action, params, self._ledger)

    async def _forward(self, request: _Request, *, wait: float = ACTION_FORWARD_TIMEOUT) -> dict[str, Any]:
        """Ask the driving node to apply an action, and wait for its answer (``unavailable`` if none comes)."""
        answer: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        self._awaiting[request.rid] = answer
        try:
            await self._broker.publish(_actions_channel(request.game), msgspec.json.encode(request))
            async with asyncio.timeout(wait):
                reply = await answer
        except TimeoutError:
            raise RoundRefused(
                ErrorCode.UNAVAILABLE, f"the node driving {request.game} did not answer; retry"
            ) from None
        finally:
            self._awaiting.pop(request.rid, None)
        if reply.error is not None:
            raise RoundRefused(ErrorCode(reply.error.code), reply.error.message, reply.error.field)
        return reply.result or {}

    def _on_request(self, channel: str, payload: bytes) -> None:
        """On the driving node: apply a forwarded action (in a task of its own: the broker's reader
        must not wait for the database) and answer the node that forwarded it."""
        try:
            request = msgspec.json.decode(payload, type=_Request)
        except msgspec.DecodeError as exc:
            log.warning("unreadable forwarded action on %s: %s", channel, exc)
            return
        driver = self._drivers.get(request.game)
        if driver is None or not driver.driving or (request.void is not None and self._void is None):
            return  # another node drives it (or will, and the asker times out and retries)
        task = asyncio.create_task(self._answer(request), name=f"forwarded-action-{request.game}")
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, request: _Request) -> None:
        try:
            if request.void is not None:
                assert self._void is not None
                result = await self._void(request.game, request.round, request.void)
            else:
                result = await self._act(request.game, request.round, request.user, request.action, request.params)
            reply = _Reply(request.rid, result=result)
        except RoundRefused as exc:
            reply = _Reply(request.rid, error=_Refusal(exc.code.value, str(exc), exc.field))
        except LedgerError as exc:
            reply = _Reply(request.rid, error=_Refusal(exc.code.value, str(exc), None))
        except Exception as exc:  # the asker must get an answer, not a timeout
            log.warning("forwarded %s action failed: %s", request.game, exc)
            reply = _Reply(
                request.rid, error=_Refusal(ErrorCode.UNAVAILABLE.value, "could not apply the action; retry", None)
            )
        await self._broker.publish(request.reply_to, msgspec.json.encode(reply))

    def _on_reply(self, channel: str, payload: bytes) -> None:
        try:
            reply = msgspec.json.decode(payload, type=_Reply)
        except msgspec.DecodeError:
            return
        answer = self._awaiting.get(reply.rid)
        if answer is not None and not answer.done():
            answer.set_result(reply)


def _actions_channel(game: str) -> str:
    return f"actions:{game}"
