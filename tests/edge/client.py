"""A small test client speaking the v1 protocol over a real WebSocket."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.auth import TelegramUser, sign_init_data
from server.ledger import Ledger
from tests.conftest import TEST_BOT_TOKEN, RunningNode


def init_data(user_id: int = 1001, **kwargs: Any) -> str:
    return sign_init_data(TEST_BOT_TOKEN, user_id=user_id, **kwargs)


async def open_socket(node: RunningNode, subprotocols: list[str] | None = None) -> ClientConnection:
    return await connect(node.ws_url, subprotocols=subprotocols, open_timeout=5)  # type: ignore[arg-type]


async def send(ws: ClientConnection, message: dict[str, Any] | str | bytes) -> None:
    await ws.send(json.dumps(message) if isinstance(message, dict) else message)


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    import asyncio

    async with asyncio.timeout(timeout):
        frame = await ws.recv()
    decoded: dict[str, Any] = msgspec.msgpack.decode(frame) if isinstance(frame, bytes) else json.loads(frame)
    return decoded


async def request(ws: ClientConnection, message: dict[str, Any] | str | bytes) -> dict[str, Any]:
    """Send ``message`` and return the next reply, passing over pushes (messages with ``ch``)."""
    await send(ws, message)
    while True:
        reply = await recv(ws)
        if "ch" not in reply:
            return reply


async def authed(node: RunningNode, user_id: int = 1001, **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await open_socket(node)
    welcome = await request(ws, {"t": "auth", "id": 1, "init_data": init_data(user_id, **kwargs)})
    assert welcome["t"] == "welcome", welcome
    return ws, welcome


async def funded(node: RunningNode, bank: Ledger, user_id: int, amount: int, ref: str,
                 **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:  # fmt: skip
    """``user_id``'s authenticated socket with ``amount`` deposited (``ref``) before it signed in.

    The tests' ``bank`` ledger has no relay: a deposit it makes reaches a node's sockets only when the node's
    outbox sweeper relays it (about 2 s later), and until then the node serves the balance it read at sign-in.
    Funding first makes the welcome, and every balance after it, include the deposit."""
    await bank.sign_in(TelegramUser(id=user_id, first_name="Player"))
    if amount:
        await bank.deposit(user_id, amount, ref=ref)
    return await authed(node, user_id, **kwargs)


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Wait for the server to close ``ws``; return the close code."""
    import asyncio

    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed:
        pass
    return ws.close_code
