"""In-process broker: the single-node default, no network."""

from __future__ import annotations

from ._fanout import LocalFanout, LocalSubscription
from .base import Handler


class MemoryBroker:
    """Delivers published payloads to this process's subscribers, in order."""

    def __init__(self) -> None:
        self._fanout = LocalFanout()

    async def publish(self, channel: str, payload: bytes) -> None:
        await self._fanout.deliver(channel, payload)

    async def publish_batch(self, messages: list[tuple[str, bytes]]) -> None:
        for channel, payload in messages:
            await self._fanout.deliver(channel, payload)

    async def subscribe(self, channel: str, handler: Handler) -> LocalSubscription:
        return await self._fanout.add(channel, handler)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._fanout = LocalFanout()
