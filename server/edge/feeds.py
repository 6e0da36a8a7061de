"""User channels across nodes: events about a user reach that user's sockets on every node.

A node holds one broker subscription per ``user:<id>`` channel while at least one of its
sockets belongs to that user; what arrives goes to those sockets through the
:class:`~server.edge.audience.Audience`. Publishing goes through the broker too, so a bet
placed on node B updates the player's socket on node C.
"""

from __future__ import annotations

import asyncio

from protocol import JSON
from protocol import messages as m

from ..broker import Broker, Subscription
from .audience import Audience, Peer, user_channel


class UserFeeds:
    """Joins and leaves of sockets to their user's channel, and publishing to a user."""

    def __init__(self, broker: Broker, audience: Audience) -> None:
        self._broker = broker
        self._audience = audience
        self._subscriptions: dict[str, Subscription] = {}
        self._guard = asyncio.Lock()

    async def join(self, user_id: int, peer: Peer) -> None:
        """Deliver the user's events to ``peer`` from now on."""
        channel = user_channel(user_id)
        self._audience.add(channel, peer)
        async with self._guard:
            if channel not in self._subscriptions:
                self._subscriptions[channel] = await self._broker.subscribe(channel, self._deliver)

    async def leave(self, user_id: int, peer: Peer) -> None:
        """Stop delivering to ``peer``; the last socket of the user on this node drops the subscription."""
        channel = user_channel(user_id)
        self._audience.remove(channel, peer)
        async with self._guard:
            if self._audience.count(channel) == 0 and channel in self._subscriptions:
                await self._subscriptions.pop(channel).close()

    async def publish(self, user_id: int, message: m.ServerMessage) -> None:
        """Send ``message`` to every socket of the user, on every node (encoded once, as JSON)."""
        await self._broker.publish(user_channel(user_id), JSON.encode(message))

    def _deliver(self, channel: str, payload: bytes) -> None:
        self._audience.push_json(channel, payload)
