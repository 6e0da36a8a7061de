"""Graceful stop for ``croupier serve``: drain first, then let uvicorn close the sockets with 1012.

uvicorn on SIGTERM (or Ctrl-C) closes its listener and every WebSocket at once. A node behind a
load balancer should first say it is going (``/readyz`` 503), keep serving while the balancer
takes it out, and hand the games it drives to another node; only then close its sockets with
1012 so clients reconnect elsewhere and resume. :class:`DrainingServer` runs
:meth:`server.node.Node.drain` on the first signal and does uvicorn's own shutdown after it; a
second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first stop signal runs ``drain`` before the usual shutdown."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(config)
        self.drain = drain
        self._signal: int | None = None
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain is None or self._signal is not None or not self.started:
            super().handle_exit(sig, frame)  # no drain possible, or a second signal: stop now
            return
        self._signal = sig  # picked up by on_tick, in the event loop

    async def on_tick(self, counter: int) -> bool:
        if self._signal is not None and self._draining is None and self.drain is not None:
            self._draining = asyncio.create_task(self._drain_then_exit(self._signal, self.drain), name="drain")
        return await super().on_tick(counter)

    async def _drain_then_exit(self, sig: int, drain: Callable[[], Awaitable[None]]) -> None:
        try:
            await drain()
        except Exception:
            log.exception("drain failed; stopping anyway")
        super().handle_exit(sig, None)
