"""In-process broker: the single-node default, no network."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ..metrics import PUBLISHED
from ._fanout import LocalFanout, LocalSubscription
from .base import Handler, HistoryPolicy

_PUBLISHED = PUBLISHED["memory"]


class MemoryBroker:
    """Delivers published payloads to this process's subscribers, in order; keeps history in memory."""

    def __init__(self) -> None:
        self._fanout = LocalFanout()
        self._history: dict[str, tuple[HistoryPolicy, deque[tuple[float, bytes]]]] = {}

    async def publish(self, channel: str, payload: bytes, history: HistoryPolicy | None = None) -> None:
        if history is not None:
            kept = self._history.get(channel)
            if kept is None or kept[0] != history:
                kept = self._history[channel] = (history, deque(kept[1] if kept else (), maxlen=history.size))
            kept[1].append((time.monotonic(), payload))
        _PUBLISHED.n += 1
        await self._fanout.deliver(channel, payload)

    async def history(self, channel: str, count: int) -> list[bytes]:
        kept = self._history.get(channel)
        if kept is None or count <= 0:
            return []
        policy, entries = kept
        cutoff = time.monotonic() - policy.ttl
        while entries and entries[0][0] < cutoff:
            entries.popleft()
        return [payload for _, payload in list(entries)[-count:]]

    async def publish_batch(self, messages: list[tuple[str, bytes]]) -> None:
        _PUBLISHED.n += len(messages)
        for channel, payload in messages:
            await self._fanout.deliver(channel, payload)

    async def subscribe(self, channel: str, handler: Handler) -> LocalSubscription:
        return await self._fanout.add(channel, handler)

    def on_resume(self, callback: Callable[[], None]) -> None:
        """Never called: an in-process broker cannot lose its connection."""

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._fanout = LocalFanout()
        self._history.clear()
