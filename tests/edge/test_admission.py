"""Connection admission over real sockets: the handshake timeout closes stalled connections, the
unauthenticated cap and the per-address rate refuse new ones at once, X-Forwarded-For counts only
from a trusted proxy, and health probes keep working; a real ``croupier serve`` does all of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.conftest import TEST_BOT_TOKEN, RunningNode, StartNode
from tests.edge.client import authed, init_data, open_socket, request
from tests.services import clean_env, node_process, wait_ready, world_traversable_tempdir

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def port_of(node: RunningNode) -> int:
    return int(node.url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A plain TCP connection to the node, closed after."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> float:
    """Read (and drop) until the server closes the connection; the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        try:
            while await reader.read(4096):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


async def dribble(writer: asyncio.StreamWriter, data: bytes, every: float = 0.2) -> None:
    """Send ``data`` one byte every ``every`` seconds, until done or the server closes."""
    with contextlib.suppress(OSError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


async def refused_status(node: RunningNode, headers: dict[str, str] | None = None) -> int:
    """Open a WebSocket that must be refused; the HTTP status it was refused with."""
    with pytest.raises(InvalidStatus) as refused:
        ws = await connect(node.ws_url, additional_headers=headers, open_timeout=5)
        await ws.close()
    return refused.value.response.status_code


async def ws_with(node: RunningNode, headers: dict[str, str] | None = None) -> ClientConnection:
    return await connect(node.ws_url, additional_headers=headers, open_timeout=5)


async def test_stalled_connections_are_closed_by_the_handshake_timeout_and_a_real_client_is_not(
    start_node: StartNode,
) -> None:
    async with start_node(handshake_timeout=0.5) as node:
        player, _ = await authed(node, 5101)  # authenticated before the stalled ones: the timeout is not its
        async with raw(port_of(node)) as (silent, _), raw(port_of(node)) as (dribbled, dribbler):
            writing = asyncio.create_task(dribble(dribbler, UPGRADE))  # one header byte every 0.2 s
            waited = await asyncio.gather(closed_by_server(silent, 3.0), closed_by_server(dribbled, 3.0))
            assert not writing.done()  # closed mid-headers, not after it sent them all
            writing.cancel()
        assert all(0.3 <= seconds < 1.5 for seconds in waited), waited
        # The authenticated socket outlived the handshake timeout many times over and still plays.
        assert (await request(player, {"t": "ping", "id": "after"}))["t"] == "pong"
        late, _ = await authed(node, 5102)  # and clients keep connecting and authenticating normally
        assert (await request(late, {"t": "ping", "id": 1}))["t"] == "pong"
        await asyncio.sleep(0.7)  # past the handshake timeout: an accepted socket is the session's now
        assert (await request(late, {"t": "ping", "id": 2}))["t"] == "pong"
        await player.close()
        await late.close()


async def test_a_keep_alive_http_connection_dribbling_its_next_request_is_closed(start_node: StartNode) -> None:
    async with start_node(handshake_timeout=0.5) as node, raw(port_of(node)) as (reader, writer):
        writer.write(HEALTHZ)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        writing = asyncio.create_task(dribble(writer, HEALTHZ))  # uvicorn's keep-alive timer stops at its first byte
        assert await closed_by_server(reader, 3.0) < 1.5
        writing.cancel()


async def test_a_keep_alive_http_connection_may_upgrade_and_then_outlive_the_handshake_timeout(
    start_node: StartNode,
) -> None:
    async with start_node(handshake_timeout=0.5) as node:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port_of(node)))
        await loop.sock_sendall(sock, HEALTHZ)
        answer = b""
        while not answer.endswith(b"}"):  # the JSON body's end
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        ws = await connect(node.ws_url, sock=sock, open_timeout=5)  # the same connection's next request
        await asyncio.sleep(0.8)  # past the handshake timeout armed for that request: it must not fire now
        assert (await request(ws, {"t": "auth", "id": 1, "init_data": init_data(5105)}))["t"] == "welcome"
        assert (await request(ws, {"t": "ping", "id": 2}))["t"] == "pong"
        await ws.close()


async def test_over_the_unauthenticated_cap_new_connections_are_refused_and_authenticated_ones_do_not_count(
    start_node: StartNode,
) -> None:
    async with start_node(max_unauthenticated=2, handshake_timeout=30.0, auth_timeout=30.0) as node:
        # Authenticated sockets leave the count: with a cap of 2, these two do not fill it.
        first, _ = await authed(node, 5201)
        second, _ = await authed(node, 5202)
        waiting = await open_socket(node)  # upgraded, not authenticated: counts (1)
        async with raw(port_of(node)):  # accepted, nothing sent: counts (2)
            started = time.monotonic()
            assert await refused_status(node) == 503
            assert time.monotonic() - started < 2.0  # at once, not at a timeout
            # The authenticated sockets do not notice.
            assert (await request(first, {"t": "ping", "id": 1}))["t"] == "pong"
            assert (await request(second, {"t": "ping", "id": 1}))["t"] == "pong"
            # The waiting socket authenticates: it leaves the count, and one more may connect.
            welcome = await request(waiting, {"t": "auth", "id": 1, "init_data": init_data(5203)})
            assert welcome["t"] == "welcome", welcome
            another = await open_socket(node)
            assert await refused_status(node) == 503  # full again: the silent one and `another`
            welcome = await request(another, {"t": "auth", "id": 1, "init_data": init_data(5204)})
            assert welcome["t"] == "welcome", welcome
        # The silent connection closed: its place is free once the server has seen it go.
        async with asyncio.timeout(5):
            while True:
                try:
                    last = await open_socket(node)
                    break
                except InvalidStatus as exc:
                    assert exc.response.status_code == 503
                    await asyncio.sleep(0.02)
        for ws in (first, second, waiting, another, last):
            await ws.close()


async def test_the_per_address_rate_refuses_the_connection_after_the_burst(start_node: StartNode) -> None:
    async with start_node(ip_connect_exempt=(), ip_connect_rate=0.01, ip_connect_burst=3) as node:
        sockets = [(await authed(node, 5501 + i))[0] for i in range(3)]
        started = time.monotonic()
        assert await refused_status(node) == 429
        assert time.monotonic() - started < 2.0
        async with raw(port_of(node)) as (reader, _):  # refused before it sends anything
            assert await closed_by_server(reader, 2.0) < 2.0
        for ws in sockets:  # the admitted ones are unaffected
            assert (await request(ws, {"t": "ping", "id": 1}))["t"] == "pong"
            await ws.close()


async def test_loopback_is_exempt_from_the_per_address_rate_by_default(start_node: StartNode) -> None:
    async with start_node(ip_connect_rate=0.01, ip_connect_burst=1) as node:
        sockets = [await open_socket(node) for _ in range(5)]
        for ws in sockets:
            await ws.close()


async def test_behind_a_trusted_proxy_x_forwarded_for_picks_the_bucket(start_node: StartNode) -> None:
    async with start_node(ip_connect_exempt=(), ip_connect_rate=0.01, ip_connect_burst=2,
                          trusted_proxies=("127.0.0.1/32",)) as node:  # fmt: skip
        a = {"X-Forwarded-For": "198.51.100.7"}
        b = {"X-Forwarded-For": "203.0.113.8"}
        opened = [await ws_with(node, a), await ws_with(node, a)]
        assert await refused_status(node, a) == 429
        opened += [await ws_with(node, b), await ws_with(node, b)]  # another client: a burst of its own
        assert await refused_status(node, b) == 429
        # A client cannot escape its bucket by forging entries left of the one the proxy appended.
        assert await refused_status(node, {"X-Forwarded-For": "192.0.2.1, 198.51.100.7"}) == 429
        # The proxy's own connections are not limited (plain HTTP through it neither).
        async with httpx.AsyncClient() as client:
            for _ in range(5):
                assert (await client.get(f"{node.url}/healthz", headers={"Connection": "close"})).status_code == 200
        for ws in opened:
            await ws.close()


async def test_an_untrusted_peers_x_forwarded_for_is_ignored(start_node: StartNode) -> None:
    async with start_node(ip_connect_exempt=(), ip_connect_rate=0.01, ip_connect_burst=2,
                          trusted_proxies=("10.0.0.0/8",)) as node:  # fmt: skip
        opened = [await ws_with(node, {"X-Forwarded-For": "198.51.100.1"}),
                  await ws_with(node, {"X-Forwarded-For": "198.51.100.2"})]  # fmt: skip
        assert await refused_status(node, {"X-Forwarded-For": "198.51.100.3"}) == 429  # all 127.0.0.1's
        for ws in opened:
            await ws.close()


async def test_health_probes_keep_working_and_a_kept_alive_http_connection_does_not_count(
    start_node: StartNode,
) -> None:
    # One keep-alive HTTP connection for every request.
    async with start_node(handshake_timeout=0.5, max_unauthenticated=1) as node, httpx.AsyncClient() as client:
        for _ in range(3):
            reply = await client.get(f"{node.url}/healthz")
            assert reply.status_code == 200 and reply.json()["status"] == "ok"
        # The kept-alive connection answered its request: it left the count, so a socket fits under a cap of 1.
        ws = await open_socket(node)
        assert (await request(ws, {"t": "auth", "id": 1, "init_data": init_data(5301)}))["t"] == "welcome"
        assert (await client.get(f"{node.url}/readyz")).status_code == 200
        await ws.close()


@pytest.fixture
def state_dir() -> Iterator[Path]:
    root = world_traversable_tempdir("croupier-admission-")
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


async def test_croupier_serve_closes_silent_connections_within_the_handshake_timeout(
    empty_database: str, state_dir: Path
) -> None:
    timeout = 1.0
    env = clean_env(CROUPIER_BOT_TOKEN=TEST_BOT_TOKEN, CROUPIER_DATA_DIR=str(state_dir), DATABASE_URL=empty_database,
                    CROUPIER_SEED_CHAIN_LENGTH="500", CROUPIER_HANDSHAKE_TIMEOUT=str(timeout))  # fmt: skip
    with node_process(env) as (_, port):
        await wait_ready(port)
        async with contextlib.AsyncExitStack() as stack:
            readers = [(await stack.enter_async_context(raw(port)))[0] for _ in range(50)]
            waited = await asyncio.gather(*(closed_by_server(reader, timeout + 1.0) for reader in readers))
        assert len(waited) == 50
        async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:  # and the node still serves
            await ws.send(json.dumps({"t": "auth", "id": 1, "init_data": init_data(5401)}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["t"] == "welcome"
