"""A socket that never reads fills its own bounded queue and is closed with 4503; nobody else waits."""

from __future__ import annotations

import asyncio
import json
import socket
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import StartNode
from tests.edge.client import authed, init_data, request


async def test_a_client_that_never_reads_is_closed_with_4503_and_the_others_keep_their_pace(
    start_node: StartNode,
) -> None:
    async with start_node(send_queue_frames=32, rate_limit=100_000.0, rate_burst=100_000) as node:
        healthy, _ = await authed(node, 4501)
        # The slow client: its library stops reading from the socket once one frame waits unread, and
        # the kernel buffers are kept small, so the server's writes stall almost at once.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", int(node.url.rsplit(":", 1)[1])))
        slow = await connect(node.ws_url, sock=raw, max_queue=1, open_timeout=5)
        await slow.send(json.dumps({"t": "auth", "id": 0, "init_data": init_data(4502)}))
        ping = json.dumps({"t": "ping", "id": "p" * 64})  # the longest id: every pong echoes it
        round_trips: list[float] = []
        code = None
        try:
            for i in range(20_000):  # replies it never reads
                await slow.send(ping)
                if i % 100 == 0:
                    started = time.perf_counter()
                    assert (await request(healthy, {"t": "ping", "id": i}))["t"] == "pong"
                    round_trips.append(time.perf_counter() - started)
            async with asyncio.timeout(15):  # not closed while sending: it must be by now
                while True:
                    await slow.recv()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
        assert code == 4503, code
        round_trips.sort()
        assert round_trips and round_trips[len(round_trips) // 2] < 0.2  # the healthy socket kept its pace
        assert (await request(healthy, {"t": "ping", "id": "after"}))["t"] == "pong"
        await healthy.close()
