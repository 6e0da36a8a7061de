"""The back office over real HTTP: a node with admin keys, a client holding a key, funded players."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from server.backoffice import key_digest
from server.ledger import Ledger
from tests.conftest import RunningNode
from tests.edge.client import funded, request
from tests.ledger.conftest import next_user_id

WRITE_KEY = "suite-write-key-0123456789abcdefghijklmnop"
READ_KEY = "suite-read-key-0123456789abcdefghijklmnopq"
ADMIN_KEYS = (("ops", "write", key_digest(WRITE_KEY)), ("auditor", "read", key_digest(READ_KEY)))
"""What ``CROUPIER_ADMIN_KEYS=ops:write:<sha256>,auditor:read:<sha256>`` gives a node."""


def admin(node: RunningNode, key: str | None = WRITE_KEY) -> httpx.AsyncClient:
    """An HTTP client of ``node``'s back office presenting ``key`` (None: no Authorization header)."""
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    return httpx.AsyncClient(base_url=f"{node.url}/admin/api", headers=headers, timeout=20)


async def player(node: RunningNode, bank: Ledger, amount: int = 0) -> tuple[Any, int]:
    """A new user's authenticated socket on ``node``, with ``amount`` deposited."""
    user_id = next_user_id()
    ws, _ = await funded(node, bank, user_id, amount, f"backoffice-test-{user_id}")
    return ws, user_id


async def betting_round(ws: Any, game: str = "dice") -> int:
    """The round of ``game`` taking bets now (waiting for the next one if need be)."""
    for _ in range(200):
        reply = await request(ws, {"t": "subscribe", "id": "sub", "game": game})
        await request(ws, {"t": "unsubscribe", "id": "unsub", "game": game})
        if reply["round"] is not None and reply["round"]["phase"] == "betting":
            return int(reply["round"]["round"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {game} round is taking bets")


def dice_bet(request_id: object, round_id: int, amount: int = 10, key: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"t": "bet", "id": request_id, "game": "dice", "round": round_id, "amount": amount,
                               "params": {"target": 5000, "side": "over"}}  # fmt: skip
    if key is not None:
        message["key"] = key
    return message
