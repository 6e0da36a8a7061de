"""What the back office works with on a node, and its part of the node's life.

:func:`back_office` runs beside the node (the app's lifespan opens it once the node is open): it starts
the node's side of the control channel (:class:`~server.backoffice.control.NodeControl`), which every node
runs whether or not it serves ``/admin/api`` (a block made anywhere must close sockets here), and yields
the :class:`Office` the routes use. It reads what it needs from the node through :class:`OfficeNode`, a
narrow protocol :class:`server.node.Node` satisfies, so this package never imports the node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from ..broker import Broker
from ..ledger import Ledger
from ..players import PlayerHistory, ResponsibleGaming
from .control import ClusterControl, EveryUser, Listeners, NodeControl, UserSockets


class NodeName(Protocol):
    @property
    def node_id(self) -> str: ...


class NodeRounds(Protocol):
    """The node's round engine (:class:`server.rounds.engine.RoundEngine`) as the back office uses it."""

    def games(self) -> tuple[str, ...]: ...

    def driven(self) -> tuple[str, ...]: ...

    async def void(self, game: str, round_id: int, reason: str, /) -> dict[str, Any]: ...


class OfficeNode(Protocol):
    """What the back office uses of a node (:class:`server.node.Node` is one)."""

    @property
    def settings(self) -> NodeName: ...

    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def ledger(self) -> Ledger: ...

    @property
    def rounds(self) -> NodeRounds: ...

    @property
    def players(self) -> PlayerHistory: ...

    @property
    def responsible(self) -> ResponsibleGaming: ...

    @property
    def user_limits(self) -> UserSockets: ...

    @property
    def feeds(self) -> EveryUser: ...

    @property
    def audience(self) -> Listeners: ...


@dataclass(frozen=True, slots=True)
class Office:
    """The back office of one node: the database, the ledger, the cluster's control channel, the rounds, the
    players' history and their responsible-gaming state (read only)."""

    node_id: str
    pool: asyncpg.Pool
    ledger: Ledger
    control: ClusterControl
    rounds: NodeRounds
    players: PlayerHistory
    responsible: ResponsibleGaming


@asynccontextmanager
async def back_office(node: OfficeNode) -> AsyncIterator[Office]:
    """Start this node's side of the control channel; yield the :class:`Office` (stopped on exit)."""
    control = NodeControl(node.broker, node.settings.node_id, sockets=node.user_limits, users=node.feeds,
                          audience=node.audience, rounds=node.rounds)  # fmt: skip
    await control.start()
    try:
        yield Office(node.settings.node_id, node.pool, node.ledger, ClusterControl(node.broker), node.rounds,
                     node.players, node.responsible)  # fmt: skip
    finally:
        await control.close()
