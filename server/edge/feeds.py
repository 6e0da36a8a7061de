"""User channels across nodes: events about a user reach that user's sockets on every node.

A node holds one broker subscription per ``user:<id>`` channel while at least one of its
sockets belongs to that user; what arrives goes to those sockets through the
:class:`~server.edge.audience.Audience`. Events are published by the outbox relay (see
:mod:`server.edge.relay`), so a bet placed on node B updates the player's socket on node C.
The relay delivers at least once: a copy of an event already delivered here (same offset)
is dropped.
"""

from __future__ import annotations

import asyncio

import orjson

from ..broker import Broker, Subscription
from .audience import Audience, Peer, user_channel

DEDUPE_WINDOW = 1024
"""Offsets this far below the highest seen on a user channel count as already delivered."""


class _Seen:
    """The offsets recently delivered on one user channel."""

    __slots__ = ("high", "recent")

    def __init__(self) -> None:
        self.high = 0
        self.recent: set[int] = set()

    def first_time(self, offset: int) -> bool:
        if offset <= self.high - DEDUPE_WINDOW or offset in self.recent:
            return False
        self.recent.add(offset)
        if offset > self.high:
            self.high = offset
            if len(self.recent) > 2 * DEDUPE_WINDOW:
                self.recent = {o for o in self.recent if o > self.high - DEDUPE_WINDOW}
        return True


class UserFeeds:
    """Joins and leaves of sockets to their user's channel, and publishing to a user."""

    def __init__(self, broker: Broker, audience: Audience) -> None:
        self._broker = broker
        self._audience = audience
        self._subscriptions: dict[str, Subscription] = {}
        self._seen: dict[str, _Seen] = {}
        self._guard = asyncio.Lock()

    async def join(self, user_id: int, peer: Peer) -> None:
        """Deliver the user's events to ``peer`` from now on."""
        channel = user_channel(user_id)
        self._audience.add(channel, peer)
        async with self._guard:
            if channel not in self._subscriptions:
                self._seen[channel] = _Seen()
                self._subscriptions[channel] = await self._broker.subscribe(channel, self._deliver)

    async def leave(self, user_id: int, peer: Peer) -> None:
        """Stop delivering to ``peer``; the last socket of the user on this node drops the subscription."""
        channel = user_channel(user_id)
        self._audience.remove(channel, peer)
        async with self._guard:
            if self._audience.count(channel) == 0 and channel in self._subscriptions:
                self._seen.pop(channel, None)
                await self._subscriptions.pop(channel).close()

    def _deliver(self, channel: str, payload: bytes) -> None:
        seen = self._seen.get(channel)
        offset = orjson.loads(payload).get("offset")
        if seen is not None and isinstance(offset, int) and not seen.first_time(offset):
            return
        self._audience.push_json(channel, payload)
