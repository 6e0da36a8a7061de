"""The ``Broker`` interface: how nodes pass events to each other.

A broker delivers each published payload to every current subscriber of its channel on
every node, at most once, in publish order per channel from one publisher. A publish may also
keep the payload in the channel's history (bounded by size and age, shared by every node), from
which a node serves ``subscribe`` with ``since``: see :meth:`Broker.history`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

Handler = Callable[[str, bytes], Awaitable[None] | None]
"""Called with (channel, payload) for each delivered message. Must not block."""


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much of a channel's past the broker keeps: the last ``size`` payloads, each for ``ttl`` seconds."""

    size: int
    ttl: float


class Subscription(Protocol):
    """A live subscription; :meth:`close` drops it (idempotent)."""

    async def close(self) -> None: ...


class Broker(Protocol):
    """Publish/subscribe between nodes. Upstream subscriptions are reference-counted."""

    async def publish(self, channel: str, payload: bytes, history: HistoryPolicy | None = None) -> None:
        """Send ``payload`` to every subscriber of ``channel`` on every node; with ``history``, also
        keep it in the channel's history under that policy."""
        ...

    async def history(self, channel: str, count: int) -> list[bytes]:
        """The last ``count`` (at most) payloads kept for ``channel``, oldest first.

        Raises ``ConnectionError`` when the history cannot be read (the caller answers without it).
        """
        ...

    async def publish_batch(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish (channel, payload) pairs in order and return once the broker took them all.

        Local subscribers get them in any case; raises ``ConnectionError`` when they could not
        reach the other nodes (the caller keeps them to try again: the outbox relay does).
        """
        ...

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Call ``handler`` for each message on ``channel`` until the subscription is closed."""
        ...

    def on_resume(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the broker is connected again after losing its connection:
        deliveries from other nodes in between may be lost (read the history to catch up)."""
        ...

    async def ping(self) -> None:
        """Return when the broker answers; raise when it does not (readiness)."""
        ...

    async def close(self) -> None:
        """Drop every subscription and release connections."""
        ...
