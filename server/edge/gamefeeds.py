"""Game channels to sockets: each game's events reach this node's sockets that subscribed to it.

The round engine publishes a game's events on ``game:<name>`` (:mod:`server.rounds.events`);
:class:`GameFeeds` subscribes to every game's channel on the broker and hands what arrives to the
:class:`~server.edge.audience.Audience` as it is: the JSON bytes go to JSON sockets unchanged and
are re-encoded once per other subprotocol. Ticks are droppable: a socket whose send queue is over
half full skips them.

Start it after the round engine (:meth:`server.rounds.engine.RoundEngine.start`): the broker calls
a channel's handlers in subscription order, so the engine's view of a game already holds an event
when the event is pushed here. That is what lets ``subscribe`` take a snapshot and join the
audience with no gap and nothing twice (see :mod:`server.rounds.follower`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..broker import Broker, Subscription
from ..metrics import FRAMES_OUT
from ..rounds.events import game_channel, is_tick
from .audience import Audience


class GameFeeds:
    """Delivers every game's events to the sockets subscribed to the game on this node."""

    def __init__(self, broker: Broker, audience: Audience, games: Iterable[str]) -> None:
        self._broker = broker
        self._audience = audience
        self._games = tuple(games)
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe to each game's channel (after the round engine has: see the module's docstring)."""
        for game in self._games:
            self._subscriptions.append(await self._broker.subscribe(game_channel(game), self.deliver))

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()

    def deliver(self, channel: str, payload: bytes) -> None:
        """Push one event of ``channel`` to its sockets (ticks only to those keeping up)."""
        tick = is_tick(payload)
        FRAMES_OUT["tick" if tick else "round"].n += self._audience.push_json(channel, payload, droppable=tick)
