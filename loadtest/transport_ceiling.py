"""The bare-transport fan-out ceiling: one prebuilt frame written straight to each uvloop transport.

Run by ``loadtest/bench_broadcast.py`` as a child process, beside ``broadcast_ceiling.py``. It does the
least a WebSocket server can: completes the same opening handshake (HTTP ``Upgrade``, ``Sec-WebSocket-Accept``,
the ``croupier.v1.json`` subprotocol), answers every frame a client sends with ``{"t":"ok"}`` (so the clients
do their auth/subscribe exchange as with Croupier), and on each line ``broadcast M`` read from stdin writes
the benchmark's event, framed once, M times to every transport (yielding to the loop every 10 events, as
the ``websockets`` ceiling does), then prints ``sent``. No per-socket queue, no protocol object, no
close handshake: what no Python server on uvloop writing a frame at a time can beat, measured by the same
client. With ``--batch N`` it writes N frames joined to each transport per loop turn (one write for N
events): the bound for a server that coalesces a burst's frames per socket, as Croupier does for the
events it reads from Redis in one turn (``server.broker.pubsub.BATCH`` of them at most).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import sys

import uvloop

from loadtest.broadcast_ceiling import EVENT

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def text_frame(payload: bytes) -> bytes:
    """An unmasked server text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


FRAME = text_frame(EVENT.encode())
OK = text_frame(b'{"t":"ok"}')


class Connection(asyncio.Protocol):
    """One socket: the handshake, then an ``ok`` for every complete client frame."""

    def __init__(self, ready: set[asyncio.Transport]) -> None:
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.ready.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = bytes(self.buffer[:end]), self.buffer[end + 4 :]
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())  # the handshake's hash (RFC 6455)
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: croupier.v1.json"
                                 b"\r\n\r\n")  # fmt: skip
            self.upgraded = True
            self.ready.add(self.transport)
        while len(self.buffer) >= 2:  # client frames are masked: 2 bytes, the length's extension, 4 of mask
            length, offset = self.buffer[1] & 0x7F, 2
            if length == 126:
                length, offset = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                length, offset = int.from_bytes(self.buffer[2:10], "big"), 10
            size = offset + 4 + length
            if len(self.buffer) < size:
                return
            del self.buffer[:size]
            self.transport.write(OK)


async def main(port: int, batch: int) -> None:
    ready: set[asyncio.Transport] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(ready), "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command, _, count = line.decode().partition(" ")
        if command == "broadcast":
            if batch > 1:
                for first in range(0, int(count), batch):
                    joined = FRAME * min(batch, int(count) - first)
                    for transport in ready:
                        transport.write(joined)
                    await asyncio.sleep(0)
            else:
                for i in range(int(count)):
                    for transport in ready:
                        transport.write(FRAME)
                    if i % 10 == 9:
                        await asyncio.sleep(0)  # let the loop flush, as a server doing other work would
            print("sent", flush=True)
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1, help="frames joined into one write per socket")
    args = parser.parse_args()
    uvloop.run(main(args.port, args.batch))
