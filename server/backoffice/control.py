"""The back office's channel to every node: close a user's sockets, push an announcement, report.

Every node listens on one broker channel, ``control`` (:class:`NodeControl`, started with the node's app);
whoever acts for an operator (the node serving ``/admin/api``, or the ``croupier`` command with
``REDIS_URL``) publishes on it (:class:`ClusterControl`). What each message does on every node:

- ``close``: close every socket of a user with a close code (a blocked account: 4403) through the node's
  per-user socket registry (:meth:`server.edge.userlimits.UserLimits.close_user`, which closes 4409s the
  same way), and for a while close at once any socket of the user that authenticates (one whose sign-in
  read the account just before it was blocked);
- ``lift``: end that while at once (the account was unblocked);
- ``announce``: push an ``announcement`` to every socket, one user's, or a game's subscribers here;
- ``report``: answer on the asker's own channel with this node's id, sockets and the games it drives.

Delivery is the broker's: at most once, to the nodes connected to it now. A node cut off from Redis
misses a ``close`` (its sockets stay open, but the next ``auth`` of the user is refused anyway: the
database says so) and does not answer a ``report`` (the cluster view says so).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Protocol

import msgspec

from protocol import CloseCode

from ..broker import Broker, Subscription
from ..metrics import FRAMES_OUT

log = logging.getLogger(__name__)

CONTROL_CHANNEL = "control"
BLOCK_HOLD = 60.0
"""Seconds after a ``close`` during which a socket of the user that authenticates is closed at once."""


class _Close(msgspec.Struct, frozen=True, tag="close", tag_field="op"):
    user: int
    code: int
    reason: str
    hold: float = 0.0


class _Lift(msgspec.Struct, frozen=True, tag="lift", tag_field="op"):
    user: int


class _Announce(msgspec.Struct, frozen=True, tag="announce", tag_field="op"):
    to: str
    """``all``, ``user:<id>`` or ``game:<name>``: the audience on each node."""
    message: msgspec.Raw
    """The ``announcement`` as JSON, pushed as it is."""


class _Report(msgspec.Struct, frozen=True, tag="report", tag_field="op"):
    rid: str
    reply_to: str


_Message = _Close | _Lift | _Announce | _Report


class NodeReport(msgspec.Struct, frozen=True):
    """What a node says of itself when asked (``GET /admin/api/cluster``)."""

    rid: str
    node: str
    users: int
    """Users with an authenticated socket on the node."""
    sockets: int
    """Their sockets."""
    games: list[str]
    """The games the node serves."""
    driving: list[str]
    """The games it drives now (it holds their lease and plays their rounds)."""


class UserSockets(Protocol):
    """The node's per-user socket registry (:class:`server.edge.userlimits.UserLimits`)."""

    def close_user(self, user_id: int, code: CloseCode, reason: str, *, hold: float = ...) -> int: ...

    def lift(self, user_id: int) -> None: ...

    def counts(self) -> tuple[int, int]: ...


class EveryUser(Protocol):
    """The node's user channels (:class:`server.edge.feeds.UserFeeds`)."""

    def push_all(self, payload: bytes) -> int: ...


class Listeners(Protocol):
    """The node's sockets by channel (:class:`server.edge.audience.Audience`)."""

    def push_json(self, channel: str, payload: bytes, *, droppable: bool = ...) -> int: ...


class DrivenGames(Protocol):
    """The node's round engine (:class:`server.rounds.engine.RoundEngine`)."""

    def games(self) -> tuple[str, ...]: ...

    def driven(self) -> tuple[str, ...]: ...


class NodeControl:
    """This node's side of the control channel. Open with :meth:`start`, stop with :meth:`close`."""

    def __init__(self, broker: Broker, node_id: str, *, sockets: UserSockets, users: EveryUser,
                 audience: Listeners, rounds: DrivenGames) -> None:  # fmt: skip
        self._broker = broker
        self._node_id = node_id
        self._sockets = sockets
        self._users = users
        self._audience = audience
        self._rounds = rounds
        self._subscription: Subscription | None = None
        self._replies: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._subscription = await self._broker.subscribe(CONTROL_CHANNEL, self._on_message)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
        for task in self._replies:
            task.cancel()

    def _on_message(self, channel: str, payload: bytes) -> None:
        try:
            message = msgspec.json.decode(payload, type=_Message)
        except msgspec.DecodeError as exc:  # another version's message, or garbage: nothing to do here
            log.warning("unreadable control message: %s", exc)
            return
        match message:
            case _Close():
                try:
                    code = CloseCode(message.code)
                except ValueError:  # a code of a later version: this one closes with what it knows
                    code = CloseCode.FORBIDDEN
                closed = self._sockets.close_user(message.user, code, message.reason, hold=message.hold)
                if closed:
                    log.info("closed %d sockets of user %d (%d): %s", closed, message.user, message.code,
                             message.reason)  # fmt: skip
            case _Lift():
                self._sockets.lift(message.user)
            case _Announce():
                raw = bytes(message.message)
                taken = self._users.push_all(raw) if message.to == "all" else self._audience.push_json(message.to, raw)
                FRAMES_OUT["announcement"].n += taken
            case _Report():
                task = asyncio.create_task(self._report(message), name="control-report")
                self._replies.add(task)
                task.add_done_callback(self._replies.discard)

    async def _report(self, request: _Report) -> None:
        users, sockets = self._sockets.counts()
        report = NodeReport(request.rid, self._node_id, users, sockets, list(self._rounds.games()),
                            list(self._rounds.driven()))  # fmt: skip
        try:
            await self._broker.publish(request.reply_to, msgspec.json.encode(report))
        except Exception as exc:  # the asker sees this node as not answering
            log.warning("could not answer a cluster report: %s", exc)


class ClusterControl:
    """Sends control messages to every node (this one included) through ``broker``."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def close_user(self, user_id: int, code: CloseCode, reason: str, *, hold: float = BLOCK_HOLD) -> None:
        """Close every socket of ``user_id`` on every node with ``code``; see :data:`BLOCK_HOLD`."""
        await self._send(_Close(user_id, int(code), reason, hold))

    async def lift(self, user_id: int) -> None:
        """Admit ``user_id``'s sockets again at once on every node."""
        await self._send(_Lift(user_id))

    async def announce(self, to: str, message: bytes) -> None:
        """Push ``message`` (an ``announcement``, JSON) to ``to`` (``all``, ``user:<id>``, ``game:<name>``)."""
        await self._send(_Announce(to, msgspec.Raw(message)))

    async def reports(self, *, wait: float, expected: int = 0) -> list[NodeReport]:
        """Ask every node about itself; the answers that came within ``wait`` seconds (sooner once
        ``expected`` nodes answered)."""
        rid = secrets.token_hex(8)
        inbox = f"control-reply:{rid}"
        reports: dict[str, NodeReport] = {}
        enough = asyncio.Event()

        def answered(channel: str, payload: bytes) -> None:
            try:
                report = msgspec.json.decode(payload, type=NodeReport)
            except msgspec.DecodeError:
                return
            if report.rid == rid:
                reports[report.node] = report
                if expected and len(reports) >= expected:
                    enough.set()

        subscription = await self._broker.subscribe(inbox, answered)
        try:
            await self._send(_Report(rid, inbox))
            try:
                async with asyncio.timeout(wait):
                    await enough.wait()
            except TimeoutError:
                pass
        finally:
            await subscription.close()
        return sorted(reports.values(), key=lambda r: r.node)

    async def _send(self, message: _Message) -> None:
        await self._broker.publish(CONTROL_CHANNEL, msgspec.json.encode(message))
