"""A node's log over a short session of play (a real ``croupier serve``): one JSON object per line, the
request ids of refused requests, and no initData, token or secret anywhere in it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from server.auth import sign_init_data
from tests.services import clean_env, node_process, wait_ready

pytestmark = pytest.mark.timeout(120)


async def test_a_session_of_play_logs_json_lines_with_request_ids_and_no_secrets(empty_database: str,
                                                                                 tmp_path: Path) -> None:  # fmt: skip
    token = f"7{secrets.randbelow(10**6):06d}:{secrets.token_urlsafe(26)}"
    webhook_secret = f"hook-{secrets.token_hex(12)}"
    env = clean_env(CROUPIER_BOT_TOKEN=token, CROUPIER_WEBHOOK_SECRET=webhook_secret, DATABASE_URL=empty_database,
                    CROUPIER_DATA_DIR=str(tmp_path / "state"), CROUPIER_TELEGRAM_API_URL="http://127.0.0.1:9",
                    CROUPIER_LOG_FORMAT="json", CROUPIER_NODE_ID="log-node")  # fmt: skip
    init_data = sign_init_data(token, user_id=4242)
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as output, node_process(env, output=output, log_level="debug") as (_, port):
        await wait_ready(port)
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"t": "auth", "id": "a1", "init_data": init_data}))
            assert json.loads(await ws.recv())["t"] == "welcome"
            await ws.send(json.dumps({"t": "bet", "id": "refused-7", "game": "dice", "round": 1, "amount": 10**9,
                                      "params": {"target": 5000, "side": "over"}}))  # fmt: skip
            reply = json.loads(await ws.recv())
            while reply.get("id") != "refused-7":
                reply = json.loads(await ws.recv())
            assert reply["t"] == "error"
        async with connect(f"ws://127.0.0.1:{port}/ws") as bad:  # a forged initData: its hash is logged nowhere
            await bad.send(json.dumps({"t": "auth", "id": 1, "init_data": init_data.replace("4242", "4243")}))
            await bad.recv()
        async with httpx.AsyncClient() as client:  # the webhook with the right secret, and a wrong one
            await client.post(f"http://127.0.0.1:{port}/telegram/webhook", json={"update_id": 1},
                              headers={"X-Telegram-Bot-Api-Secret-Token": webhook_secret})  # fmt: skip
            await client.post(f"http://127.0.0.1:{port}/telegram/webhook", json={"update_id": 2},
                              headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"})  # fmt: skip
    text = log_path.read_text()
    # stdout (the banner for people) and stderr (the log) share the file here: every log record is JSON.
    banner = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]
    assert banner[0].startswith("Croupier node log-node serving on") and len(banner) <= 8, banner
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines, "the node logged nothing"
    assert all({"ts", "level", "event", "logger", "node"} <= set(line) for line in lines), lines[:3]
    assert {line["node"] for line in lines} == {"log-node"}
    refused = [line for line in lines if line.get("request_id") == "refused-7"]
    assert refused and refused[0]["code"] and refused[0].get("user_id") == 4242
    assert any(line["logger"].startswith("uvicorn") for line in lines), "uvicorn's own lines go through it too"
    hash_value = dict(part.split("=", 1) for part in init_data.split("&"))["hash"]
    for secret in (token, token.split(":", 1)[1], webhook_secret, init_data, hash_value):
        assert secret not in text
