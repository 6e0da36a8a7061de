"""permessage-deflate behind ``CROUPIER_WS_COMPRESSION``: a client offering it (as Chromium does) gets it
when the node has ``deflate`` and not with ``off`` (the default); either way every reply and push reaches
it whole, in both codecs, through the uvicorn configuration ``croupier serve`` runs (server/serving.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import Frame, Opcode

from server.edge.wsprotocol import DEFLATE_WINDOW_BITS
from server.settings import Settings, SettingsError
from tests.conftest import RunningNode, StartNode
from tests.edge.client import init_data, recv

CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"


def chromium_like() -> ClientPerMessageDeflateFactory:
    """What Chromium offers: permessage-deflate, any client window."""
    return ClientPerMessageDeflateFactory(client_max_window_bits=True)


async def open_offering_deflate(node: RunningNode, subprotocol: str) -> ClientConnection:
    ws = await connect(node.ws_url, subprotocols=[subprotocol], extensions=[chromium_like()],  # type: ignore[list-item]
                       compression=None, open_timeout=5)  # fmt: skip
    assert ws.request is not None and ws.request.headers["Sec-WebSocket-Extensions"] == CHROMIUM_OFFER
    return ws


async def request(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    """Send ``message`` in the socket's codec; the next reply (pushes passed over)."""
    await ws.send(msgspec.msgpack.encode(message) if ws.subprotocol == "croupier.v1.msgpack" else json.dumps(message))
    while "ch" in (reply := await recv(ws)):
        pass
    return reply


async def play_a_little(ws: ClientConnection, user_id: int) -> None:
    """Authenticate, ping, subscribe to dice and read its snapshot, ask the balance: all decoded whole."""
    welcome = await request(ws, {"t": "auth", "id": 1, "init_data": init_data(user_id)})
    assert welcome["t"] == "welcome" and welcome["user"]["id"] == user_id, welcome
    assert (await request(ws, {"t": "ping", "id": 2}))["t"] == "pong"
    for attempt in range(200):  # the driver opens the game's first round just after the node starts
        subscribed = await request(ws, {"t": "subscribe", "id": f"s{attempt}", "game": "dice"})
        assert subscribed["t"] == "subscribed", subscribed
        if subscribed["round"] is not None:
            break
        await asyncio.sleep(0.05)
    assert subscribed["round"]["game"] == "dice" and len(subscribed["round"]["seed_hash"]) == 64, subscribed
    assert (await request(ws, {"t": "balance", "id": 4}))["balance"] == 0


@pytest.mark.parametrize("subprotocol", ["croupier.v1.json", "croupier.v1.msgpack"])
async def test_a_client_offering_permessage_deflate_gets_it_when_the_node_has_deflate(
    start_node: StartNode, subprotocol: str
) -> None:
    async with start_node(ws_compression="deflate") as node:
        ws = await open_offering_deflate(node, subprotocol)
        try:
            assert ws.response is not None
            assert ws.response.headers["Sec-WebSocket-Extensions"] == (
                f"permessage-deflate; server_max_window_bits={DEFLATE_WINDOW_BITS}; "
                f"client_max_window_bits={DEFLATE_WINDOW_BITS}"
            )  # the node's small zlib state, not uvicorn's 12 bits
            (extension,) = ws.protocol.extensions
            assert isinstance(extension, PerMessageDeflate)
            compressed: list[bool] = []  # per data frame from the node: was it compressed (RSV1)?
            decode = extension.decode

            def recording(frame: Frame, *, max_size: int | None = None) -> Frame:
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    compressed.append(frame.rsv1)
                return decode(frame, max_size=max_size)

            extension.decode = recording  # type: ignore[method-assign]
            await play_a_little(ws, 1_600_001)
            assert len(compressed) >= 4 and all(compressed), compressed  # replies written at once too
        finally:
            await ws.close()


async def test_a_client_offering_permessage_deflate_does_not_get_it_when_the_node_has_it_off(
    start_node: StartNode,
) -> None:
    async with start_node() as node:
        assert node.settings.ws_compression == "off"  # the default
        ws = await open_offering_deflate(node, "croupier.v1.json")
        try:
            assert ws.response is not None and "Sec-WebSocket-Extensions" not in ws.response.headers
            assert ws.protocol.extensions == []
            await play_a_little(ws, 1_600_002)
        finally:
            await ws.close()


def test_the_setting_takes_off_or_deflate_only() -> None:
    env = {"CROUPIER_BOT_TOKEN": "1:abcdefghijklmnop"}
    assert Settings.from_env(env).ws_compression == "off"
    assert Settings.from_env({**env, "CROUPIER_WS_COMPRESSION": "Deflate"}).ws_compression == "deflate"
    assert Settings.from_env({**env, "CROUPIER_WS_COMPRESSION": "off"}).ws_compression == "off"
    with pytest.raises(SettingsError, match="CROUPIER_WS_COMPRESSION must be off or deflate, got 'gzip'"):
        Settings.from_env({**env, "CROUPIER_WS_COMPRESSION": "gzip"})
