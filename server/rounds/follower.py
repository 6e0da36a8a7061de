"""The follower view: every game's current round on this node, as the game's events tell it.

Every node (the driver included) follows each game's channel on the broker and keeps, per game,
the current round (:class:`~.events.RoundView`: bet validation, ``subscribe`` snapshots), the
channel's offset and epoch. A node that starts while another drives shows the round read from
PostgreSQL until the first event arrives. ``subscribe`` with ``since`` is served from the
channel's history in the broker (:meth:`RoundFollower.missed_since`), which every node shares.

Ordering, what ``subscribe`` relies on: the view is updated in the broker's callback, with no await,
and the follower subscribes to each channel before whatever pushes the channel to sockets
(:class:`server.edge.gamefeeds.GameFeeds`, started after the engine). A broker calls a channel's
handlers in subscription order without yielding in between, so when a push reaches the sockets
the view already holds its event: a socket added to the audience right after :meth:`snapshot`
(no await in between) gets every later event, with no gap and nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from ..broker import Broker, HistoryPolicy, Subscription
from .events import RoundEvent, RoundView, game_channel, read_event
from .recent import RecentRounds

log = logging.getLogger(__name__)

_HISTORY_SLACK = 16
"""Read a few more events than needed: the broker may hold some newer than this node's view."""


@dataclass(slots=True)
class _Followed:
    """One game as this node follows it."""

    view: RoundView | None = None
    """The current round as its last ``round`` event (or PostgreSQL) described it."""
    tick: dict[str, Any] | None = None
    """The game's fields of the current round's last tick (None before its first)."""
    offset: int = 0
    epoch: str = ""
    wire: dict[str, Any] | None = None
    """``view`` as a JSON object, made once for all the snapshots of it."""

    def show(self, view: RoundView | None) -> None:
        self.view, self.tick, self.wire = view, None, None


class RoundFollower:
    """The current round of every game, and the events a returning client missed.

    Start with :meth:`start` (before anything else subscribes to the game channels), stop with
    :meth:`close`.
    """

    def __init__(self, broker: Broker, games: Iterable[str], history: HistoryPolicy,
                 recent: RecentRounds | None = None) -> None:  # fmt: skip
        self._broker = broker
        self._history = history
        self._recent = recent
        """The last settled rounds (``history`` requests): told of every settled round, and of missed events."""
        self._games = {game: _Followed() for game in games}
        self._channels = {game_channel(game): followed for game, followed in self._games.items()}
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        """Follow every game's channel."""
        for channel in self._channels:
            self._subscriptions.append(await self._broker.subscribe(channel, self.on_event))

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()

    def on_event(self, channel: str, payload: bytes) -> None:
        """An event of a game's channel: it moves the game's offset, and a ``round`` event (or the
        current round's ``tick``) changes the view."""
        followed = self._channels.get(channel)
        if followed is None:
            return
        try:
            event = read_event(payload)
        except msgspec.DecodeError as exc:  # not an event of ours: keep the view as it is
            log.warning("unreadable event on %s: %s", channel, exc)
            return
        if event is None:
            return
        if self._recent is not None and (event.epoch != followed.epoch or event.offset != followed.offset + 1):
            self._recent.forget(channel.removeprefix("game:"))  # a new driver, or events missed
        followed.offset, followed.epoch = event.offset, event.epoch
        if isinstance(event, RoundEvent):
            followed.show(event.view)
            if self._recent is not None and event.view.phase == "settled":
                self._recent.record(event.view)
        elif followed.view is not None and followed.view.round == event.round:
            followed.tick = event.fields

    def view(self, game: str) -> RoundView | None:
        """``game``'s current round as last announced (None before any)."""
        return self._games[game].view

    def show(self, game: str, view: RoundView | None) -> None:
        """Show ``view`` (a round another node drives, read from PostgreSQL) until an event comes."""
        followed = self._games[game]
        if followed.view is None:
            followed.show(view)

    def snapshot(self, game: str) -> tuple[dict[str, Any] | None, int, str]:
        """The current round as last announced (a JSON object, with the fields of its last tick
        once there was one: crash's ``multiplier``), the channel's offset and epoch."""
        followed = self._games[game]
        if followed.view is None:
            return None, followed.offset, followed.epoch
        if followed.wire is None:
            followed.wire = followed.view.as_wire()
        snapshot = dict(followed.wire)
        if followed.tick:
            snapshot.update(followed.tick)
        return snapshot, followed.offset, followed.epoch

    async def missed_since(self, game: str, offset: int, epoch: str) -> list[dict[str, Any]] | None:
        """The events of ``game`` after ``offset`` in ``epoch``, oldest first, up to this node's current
        offset when it returns (take the snapshot right after it, with no await in between).

        None when the channel's history (kept by the broker, shared by every node) no longer holds all
        of them (another epoch, too old, or unreadable): then the client needs a snapshot."""
        followed = self._games[game]
        if epoch != followed.epoch or offset > followed.offset:
            return None
        if offset == followed.offset:
            return []
        if followed.offset - offset > self._history.size:
            return None
        wanted = followed.offset - offset + _HISTORY_SLACK
        while True:
            try:
                kept = await self._broker.history(game_channel(game), wanted)
            except ConnectionError as exc:
                log.warning("history of %s unavailable: %s", game, exc)
                return None
            # No await from here on: the caller takes its snapshot at exactly this offset.
            upto = followed.offset
            if epoch != followed.epoch:
                return None
            missed = _events_between(kept, epoch, offset, upto)
            if [event["offset"] for event in missed] == list(range(offset + 1, upto + 1)):
                return missed
            if len(kept) < wanted or wanted > self._history.size:
                return None  # the history holds no more: too old, or lost (Redis restarted)
            # The newest ``wanted`` did not reach back far enough: this node's view lags the broker by
            # more than the slack, or other epochs' events are interleaved (a takeover). Read it all.
            wanted = self._history.size + followed.offset - offset + _HISTORY_SLACK


def _events_between(kept: Iterable[bytes], epoch: str, offset: int, upto: int) -> list[dict[str, Any]]:
    """The events of ``kept`` (payloads, oldest first) in ``epoch`` after ``offset`` up to ``upto``."""
    between: list[dict[str, Any]] = []
    for payload in kept:
        event = orjson.loads(payload)  # as clients get it: every field of the event
        if event.get("epoch") == epoch and offset < event.get("offset", 0) <= upto:
            between.append(event)
    return between
