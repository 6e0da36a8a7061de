"""The fan-out ceiling: the ``websockets`` library's own server doing ``broadcast``.

Run by ``loadtest/bench_broadcast.py`` as a child process. It accepts WebSocket connections on
``--port``, answers every frame a client sends with ``{"t":"ok"}`` (so clients can do their
auth/subscribe exchange as with Croupier), and on each line ``broadcast M`` read from stdin
sends the benchmark's event M times to every connection with ``websockets.broadcast``, then
prints ``sent``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

EVENT = (
    '{"t":"round","game":"dice","round":-1,"phase":"bench","seed_hash":"'
    + "0" * 64
    + '","closes_at":0,"ch":"game:dice","offset":0,"epoch":"bench","ts":0}'
)


async def main(port: int) -> None:
    connections: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        connections.add(connection)
        try:
            async for _ in connection:
                await connection.send('{"t":"ok"}')
        except ConnectionClosed:
            pass  # the benchmark's clients just drop their sockets
        finally:
            connections.discard(connection)

    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None, backlog=4096,
                     subprotocols=["croupier.v1.json"]):  # type: ignore[list-item]  # fmt: skip
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command, _, count = line.decode().partition(" ")
            if command == "broadcast":
                for i in range(int(count)):
                    broadcast(connections, EVENT)
                    if i % 10 == 9:
                        await asyncio.sleep(0)  # let the loop flush, as a server doing other work would
                print("sent", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(main(parser.parse_args().port))
