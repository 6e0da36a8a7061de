"""Local, reference-counted handler lists shared by the broker backends."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .base import Handler

log = logging.getLogger(__name__)


class LocalSubscription:
    """One handler on one channel; closing it may drop the upstream subscription."""

    def __init__(self, fanout: LocalFanout, channel: str, handler: Handler) -> None:
        self._fanout = fanout
        self.channel = channel
        self.handler = handler
        self._closed = False

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._fanout.remove(self)


class LocalFanout:
    """Handlers per channel on this node. ``on_first``/``on_last`` open and drop upstream."""

    def __init__(
        self,
        on_first: Callable[[str], Awaitable[None]] | None = None,
        on_last: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._handlers: dict[str, list[LocalSubscription]] = {}
        self._on_first = on_first
        self._on_last = on_last

    def channels(self) -> list[str]:
        return list(self._handlers)

    async def add(self, channel: str, handler: Handler) -> LocalSubscription:
        subscription = LocalSubscription(self, channel, handler)
        subscribers = self._handlers.setdefault(channel, [])
        subscribers.append(subscription)
        if len(subscribers) == 1 and self._on_first is not None:
            try:
                await self._on_first(channel)
            except BaseException:
                await self.remove(subscription)
                raise
        return subscription

    async def remove(self, subscription: LocalSubscription) -> None:
        subscribers = self._handlers.get(subscription.channel)
        if subscribers is None or subscription not in subscribers:
            return
        subscribers.remove(subscription)
        if not subscribers:
            del self._handlers[subscription.channel]
            if self._on_last is not None:
                await self._on_last(subscription.channel)

    def deliver_now(self, channel: str, payload: bytes) -> None:
        """Call every handler of ``channel`` from a synchronous callback (the pub/sub reader); a handler
        that returns an awaitable has it run as a task."""
        for subscription in tuple(self._handlers.get(channel, ())):
            try:
                result = subscription.handler(channel, payload)
                if inspect.isawaitable(result):
                    asyncio.ensure_future(result).add_done_callback(_log_failure)
            except Exception:
                log.exception("broker handler failed on channel %s", channel)

    async def deliver(self, channel: str, payload: bytes) -> None:
        """Call every handler of ``channel``; one failing handler does not stop the others."""
        for subscription in tuple(self._handlers.get(channel, ())):
            try:
                result = subscription.handler(channel, payload)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("broker handler failed on channel %s", channel)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("broker handler failed", exc_info=task.exception())
