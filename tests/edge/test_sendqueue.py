"""The bounded send queue: order, close after pending frames, 4503 on overflow without waiting."""

from __future__ import annotations

import asyncio

from server.edge.frame import Frame
from server.edge.sendqueue import SendQueue


def text(message: str) -> Frame:
    return Frame(message.encode(), binary=False)


class FakeSocket:
    """Records the text of frames; ``blocked`` makes every send hang like a peer that never reads."""

    def __init__(self, blocked: bool = False) -> None:
        self.frames: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.blocked = blocked

    async def send(self, frame: Frame) -> None:
        if self.blocked:
            await asyncio.Event().wait()
        self.frames.append(frame.data.decode())

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_frames_go_out_in_order_then_the_close() -> None:
    sock = FakeSocket()
    queue = SendQueue(sock.send, sock.close, limit=10)
    for i in range(5):
        assert queue.put(text(str(i)))
    queue.close(4401, "unauthorized")
    assert not queue.put(text("late"))
    await queue.wait_closed(grace=1)
    assert sock.frames == ["0", "1", "2", "3", "4"]
    assert sock.closed == (4401, "unauthorized")


async def test_overflow_closes_4503_without_waiting_for_a_stuck_peer() -> None:
    sock = FakeSocket(blocked=True)
    queue = SendQueue(sock.send, sock.close, limit=4)
    assert queue.put(text("first"))
    for _ in range(3):
        await asyncio.sleep(0)  # the writer takes "first" and hangs in send
    results = [queue.put(text("x")) for _ in range(5)]  # returns at once: put never awaits the socket
    assert results == [True, True, True, True, False]
    await queue.wait_closed(grace=1)
    assert sock.closed is not None and sock.closed[0] == 4503
    assert len(queue) == 0
    assert not queue.put(text("y"))


async def test_a_vanished_peer_ends_the_writer_quietly() -> None:
    async def broken(frame: Frame) -> None:
        raise ConnectionError("gone")

    closed: list[int] = []

    async def close(code: int, reason: str) -> None:
        closed.append(code)

    queue = SendQueue(broken, close, limit=4)
    assert queue.put(text("x"))
    await queue.wait_closed(grace=1)
    assert closed == []
    assert queue.closing and not queue.put(text("y"))  # later frames are dropped, no writer restarts


async def test_a_writer_lets_other_tasks_run_while_it_drains_a_long_queue() -> None:
    """Sends that never suspend (a socket with room) must not let one writer hold the event loop."""
    sock = FakeSocket()
    queue = SendQueue(sock.send, sock.close, limit=1000)
    for i in range(200):
        queue.put(text(f"frame {i}"))
    seen_by_neighbour: list[int] = []

    async def neighbour() -> None:
        for _ in range(5):
            seen_by_neighbour.append(len(sock.frames))
            await asyncio.sleep(0)

    await asyncio.gather(neighbour(), asyncio.sleep(0.05))
    queue.close(1000)
    await queue.wait_closed(grace=1)
    assert len(sock.frames) == 200
    assert any(0 < count < 200 for count in seen_by_neighbour), seen_by_neighbour  # it ran mid-drain


async def test_an_idle_queue_holds_no_writer_task_and_wakes_for_the_next_frame() -> None:
    sock = FakeSocket()
    queue = SendQueue(sock.send, sock.close, limit=10)
    tasks_before = len(asyncio.all_tasks())
    assert queue.put(text("a"))
    await asyncio.sleep(0.01)
    assert sock.frames == ["a"] and len(asyncio.all_tasks()) == tasks_before  # the writer ended
    assert queue.put(text("b")) and queue.put(text("c"))
    await asyncio.sleep(0.01)
    assert sock.frames == ["a", "b", "c"] and len(asyncio.all_tasks()) == tasks_before
    queue.close(1000, "bye")  # a close with nothing queued still goes out
    await queue.wait_closed(grace=1)
    assert sock.closed == (1000, "bye")


async def test_a_socket_with_room_is_written_at_once_and_order_holds_when_it_has_none() -> None:
    sock = FakeSocket()
    room = [True]
    written_now: list[str] = []

    def send_now(frame: Frame) -> bool:
        if room[0]:
            written_now.append(frame.data.decode())
        return room[0]

    queue = SendQueue(sock.send, sock.close, limit=10, send_now=send_now)
    tasks_before = len(asyncio.all_tasks())
    assert queue.put(text("a")) and queue.put(text("b"))
    assert written_now == ["a", "b"] and len(asyncio.all_tasks()) == tasks_before  # no writer needed
    room[0] = False  # the transport is full: frames wait for the writer, which waits for room
    assert queue.put(text("c"))
    room[0] = True
    assert queue.put(text("d"))  # "c" is still queued: "d" must not overtake it
    await asyncio.sleep(0.01)
    assert written_now == ["a", "b"] and sock.frames == ["c", "d"]
    assert queue.put(text("e"))  # the queue drained and the writer ended: straight out again
    assert written_now == ["a", "b", "e"]
