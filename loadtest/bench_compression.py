"""Benchmark: permessage-deflate on crash rounds, bytes on the wire and the node's CPU and memory.

Chromium offers permessage-deflate on every WebSocket; ``CROUPIER_WS_COMPRESSION`` decides whether a
node accepts it. This measures what accepting costs and saves, with a real ``croupier serve`` serving
crash (bustabit's default curve: a tick every 100 ms while the multiplier climbs) and sockets
subscribed to it, every one offering what Chromium offers (``permessage-deflate;
client_max_window_bits``):

- bytes: one node with ``deflate``, four groups of sockets on the same rounds (JSON and MessagePack,
  offering deflate or not): every byte the node sends a socket after the handshake (frame headers,
  pings included), per socket and round. Also, for the same JSON frames, what compressing each one
  alone would make (no context takeover: the one way to compress a broadcast once for every socket).
- CPU and memory: for each codec, a node with ``off`` and a node with ``deflate``, N sockets of that
  codec: the node's CPU seconds over the same number of rounds, per frame delivered and per socket
  and round, and its resident memory per socket (after connecting minus before).

    .venv/bin/python -m loadtest.bench_compression --sockets 500 --rounds 3 --runs 3

Prints each run, then medians over the runs and the ratios deflate / off (rounds differ from node to
node, so compare per frame, or the same-round bytes of the first table).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import statistics
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec
import orjson
import uvloop

from loadtest.common import bench_database, node_process, process_cpu_seconds, tree_rss
from loadtest.rawws import text_frame
from server.auth import sign_init_data

CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"
SETTLE_GAP = 0.3
"""Seconds after a round's ``settled`` event before the counters are read: the pause between rounds (1.5 s
here) carries no frame, so every socket has got the round whole and nothing of the next."""
TYPICAL_FRAMES = 118
"""Frames of a typical crash round on the default curve: the median crash point, 1.98x, is reached after
~11.4 s, 114 ticks, plus the betting, running and settled events."""
NODE_ENV = {"CROUPIER_GAMES": "crash", "CROUPIER_BETTING_MS": "1000", "CROUPIER_ROUND_PAUSE_MS": "1500"}


class WireClient(asyncio.Protocol):
    """One socket: counts every byte and data frame the node sends after the handshake; decodes (inflating
    when deflate was negotiated) while ``decoding``, to read replies; answers pings."""

    def __init__(self, host: str, port: int, subprotocol: str, offer: bool) -> None:
        self.binary = subprotocol.endswith("msgpack")
        self.request_line = (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
            + (f"Sec-WebSocket-Extensions: {CHROMIUM_OFFER}\r\n" if offer else "")
            + "\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deflate = False
        self.wire = 0
        self.frames = 0
        self.decoding = True
        self.on_message: Callable[[dict[str, Any], bytes], None] | None = None
        self._inflate = zlib.decompressobj(-15)
        self._buffer = bytearray()
        self._waiting: asyncio.Future[dict[str, Any]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request_line)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"connection lost during the upgrade: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).decode("latin-1")
            del buffer[: end + 4]
            if " 101 " not in head.split("\r\n", 1)[0]:
                self.upgraded.set_exception(ConnectionError(head.split("\r\n", 1)[0]))
                return
            self.deflate = "permessage-deflate" in head.lower()
            self.upgraded.set_result(None)
            self.wire += len(buffer)
        else:
            self.wire += len(data)
        self._frames()

    def _frames(self) -> None:
        buffer, position = self._buffer, 0
        while len(buffer) - position >= 2:
            first, length, header = buffer[position], buffer[position + 1] & 0x7F, 2
            if length == 126:
                if len(buffer) - position < 4:
                    break
                length, header = struct.unpack_from("!H", buffer, position + 2)[0], 4
            elif length == 127:
                if len(buffer) - position < 10:
                    break
                length, header = struct.unpack_from("!Q", buffer, position + 2)[0], 10
            end = position + header + length
            if end > len(buffer):
                break
            opcode, payload = first & 0x0F, bytes(buffer[position + header : end])
            if opcode == 9:  # keepalive ping: answer, or the node closes the socket
                assert self.transport is not None
                self.transport.write(text_frame(payload, opcode=10))
            elif opcode in (1, 2):
                self.frames += 1
                if self.decoding:
                    self._decode(payload, compressed=bool(first & 0x40))
            position = end
        del buffer[:position]

    def _decode(self, payload: bytes, *, compressed: bool) -> None:
        if compressed:  # every compressed frame must pass through the inflater, in order, to keep its context
            payload = self._inflate.decompress(payload + b"\x00\x00\xff\xff")
        message: dict[str, Any] = msgspec.msgpack.decode(payload) if self.binary else orjson.loads(payload)
        if self.on_message is not None:
            self.on_message(message, payload)
        if "ch" not in message and self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(message)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` in the socket's codec and wait for the next reply."""
        self._waiting = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        if self.binary:
            self.transport.write(text_frame(msgspec.msgpack.encode(message), opcode=2))
        else:
            self.transport.write(text_frame(orjson.dumps(message)))
        try:
            return await asyncio.wait_for(self._waiting, 30)
        finally:
            self._waiting = None


async def open_socket(port: int, subprotocol: str, offer: bool, token: str, user_id: int) -> WireClient:
    """A socket authenticated as ``user_id`` and subscribed to crash; it stops decoding after that."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: WireClient("127.0.0.1", port, subprotocol, offer),
                                             "127.0.0.1", port)  # fmt: skip
    await client.upgraded
    welcome = await client.request({"t": "auth", "id": 1, "init_data": sign_init_data(token, user_id=user_id)})
    assert welcome["t"] == "welcome", welcome
    subscribed = await client.request({"t": "subscribe", "id": 2, "game": "crash"})
    assert subscribed["t"] == "subscribed", subscribed
    client.decoding = False
    return client


@dataclass
class Rounds:
    """The observer's view: settled rounds, and the JSON payloads of each round's events in order."""

    settled: int = 0
    ticks: int = 0
    payloads: list[bytes] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def see(self, message: dict[str, Any], payload: bytes) -> None:
        if message.get("ch") != "game:crash":
            return
        self.payloads.append(payload)
        self.ticks += message["t"] == "tick"
        if message["t"] == "round" and message.get("phase") == "settled":
            self.settled += 1
            self.changed.set()

    async def next_settled(self) -> None:
        """Wait for the next round to settle, then for the pause after it to carry every last frame."""
        seen = self.settled
        while self.settled == seen:
            self.changed.clear()
            await self.changed.wait()
        await asyncio.sleep(SETTLE_GAP)


@dataclass
class Window:
    """What the sockets got and the node spent over some whole rounds."""

    rounds: int
    ticks: int
    wire: list[int]
    frames: list[int]
    cpu: float


async def measure(pid: int, observer: WireClient, rounds: Rounds, clients: list[WireClient], count: int) -> Window:
    """From the end of the next round to the end of ``count`` more: bytes, frames and node CPU."""
    await rounds.next_settled()
    wire, frames, ticks = [c.wire for c in clients], [c.frames for c in clients], rounds.ticks
    cpu = process_cpu_seconds(pid)
    rounds.payloads.clear()
    for _ in range(count):
        await rounds.next_settled()
    return Window(
        rounds=count,
        ticks=rounds.ticks - ticks,
        wire=[c.wire - w for c, w in zip(clients, wire, strict=True)],
        frames=[c.frames - f for c, f in zip(clients, frames, strict=True)],
        cpu=process_cpu_seconds(pid) - cpu,
    )


async def observe(port: int, token: str) -> tuple[WireClient, Rounds]:
    rounds = Rounds()
    observer = await open_socket(port, "croupier.v1.json", False, token, 990_000)
    observer.decoding, observer.on_message = True, rounds.see
    return observer, rounds


def alone_sizes(payloads: list[bytes]) -> tuple[int, int]:
    """The JSON payloads, and the same as MessagePack, each compressed alone (raw deflate, window 12 bits,
    framing overhead left out): total bytes."""
    json_total = msgpack_total = 0
    for payload in payloads:
        for data, kind in ((payload, "json"), (msgspec.msgpack.encode(orjson.loads(payload)), "msgpack")):
            encoder = zlib.compressobj(6, zlib.DEFLATED, -12, 5)
            size = len(encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)) - 4
            if kind == "json":
                json_total += size
            else:
                msgpack_total += size
    return json_total, msgpack_total


GROUPS = (("croupier.v1.json", False), ("croupier.v1.json", True), ("croupier.v1.msgpack", False),
          ("croupier.v1.msgpack", True))  # fmt: skip


async def bytes_run(url: str, pid: int, token: str, per_group: int, count: int) -> dict[str, float]:
    """Per socket and round, on the same rounds: bytes for each (codec, offer) group, and compressed alone."""
    port = urlsplit(url).port or 80
    observer, rounds = await observe(port, token)
    groups = [[await open_socket(port, sub, offer, token, 100_000 + g * 1000 + i) for i in range(per_group)]
              for g, (sub, offer) in enumerate(GROUPS)]  # fmt: skip
    assert all(c.deflate == offer for group, (_, offer) in zip(groups, GROUPS, strict=True) for c in group)
    window = await measure(pid, observer, rounds, [c for group in groups for c in group], count)
    result = {"ticks/round": window.ticks / count}
    for g, (sub, offer) in enumerate(GROUPS):
        wire = window.wire[g * per_group : (g + 1) * per_group]
        result[f"{sub.rsplit('.', 1)[1]} {'deflate' if offer else 'plain'}"] = statistics.mean(wire) / count
    json_alone, msgpack_alone = alone_sizes(rounds.payloads)
    result["json alone"], result["msgpack alone"] = json_alone / count, msgpack_alone / count
    for client in [observer, *(c for group in groups for c in group)]:
        assert client.transport is not None
        client.transport.close()
    return result


async def cpu_run(url: str, pid: int, token: str, subprotocol: str, sockets: int, count: int) -> dict[str, float]:
    """N sockets of one codec, all offering deflate: the node's CPU and memory."""
    port = urlsplit(url).port or 80
    observer, rounds = await observe(port, token)
    await rounds.next_settled()
    rss = tree_rss(pid)
    clients: list[WireClient] = []
    for start in range(0, sockets, 100):
        clients += await asyncio.gather(*(open_socket(port, subprotocol, True, token, 200_000 + i)
                                          for i in range(start, min(sockets, start + 100))))  # fmt: skip
    await asyncio.sleep(1.0)
    per_socket_rss = (tree_rss(pid) - rss) / sockets
    window = await measure(pid, observer, rounds, clients, count)
    frames = sum(window.frames)
    for client in [observer, *clients]:
        assert client.transport is not None
        client.transport.close()
    return {
        "deflate": float(clients[0].deflate),
        "ticks/round": window.ticks / count,
        "frames/socket/round": frames / sockets / count,
        "bytes/socket/round": sum(window.wire) / sockets / count,
        "cpu s": window.cpu,
        "cpu us/frame": window.cpu / frames * 1e6,
        "cpu ms/socket/round": window.cpu / sockets / count * 1e3,
        "rss KiB/socket": per_socket_rss / 1024,
    }


def show(label: str, figures: dict[str, float]) -> None:
    print(f"  {label}: " + ", ".join(f"{name} {value:,.2f}" for name, value in figures.items()), flush=True)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=500, help="sockets of the CPU runs (default 500)")
    parser.add_argument("--per-group", type=int, default=10, help="sockets per group of the bytes run")
    parser.add_argument("--rounds", type=int, default=3, help="whole crash rounds measured per node (default 3)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--codecs", nargs="+", default=["json", "msgpack"], choices=["json", "msgpack"])
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: embedded)")
    args = parser.parse_args()
    token = f"{secrets.randbelow(10**9) + 10**9}:{secrets.token_urlsafe(26)}"
    print(f"crash, default curve; {args.rounds} rounds per node; node, PostgreSQL and this client share the machine")
    bytes_runs: list[dict[str, float]] = []
    cpu_runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with bench_database(args.database_url) as database_url:
        for run in range(1, args.runs + 1):
            print(f"run {run}", flush=True)
            with node_process(database_url, token, CROUPIER_WS_COMPRESSION="deflate", **NODE_ENV) as (url, pid):
                bytes_runs.append(uvloop.run(bytes_run(url, pid, token, args.per_group, args.rounds)))
            show("bytes per socket and round, same rounds", bytes_runs[-1])
            for codec in args.codecs:
                for setting in ("off", "deflate"):
                    with node_process(database_url, token, CROUPIER_WS_COMPRESSION=setting, **NODE_ENV) as (url, pid):
                        figures = uvloop.run(cpu_run(url, pid, token, f"croupier.v1.{codec}", args.sockets,
                                                     args.rounds))  # fmt: skip
                    cpu_runs.setdefault((codec, setting), []).append(figures)
                    show(f"{codec}, {setting}, {args.sockets} sockets", figures)
    summarize(bytes_runs, cpu_runs, args.codecs)


def summarize(bytes_runs: list[dict[str, float]], cpu_runs: dict[tuple[str, str], list[dict[str, float]]],
              codecs: list[str]) -> None:  # fmt: skip
    """Medians over the runs of what does not depend on how long each run's rounds were: bytes per frame (a
    round is 3 round events and its ticks), ratios on the same rounds, CPU per frame, memory per socket."""
    print(f"medians of {len(bytes_runs)} runs")
    variants = [name for name in bytes_runs[0] if name != "ticks/round"]
    per_frame = {name: statistics.median(run[name] / (run["ticks/round"] + 3) for run in bytes_runs)
                 for name in variants}  # fmt: skip
    to_plain = {name: statistics.median(run[name] / run["json plain"] for run in bytes_runs) for name in variants}
    for name in variants:
        print(f"  {name}: {per_frame[name]:,.1f} bytes per frame, {per_frame[name] * TYPICAL_FRAMES:,.0f} per "
              f"typical round ({TYPICAL_FRAMES} frames), {to_plain[name]:.0%} of json plain"
              + (" (payload only, each frame compressed by itself)" if name.endswith("alone") else ""))  # fmt: skip
    for codec in ("json", "msgpack"):
        ratio = statistics.median(run[f"{codec} deflate"] / run[f"{codec} plain"] for run in bytes_runs)
        print(f"  {codec}: deflate sends {ratio:.1%} of the plain bytes on the same rounds")
    for codec in codecs:
        pairs = list(zip(cpu_runs[(codec, "off")], cpu_runs[(codec, "deflate")], strict=True))
        off, on = medians([off for off, _ in pairs]), medians([on for _, on in pairs])
        for setting, figures in (("off", off), ("deflate", on)):
            print(f"  {codec}, {setting}: CPU {figures['cpu us/frame']:.1f} us per frame delivered, memory "
                  f"{figures['rss KiB/socket']:.1f} KiB per socket")  # fmt: skip
        cpu = statistics.median(on["cpu us/frame"] / off["cpu us/frame"] for off, on in pairs)
        memory = statistics.median(on["rss KiB/socket"] / off["rss KiB/socket"] for off, on in pairs)
        print(f"  {codec}: deflate / off (median of the runs' ratios): CPU per frame {cpu:.2f}x, memory per "
              f"socket {memory:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
