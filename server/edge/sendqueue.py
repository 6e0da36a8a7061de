"""A bounded per-socket queue of encoded frames, drained by a writer task while it holds any.

Producers (replies, broadcasts) never await a socket: :meth:`SendQueue.put` appends the
already-encoded frame and returns at once. When a socket cannot keep up and the queue
holds ``limit`` frames, the queue is dropped and the socket is closed with 4503: the
client reconnects and resumes, and nobody else waits for it.

A frame for a socket with nothing queued and room in its transport is taken at once
(``send_now``: the frame's prebuilt wire bytes, written to the transport at the end of the loop's
turn with the socket's other frames of the turn). Otherwise it
waits in the queue for a writer task, which starts when the first frame waits and ends
when the queue is empty: an idle socket costs no task and no buffer (thousands of idle
sockets would otherwise each hold a parked task, an event and an empty deque: about 2 KiB
apiece), and a broadcast wakes no task per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from protocol import CloseCode

from ..metrics import CLOSES, DROPPED, OVERFLOWS
from .frame import Frame

log = logging.getLogger(__name__)

SendFrame = Callable[[Frame], Awaitable[None]]
"""Writes one frame; raises ``ConnectionError`` (an ``OSError``) when the peer is gone."""
CloseSocket = Callable[[int, str], Awaitable[None]]
"""Sends the close frame; raises ``ConnectionError`` when the peer is gone."""
SendNow = Callable[[Frame], bool]
"""Takes one frame for writing now if the socket has room; False if it must wait (then nothing was taken)."""


YIELD_EVERY = 8
"""Frames a writer sends before it lets the other tasks of the event loop run."""


class SendQueue:
    """Frames waiting for one socket, in order, followed by at most one close."""

    __slots__ = ("_close", "_close_socket", "_frames", "_limit", "_send", "_send_now", "_sending", "_writer")

    def __init__(self, send: SendFrame, close: CloseSocket, *, limit: int, send_now: SendNow | None = None) -> None:
        self._send = send
        self._send_now = send_now
        self._close_socket = close
        self._limit = limit
        self._frames: deque[Frame] | None = None  # allocated while frames wait
        self._close: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None  # running while frames (or the close) wait
        self._sending = False

    @property
    def closing(self) -> bool:
        """True once a close was queued: further frames are dropped."""
        return self._close is not None

    def __len__(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    @property
    def fill(self) -> float:
        """How full the queue is: 0.0 empty, 1.0 at the limit."""
        return len(self) / self._limit

    def put(self, frame: Frame) -> bool:
        """Queue ``frame``; return False if it was dropped (closing, or the queue overflowed)."""
        if self._close is not None:
            DROPPED["closing"].n += 1
            return False
        frames = self._frames
        if frames is None:
            if self._writer is None and self._send_now is not None and self._send_now(frame):
                return True  # nothing waiting and the socket had room: written, no task to wake
            frames = self._frames = deque()
        elif len(frames) >= self._limit:
            self._overflow()
            return False
        frames.append(frame)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._run())
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then close the socket with ``code``."""
        if self._close is None:
            self._close = (code, reason)
            if self._writer is None:
                self._writer = asyncio.get_running_loop().create_task(self._run())

    async def wait_closed(self, grace: float) -> None:
        """Wait for the close to be sent, cancelling the writer after ``grace`` seconds."""
        writer = self._writer
        if writer is None:
            return
        if not writer.done():
            await asyncio.wait((writer,), timeout=grace)
        writer = self._writer  # an overflow may have replaced it with the close sender
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def _overflow(self) -> None:
        log.info("send queue overflow (%d frames): closing the socket with 4503", len(self))
        OVERFLOWS.n += 1
        DROPPED["overflow"].n += len(self) + 1  # what was queued, and the frame that did not fit
        self._frames = None
        self._close = (CloseCode.TOO_SLOW, "send queue overflow")
        if self._sending and self._writer is not None:
            # The writer is stuck in a send to a socket that does not read: stop waiting for it.
            self._writer.cancel()
            self._writer = asyncio.get_running_loop().create_task(self._send_close())

    async def _run(self) -> None:
        sent = 0
        try:
            while self._frames:
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
        except (OSError, RuntimeError) as exc:  # peer gone: nothing left to deliver to
            log.debug("socket send failed: %s", exc)
            self._frames = None
            self._close = (1006, "peer gone")  # 1006: closed without a close frame; later frames drop
            CLOSES.of(1006).n += 1
            return
        self._frames = None
        if self._close is None:
            self._writer = None  # idle: the next put starts a new writer
            return
        await self._send_close()

    async def _send_close(self) -> None:
        assert self._close is not None
        code, reason = self._close
        CLOSES.of(code).n += 1
        with contextlib.suppress(OSError, RuntimeError):
            await self._close_socket(code, reason)
