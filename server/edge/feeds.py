"""User channels across nodes: events about a user reach that user's sockets on every node.

A node holds one broker subscription per ``user:<id>`` channel while at least one of its
sockets belongs to that user; what arrives goes to those sockets through the
:class:`~server.edge.audience.Audience`. Events are published by the outbox relay (see
:mod:`server.ledger.outbox`), so a bet placed on node B updates the player's socket on node C.

Every user event is delivered to the sockets here exactly once, whatever the broker does:
- the relay publishes at least once: a copy of an offset already delivered is dropped;
- pub/sub loses what is published while this node's broker connection is down, and events can
  arrive out of order (the sweeper relays old ones late). A gap in the offsets (an event
  above the next expected one) or the broker coming back makes the node read what it lacks
  from the outbox table (the user channel's history) and deliver it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import orjson

from ..broker import Broker, Subscription
from ..ledger import user_channel
from ..metrics import FRAMES_OUT
from .audience import Audience, Peer

log = logging.getLogger(__name__)

FetchAfter = Callable[[dict[int, int]], Awaitable[list[tuple[int, int, bytes]]]]
"""Reads the history: {user id: offset} -> (user id, offset, payload) of every later event."""

GAP_WAIT = 0.5
"""Seconds a gap may stay open (the missing event may just be late) before the history is read."""
BALANCE_FRESH = 30.0
"""Seconds a balance is served from memory after the database last told it: a read (at sign-in, or a
``balance`` request's) or the user's latest event in sequence (each carries the balance its transaction
wrote). Every wallet change is announced on the user's channel (the outbox: a relay that failed is swept
within seconds); a gap in the offsets or a broker reconnect makes the node ask again. So this bound only
covers a last change whose event never came: a player who is quiet for 30 s costs one read when they ask
again (docs/performance.md: "Reads a swarm no longer makes")."""
MAX_PENDING = 1024
"""Offsets delivered above a gap kept track of; past that the gap is given up on."""


class _Seen:
    """What was delivered on one user channel: every offset up to ``floor``, and ``above`` it; the
    wallet balance as of ``floor`` (None when not known)."""

    __slots__ = ("above", "balance", "checked_at", "floor")

    def __init__(self, floor: int, balance: int | None, checked_at: float) -> None:
        self.floor = floor
        self.balance = balance
        self.checked_at = checked_at
        """When the database last confirmed ``balance`` (monotonic seconds)."""
        self.above: set[int] | None = None
        """Offsets seen past a gap above ``floor``; None while there is no gap (most of the time)."""

    def first_time(self, offset: int) -> bool:
        above = self.above
        if offset <= self.floor or (above is not None and offset in above):
            return False
        if above is None:
            if offset == self.floor + 1:  # in order, the usual case
                self.floor = offset
                return True
            above = self.above = set()
        above.add(offset)
        while self.floor + 1 in above:
            self.floor += 1
            above.remove(self.floor)
        if len(above) > MAX_PENDING:  # a gap that never filled (history pruned): stop waiting for it
            self.floor = min(above)
            above = {o for o in above if o > self.floor}
        self.above = above or None
        return True

    @property
    def gap(self) -> bool:
        return bool(self.above)


class UserFeeds:
    """Joins and leaves of sockets to their user's channel, and exactly-once delivery to them."""

    def __init__(self, broker: Broker, audience: Audience, fetch_after: FetchAfter | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._broker = broker
        self._clock = clock
        self._audience = audience
        self._fetch_after = fetch_after
        self._subscriptions: dict[str, Subscription] = {}
        self._seen: dict[str, _Seen] = {}
        self._guard = asyncio.Lock()
        self._filler: asyncio.Task[None] | None = None
        self._gaps: set[int] = set()
        broker.on_resume(self.catch_up_all)

    async def join(self, user_id: int, peer: Peer, offset: int = 0) -> None:
        """Deliver the user's events after ``offset`` (what the socket's welcome reflects) to ``peer``."""
        channel = user_channel(user_id)
        self._audience.add(channel, peer)
        async with self._guard:
            if channel not in self._subscriptions:
                self._seen[channel] = _Seen(offset, None, float("-inf"))
                self._subscriptions[channel] = await self._broker.subscribe(channel, self._deliver)

    async def leave(self, user_id: int, peer: Peer) -> None:
        """Stop delivering to ``peer``; the last socket of the user on this node drops the subscription."""
        channel = user_channel(user_id)
        self._audience.remove(channel, peer)
        async with self._guard:
            if self._audience.count(channel) == 0 and channel in self._subscriptions:
                self._seen.pop(channel, None)
                await self._subscriptions.pop(channel).close()

    def push_all(self, payload: bytes) -> int:
        """Queue a JSON-encoded push (not an event of the user stream: no offset) on every socket of every
        user followed on this node; how many sockets took it. An operator's announcement to everyone."""
        return sum(self._audience.push_json(channel, payload) for channel in tuple(self._subscriptions))

    def balance(self, user_id: int) -> int | None:
        """The user's wallet balance as this node knows it: read from the database or carried by the user's
        latest event less than :data:`BALANCE_FRESH` ago, every event since applied, with no gap. None when
        it cannot tell: ask the database, then :meth:`confirm_balance`. (A write another process does not
        announce at once shows with its event, which the outbox sweeper relays within seconds.)"""
        seen = self._seen.get(user_channel(user_id))
        if seen is None or seen.gap or seen.balance is None or self._clock() - seen.checked_at > BALANCE_FRESH:
            return None
        return seen.balance

    def confirm_balance(self, user_id: int, balance: int, version: int) -> None:
        """The database said the wallet holds ``balance`` at ``version`` (its offset)."""
        seen = self._seen.get(user_channel(user_id))
        if seen is not None and not seen.gap and version >= seen.floor:
            seen.balance, seen.checked_at = balance, self._clock()

    def catch_up_all(self) -> None:
        """The broker lost events meanwhile (it reconnected): read every followed user's history."""
        self._gaps.update(int(channel.removeprefix("user:")) for channel in self._seen)
        self._schedule_fill(delay=0.0)

    def _deliver(self, channel: str, payload: bytes) -> None:
        seen = self._seen.get(channel)
        event = orjson.loads(payload)
        offset = event.get("offset")
        if seen is not None and isinstance(offset, int):
            before = seen.floor
            if not seen.first_time(offset):
                return
            if offset == seen.floor and before == offset - 1 and "balance" in event:
                # The event right after what was known: the balance now, as the transaction that wrote it saw it.
                seen.balance, seen.checked_at = event["balance"], self._clock()
            elif seen.floor != before:
                seen.balance = None  # events above a gap filled in: the last one's balance is not at hand
            if seen.gap:
                self._gaps.add(int(channel.removeprefix("user:")))
                self._schedule_fill(delay=GAP_WAIT)
        FRAMES_OUT.of(event.get("t")).n += self._audience.push_json(channel, payload)

    def _schedule_fill(self, *, delay: float) -> None:
        if self._fetch_after is not None and (self._filler is None or self._filler.done()):
            self._filler = asyncio.create_task(self._fill(delay), name="user-feed-gap-filler")

    async def _fill(self, delay: float) -> None:
        assert self._fetch_after is not None
        await asyncio.sleep(delay)
        while self._gaps:
            users, self._gaps = self._gaps, set()
            floors = {u: seen.floor for u in users if (seen := self._seen.get(user_channel(u))) is not None}
            if not floors:
                continue
            try:
                events = await self._fetch_after(floors)
            except Exception as exc:  # the database is down too: try again later
                log.warning("could not read the history of %d user channels: %s", len(floors), exc)
                self._gaps.update(floors)
                await asyncio.sleep(1.0)
                continue
            for user_id, _, payload in events:
                self._deliver(user_channel(user_id), payload)
            self._gaps.difference_update(floors)  # what remains open is not in the history (yet)
