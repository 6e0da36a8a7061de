"""The trimmed uvicorn WebSocket protocol and what an idle socket holds on a real node."""

from __future__ import annotations

import asyncio
import inspect
import re

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from server.edge.wsprotocol import Flag, Inbox
from tests.conftest import RunningNode
from tests.edge.client import authed, request


async def test_inbox_is_fifo_and_get_waits_for_the_next_item() -> None:
    inbox: Inbox[int] = Inbox()
    assert inbox.empty()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await inbox.get() == 1 and await inbox.get() == 2 and inbox.empty()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not getter.done()
    inbox.put_nowait(3)
    assert await asyncio.wait_for(getter, 1) == 3


async def test_inbox_hands_an_item_to_the_next_getter_when_the_woken_one_is_cancelled() -> None:
    inbox: Inbox[str] = Inbox()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("only")  # wakes `first`...
    first.cancel()  # ...which leaves before taking it
    assert await asyncio.wait_for(second, 1) == "only"
    assert inbox.empty()


async def test_flag_wait_returns_at_once_when_set_and_wakes_every_waiter() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert await flag.wait() is True
    flag.clear()
    assert not flag.is_set()
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    flag.set()  # a cancelled waiter is not woken


def test_uvicorn_uses_no_more_of_the_queue_and_the_flag_than_they_offer() -> None:
    """If a uvicorn upgrade calls something else on them, this names it before a socket breaks."""
    source = inspect.getsource(WebSocketsSansIOProtocol)
    used_queue = set(re.findall(r"self\.queue\.(\w+)", source))
    used_flag = set(re.findall(r"self\.writable\.(\w+)", source))
    assert used_queue and used_queue <= {name for name in dir(Inbox) if not name.startswith("_")}, used_queue
    assert used_flag and used_flag <= {name for name in dir(Flag) if not name.startswith("_")}, used_flag
    assert "self.response" not in source.split("self.handshake_complete = True", 1)[1].split("def ")[1:][-1]


async def test_an_idle_socket_holds_one_task_and_still_answers(node_server: RunningNode) -> None:
    """Authenticated and subscribed, then idle: uvicorn's task for the connection and nothing more
    (no parked writer), and the socket answers at once when spoken to again."""
    sockets = []
    for user_id in range(7001, 7011):
        ws, _ = await authed(node_server, user_id)
        assert (await request(ws, {"t": "subscribe", "id": 2, "game": "dice"}))["t"] == "subscribed"
        sockets.append(ws)
    await asyncio.sleep(0.2)
    # This process also runs the clients (websockets' tasks) and the node's own tasks.
    names = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]  # type: ignore[union-attr]
    assert names.count("WebSocketsSansIOProtocol.run_asgi") == len(sockets), names
    assert not [name for name in names if name.startswith("SendQueue.")], names
    for ws in sockets:
        assert (await request(ws, {"t": "ping", "id": 3}))["t"] == "pong"
        await ws.close()
