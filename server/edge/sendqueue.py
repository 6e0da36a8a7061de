"""A bounded per-socket queue of encoded frames, drained by one writer task.

Producers (replies, broadcasts) never await a socket: :meth:`SendQueue.put` appends the
already-encoded frame and returns at once. When a socket cannot keep up and the queue
holds ``limit`` frames, the queue is dropped and the socket is closed with 4503: the
client reconnects and resumes, and nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from protocol import CloseCode

log = logging.getLogger(__name__)

Frame = bytes | str
SendFrame = Callable[[Frame], Awaitable[None]]
"""Writes one frame; raises ``ConnectionError`` (an ``OSError``) when the peer is gone."""
CloseSocket = Callable[[int, str], Awaitable[None]]
"""Sends the close frame; raises ``ConnectionError`` when the peer is gone."""


YIELD_EVERY = 8
"""Frames a writer sends before it lets the other tasks of the event loop run."""


class SendQueue:
    """Frames waiting for one socket, in order, followed by at most one close."""

    def __init__(self, send: SendFrame, close: CloseSocket, *, limit: int) -> None:
        self._send = send
        self._close_socket = close
        self._limit = limit
        self._frames: deque[Frame] = deque()
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._sending = False

    @property
    def closing(self) -> bool:
        """True once a close was queued: further frames are dropped."""
        return self._close is not None

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def fill(self) -> float:
        """How full the queue is: 0.0 empty, 1.0 at the limit."""
        return len(self._frames) / self._limit

    def start(self) -> asyncio.Task[None]:
        """Start the writer task; it ends after the close was sent or the socket failed."""
        self._writer = asyncio.create_task(self._run(), name="ws-writer")
        return self._writer

    def put(self, frame: Frame) -> bool:
        """Queue ``frame``; return False if it was dropped (closing, or the queue overflowed)."""
        if self._close is not None:
            return False
        if len(self._frames) >= self._limit:
            self._overflow()
            return False
        self._frames.append(frame)
        self._wakeup.set()
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then close the socket with ``code``."""
        if self._close is None:
            self._close = (code, reason)
            self._wakeup.set()

    async def wait_closed(self, grace: float) -> None:
        """Wait for the writer to finish, cancelling it after ``grace`` seconds."""
        if self._writer is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._writer), grace)
        if not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    def _overflow(self) -> None:
        log.info("send queue overflow (%d frames): closing the socket with 4503", len(self._frames))
        self._frames.clear()
        self._close = (CloseCode.TOO_SLOW, "send queue overflow")
        if self._sending and self._writer is not None:
            # The writer is stuck in a send to a socket that does not read: stop waiting for it.
            self._writer.cancel()
            self._writer = asyncio.create_task(self._send_close(), name="ws-close")
        self._wakeup.set()

    async def _run(self) -> None:
        sent = 0
        try:
            while True:
                if self._frames:
                    frame = self._frames.popleft()
                    self._sending = True
                    try:
                        await self._send(frame)
                    finally:
                        self._sending = False
                    sent += 1
                    if sent % YIELD_EVERY == 0:
                        # A send into a socket with room completes without suspending: without this, one
                        # writer would drain its whole queue in one go, and a broadcast to thousands of
                        # sockets would hold the event loop (no reads, no pings) for seconds.
                        await asyncio.sleep(0)
                    continue
                if self._close is not None:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
        except (OSError, RuntimeError) as exc:  # peer gone: nothing left to deliver to
            log.debug("socket send failed: %s", exc)
            self._frames.clear()
            return
        await self._send_close()

    async def _send_close(self) -> None:
        assert self._close is not None
        code, reason = self._close
        with contextlib.suppress(OSError, RuntimeError):
            await self._close_socket(code, reason)
