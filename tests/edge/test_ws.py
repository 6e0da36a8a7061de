"""GET /ws end to end over real sockets: handshake, auth, requests and every bad input."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import RunningNode, StartNode
from tests.edge.client import authed, closed_with, init_data, open_socket, recv, request, send


async def test_auth_welcomes_and_upserts_the_user(node_server: RunningNode, db: object) -> None:
    ws, welcome = await authed(node_server, 555, first_name="Ann", username="ann")
    assert welcome["id"] == 1
    assert welcome["user"] == {"id": 555, "first_name": "Ann", "username": "ann"}
    assert welcome["balance"] == 0
    assert isinstance(welcome["session"], str) and welcome["session"]
    assert isinstance(welcome["server_time"], int)
    assert isinstance(welcome["games"], list)
    row = await db.fetchrow("SELECT first_name, username FROM users WHERE id = 555")  # type: ignore[attr-defined]
    assert (row["first_name"], row["username"]) == ("Ann", "ann")
    await ws.close()
    ws, _ = await authed(node_server, 555, first_name="Anna")
    assert await db.fetchval("SELECT first_name FROM users WHERE id = 555") == "Anna"  # type: ignore[attr-defined]
    await ws.close()


async def test_ping_balance_and_request_ids_are_echoed(node_server: RunningNode) -> None:
    ws, _ = await authed(node_server)
    pong = await request(ws, {"t": "ping", "id": "abc"})
    assert pong["t"] == "pong" and pong["id"] == "abc" and isinstance(pong["server_time"], int)
    assert await request(ws, {"t": "balance", "id": 9}) == {"t": "balance", "id": 9, "balance": 0}
    await ws.close()


async def test_subprotocols_json_msgpack_default_and_refusal(node_server: RunningNode) -> None:
    ws = await open_socket(node_server, ["croupier.v1.msgpack"])
    assert ws.subprotocol == "croupier.v1.msgpack"
    await ws.send(msgspec.msgpack.encode({"t": "auth", "id": 1, "init_data": init_data(77)}))
    welcome = await recv(ws)
    assert welcome["t"] == "welcome" and welcome["user"]["id"] == 77
    await ws.send(msgspec.msgpack.encode({"t": "ping", "id": 2}))
    assert (await recv(ws))["t"] == "pong"
    await ws.send('{"t":"ping","id":3}')  # text frame on a msgpack session
    error = await recv(ws)
    assert error["code"] == "bad_request" and "text frames" in error["message"]
    await ws.close()

    ws = await open_socket(node_server)
    assert ws.subprotocol is None  # no offer means JSON
    assert (await request(ws, {"t": "auth", "id": 1, "init_data": init_data()}))["t"] == "welcome"
    await ws.close()

    with pytest.raises(InvalidStatus) as info:
        await connect(node_server.ws_url, subprotocols=["chat.v9"])  # type: ignore[list-item]
    assert info.value.response.status_code == 403


@pytest.mark.parametrize(
    ("frame", "code", "field", "echo"),
    [
        ("definitely not json", "bad_request", None, None),
        ("[1, 2, 3]", "bad_request", None, None),
        ('{"t": 1, "id": 4}', "bad_request", "t", 4),
        ('{"t": "teleport", "id": 5}', "unknown_type", "t", 5),
        ('{"t": "ping"}', "bad_request", "id", None),
        ('{"t": "bet", "id": 6, "game": "dice", "round": 1, "amount": "100"}', "bad_request", "amount", 6),
        ('{"t": "bet", "id": 7, "game": "dice", "round": 1, "amount": 0}', "bad_request", "amount", 7),
        ('{"t": "auth", "id": 8, "init_data": "x"}', "bad_request", "t", 8),
        ('{"t": "subscribe", "id": 9, "game": "no-such-game"}', "unknown_game", "game", 9),
    ],
)
async def test_bad_requests_get_named_errors_and_keep_the_socket(
    node_server: RunningNode, frame: str, code: str, field: str | None, echo: object
) -> None:
    ws, _ = await authed(node_server)
    error = await request(ws, frame)
    assert (error["t"], error["code"], error["field"], error["id"]) == ("error", code, field, echo)
    assert error["message"]
    assert (await request(ws, {"t": "ping", "id": 100}))["t"] == "pong"
    await ws.close()


async def test_binary_frame_on_a_json_session_is_a_bad_request(node_server: RunningNode) -> None:
    ws, _ = await authed(node_server)
    error = await request(ws, b'{"t":"ping","id":1}')
    assert error["code"] == "bad_request" and "binary frames" in error["message"]
    await ws.close()


async def test_repeated_malformed_messages_close_4400(start_node: StartNode) -> None:
    async with start_node(malformed_limit=3) as node:
        ws, _ = await authed(node)
        for _ in range(3):
            assert (await request(ws, "garbage"))["code"] == "bad_request"
        await send(ws, "garbage")
        assert (await recv(ws))["code"] == "bad_request"
        assert await closed_with(ws) == 4400


async def test_oversized_frame_closes_1009(node_server: RunningNode) -> None:
    ws, _ = await authed(node_server)
    await send(ws, '{"t":"ping","id":1,"pad":"' + "x" * 17000 + '"}')
    assert await closed_with(ws) == 1009


async def test_frame_limit_applies_before_auth_too(node_server: RunningNode) -> None:
    ws = await open_socket(node_server)
    await send(ws, "x" * 20000)
    assert await closed_with(ws) == 1009


async def test_message_before_auth_closes_4401(node_server: RunningNode) -> None:
    ws = await open_socket(node_server)
    error = await request(ws, {"t": "ping", "id": 3})
    assert (error["code"], error["id"]) == ("auth_required", 3)
    assert await closed_with(ws) == 4401

    ws = await open_socket(node_server)
    assert (await request(ws, "not json"))["code"] == "auth_required"
    assert await closed_with(ws) == 4401


async def test_invalid_auth_field_before_auth_is_a_bad_request_not_a_close(node_server: RunningNode) -> None:
    ws = await open_socket(node_server)
    error = await request(ws, {"t": "auth", "id": 1})
    assert (error["code"], error["field"]) == ("bad_request", "init_data")
    assert (await request(ws, {"t": "auth", "id": 2, "init_data": init_data()}))["t"] == "welcome"
    await ws.close()


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (init_data(5, auth_date=1_000_000_000), "expired"),
        (init_data(5).replace("hash=", "hash=0"), "bad_hash"),
        (init_data(5).replace("Player", "Admin"), "bad_hash"),
        (
            __import__("server.auth", fromlist=["sign_init_data"]).sign_init_data(
                "987654321:another-bots-token-xxxxxx", user_id=5
            ),
            "bad_hash",
        ),
        ("user=%7B%7D", "missing_hash"),
        ("%%%", "malformed"),
    ],
    ids=["expired", "tampered-hash", "tampered-user", "other-bot", "no-hash", "garbage"],
)
async def test_bad_init_data_is_unauthorized_and_closes_4401(node_server: RunningNode, raw: str, kind: str) -> None:
    ws = await open_socket(node_server)
    error = await request(ws, {"t": "auth", "id": 1, "init_data": raw})
    assert (error["t"], error["code"], error["id"]) == ("error", "unauthorized", 1)
    assert error["message"].startswith(kind)
    assert raw not in error["message"]
    assert await closed_with(ws) == 4401


async def test_init_data_without_user_is_refused(node_server: RunningNode) -> None:
    from server.auth import HmacVerifier
    from tests.conftest import TEST_BOT_TOKEN

    fields = {"auth_date": str(int(__import__("time").time())), "query_id": "q"}
    fields["hash"] = HmacVerifier(TEST_BOT_TOKEN).sign(fields)
    ws = await open_socket(node_server)
    error = await request(ws, {"t": "auth", "id": 1, "init_data": "&".join(f"{k}={v}" for k, v in fields.items())})
    assert error["code"] == "unauthorized" and "no user" in error["message"]
    assert await closed_with(ws) == 4401


async def test_second_auth_is_a_bad_request(node_server: RunningNode) -> None:
    ws, _ = await authed(node_server)
    error = await request(ws, {"t": "auth", "id": 2, "init_data": init_data()})
    assert (error["code"], error["id"], error["field"]) == ("bad_request", 2, "t")
    assert (await request(ws, {"t": "ping", "id": 3}))["t"] == "pong"
    await ws.close()


async def test_auth_timeout_closes_4408(start_node: StartNode) -> None:
    async with start_node(auth_timeout=0.3) as node:
        ws = await open_socket(node)
        assert await closed_with(ws) == 4408
        ws, _ = await authed(node)  # authenticated sockets are not timed out
        await asyncio.sleep(0.5)
        assert (await request(ws, {"t": "ping", "id": 1}))["t"] == "pong"
        await ws.close()


async def test_abusive_clients_do_not_disturb_others(node_server: RunningNode) -> None:
    calm, _ = await authed(node_server, 1)
    bad_sockets = [await open_socket(node_server) for _ in range(5)]
    for i, ws in enumerate(bad_sockets):
        await send(
            ws, ["garbage", "x" * 20000, '{"t":"ping","id":1}', b"\x00\x01", '{"t":"auth","id":1,"init_data":"a"}'][i]
        )
    for i in range(20):
        assert (await request(calm, {"t": "ping", "id": i}))["id"] == i
    for ws in bad_sockets:
        await closed_with(ws)
    assert (await request(calm, {"t": "ping", "id": "still"}))["id"] == "still"
    await calm.close()


async def test_a_flooding_client_is_rate_limited_then_closed_4429(start_node: StartNode) -> None:
    async with start_node(rate_limit=5.0, rate_burst=5) as node:
        flood, _ = await authed(node)  # the auth itself spends one token
        calm, _ = await authed(node, 2)
        replies = []
        for i in range(8):
            await send(flood, {"t": "ping", "id": i})
        for _ in range(8):
            replies.append(await recv(flood))
        codes = [r.get("code") for r in replies]
        assert codes[:4] == [None] * 4 and "rate_limited" in codes  # over the burst: refused, not served
        limited = next(r for r in replies if r.get("code") == "rate_limited")
        assert limited["id"] is not None and "slow down" in limited["message"]
        for i in range(40):  # ignoring rate_limited gets the socket closed
            with contextlib.suppress(Exception):
                await send(flood, {"t": "ping", "id": 100 + i})
        assert await closed_with(flood) == 4429
        assert (await request(calm, {"t": "ping", "id": "ok"}))["t"] == "pong"  # everyone else is served
        await calm.close()


def test_rate_limiter_refills_over_time() -> None:
    from server.edge.ratelimit import RateLimiter

    clock = {"t": 0.0}
    limiter = RateLimiter(2.0, 2, max_strikes=3, clock=lambda: clock["t"])
    assert [limiter.allow() for _ in range(3)] == [True, True, False]
    clock["t"] = 0.5  # one token back
    assert [limiter.allow() for _ in range(2)] == [True, False]
    assert not limiter.exhausted
    assert [limiter.allow() for _ in range(2)] == [False, False] and limiter.exhausted
