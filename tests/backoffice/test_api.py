"""``/admin/api`` over real HTTP against a real node: keys and scopes, users, adjustments, blocks, rounds,
announcements, the cluster and the audit log."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from protocol import CloseCode
from server.ledger import Ledger
from tests.backoffice.conftest import ADMIN_KEYS, READ_KEY, admin, betting_round, dice_bet, player
from tests.conftest import RunningNode, StartNode
from tests.edge.client import authed, closed_with, open_socket, recv, request
from tests.edge.client import init_data as signed_init_data
from tests.ledger.conftest import next_user_id


@pytest.fixture
async def office(start_node: StartNode) -> RunningNode:  # type: ignore[misc]
    async with start_node(admin_keys=ADMIN_KEYS) as node:
        yield node


async def test_without_keys_the_api_is_off(node_server: RunningNode) -> None:
    async with admin(node_server) as client:
        assert (await client.get("/users/1")).status_code == 404
        assert (await client.post("/users/1/block", json={"reason": "x"})).status_code == 404


async def test_no_key_or_an_unknown_key_is_401_and_a_read_key_cannot_write(office: RunningNode, bank: Ledger) -> None:
    ws, user_id = await player(office, bank)
    for key in (None, "not-a-key", READ_KEY + "x"):
        async with admin(office, key) as client:
            refused = await client.get(f"/users/{user_id}")
            assert refused.status_code == 401, key
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["error"] == "unauthorized" and "Bearer" in refused.json()["message"]
    async with admin(office, READ_KEY) as client:
        assert (await client.get(f"/users/{user_id}")).status_code == 200
        writes = {f"/users/{user_id}/block": {"reason": "r"}, "/publish": {"channel": "all", "text": "x"},
                  f"/users/{user_id}/adjust": {"amount": 5, "reason": "r", "idempotency_key": "k"}}  # fmt: skip
        for path, body in writes.items():
            forbidden = await client.post(path, json=body)
            assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden", path
            assert "auditor" in forbidden.json()["message"]
    async with admin(office) as client:  # nothing was done
        assert (await client.get(f"/users/{user_id}")).json()["balance"] == 0
    await ws.close()


async def test_a_users_profile_balance_and_look_up_by_username(office: RunningNode, bank: Ledger) -> None:
    user_id = next_user_id()
    ws, _ = await authed(office, user_id, username=f"Lucky_{user_id}")
    await bank.deposit(user_id, 250, ref=f"backoffice-profile-{user_id}")
    async with admin(office, READ_KEY) as client:
        profile = (await client.get(f"/users/{user_id}")).json()
        assert (profile["id"], profile["username"], profile["balance"]) == (user_id, f"Lucky_{user_id}", 250)
        assert profile["restriction"] is None and profile["blocked"] is False
        found = (await client.get("/users", params={"username": f"@lucky_{user_id}"})).json()["users"]
        assert [u["id"] for u in found] == [user_id]
        assert (await client.get("/users", params={"username": "nobody-has-this-name"})).json() == {"users": []}
        missing = await client.get(f"/users/{next_user_id()}")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        for bad in ("0", "-1", str(2**63), "x"):
            assert (await client.get(f"/users/{bad}")).status_code in (400, 404), bad
    await ws.close()


async def test_adjust_with_the_same_key_twice_credits_once_and_is_audited(
    office: RunningNode, bank: Ledger, db: asyncpg.Connection
) -> None:
    ws, user_id = await player(office, bank, 100)
    key = f"promo-{user_id}"
    path = f"/users/{user_id}/adjust"
    async with admin(office) as client:
        first = await client.post(path, json={"amount": 40, "reason": "promo", "idempotency_key": key})
        assert first.status_code == 200, first.text
        assert first.json() == {"user": user_id, "amount": 40, "balance": 140, "replayed": False}
        push = await recv(ws)
        assert (push["t"], push["balance"], push["reason"]) == ("balance", 140, "adjust")
        again = await client.post(path, json={"amount": 40, "reason": "promo", "idempotency_key": key})
        assert again.json() == {"user": user_id, "amount": 40, "balance": 140, "replayed": True}
        debit = {"amount": -15, "reason": "fix", "idempotency_key": f"{key}-debit"}
        concurrent = await asyncio.gather(*(client.post(path, json=debit) for _ in range(4)))
        assert sorted(r.json()["replayed"] for r in concurrent) == [False, True, True, True]
        assert {r.json()["balance"] for r in concurrent} == {125}
        other = await client.post(path, json={"amount": 41, "reason": "promo", "idempotency_key": key})
        assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict"
        too_much = await client.post(path, json={"amount": -1000, "reason": "x", "idempotency_key": f"{key}-big"})
        assert too_much.status_code == 409 and too_much.json()["error"] == "insufficient_funds"
        bad = [{"amount": 0}, {"reason": " "}, {"idempotency_key": "has space"}, {"amount": "5"},
               {"reason": "nul\u0000"}, {"amount": 2**53}]  # fmt: skip
        for change in bad:
            refused = await client.post(path, json={"amount": 5, "reason": "x", "idempotency_key": "z", **change})
            assert refused.status_code == 400, (change, refused.text)
        assert (await client.get(f"/users/{user_id}")).json()["balance"] == 125
        log = (await client.get("/actions", params={"target": f"user:{user_id}"})).json()["items"]
    assert [(a["action"], a["key"], a["before"], a["after"]["balance"]) for a in log] == [
        ("adjust", "ops", {"balance": 140}, 125), ("adjust", "ops", {"balance": 100}, 140)]  # fmt: skip
    assert log[1]["idempotency_key"] == key and log[1]["reason"] == "promo"
    credits = await db.fetchval("SELECT count(*) FROM ledger_txns WHERE kind = 'adjust' AND ref = $1", f"admin:{key}")
    assert credits == 1
    await ws.close()


async def test_block_closes_the_users_sockets_refuses_auth_and_unblock_restores_the_restriction_it_replaced(
    office: RunningNode, bank: Ledger, db: asyncpg.Connection
) -> None:
    ws, user_id = await player(office, bank, 10)
    second, _ = await authed(office, user_id)
    await db.execute("INSERT INTO account_restrictions (user_id, kind, reason) VALUES ($1, 'flagged', 'shortfall')",
                     user_id)  # fmt: skip
    async with admin(office) as client:
        blocked = await client.post(f"/users/{user_id}/block", json={"reason": "chargeback fraud"})
        assert blocked.status_code == 200, blocked.text
        assert blocked.json()["changed"] and blocked.json()["restriction"]["kind"] == "blocked"
        assert await closed_with(ws) == CloseCode.FORBIDDEN and await closed_with(second) == CloseCode.FORBIDDEN
        refused = await open_socket(office)
        reply = await request(refused, {"t": "auth", "id": 1, "init_data": signed_init_data(user_id)})
        assert (reply["t"], reply["code"]) == ("error", "forbidden") and "blocked" in reply["message"]
        assert await closed_with(refused) == CloseCode.FORBIDDEN
        again = (await client.post(f"/users/{user_id}/block", json={"reason": "twice"})).json()
        assert again["changed"] is False
        assert (await client.get(f"/users/{user_id}")).json()["blocked"] is True
        lifted = (await client.post(f"/users/{user_id}/unblock", json={"reason": "appeal accepted"})).json()
        assert lifted["changed"] and lifted["restriction"]["kind"] == "flagged"
        assert lifted["restriction"]["reason"] == "shortfall"
        log = (await client.get("/actions", params={"target": f"user:{user_id}"})).json()["items"]
        assert (await client.post(f"/users/{next_user_id()}/block", json={"reason": "x"})).status_code == 404
    back, welcome = await authed(office, user_id)
    assert welcome["balance"] == 10
    assert [(a["action"], (a["before"]["restriction"] or {}).get("kind"), (a["after"]["restriction"] or {}).get("kind"))
            for a in log] == [("unblock", "blocked", "flagged"), ("block", "flagged", "blocked")]  # fmt: skip
    assert log[1]["reason"] == "chargeback fraud" and log[1]["key"] == "ops"
    kind = await db.fetchval("SELECT kind FROM account_restrictions WHERE user_id = $1", user_id)
    assert kind == "flagged"
    await back.close()


async def test_rounds_list_and_inspect_never_show_an_unsettled_rounds_seed(office: RunningNode, bank: Ledger) -> None:
    ws, _ = await player(office, bank, 100)
    round_id = await betting_round(ws)
    assert (await request(ws, dice_bet(1, round_id, 30)))["t"] == "bet_ok"
    async with admin(office, READ_KEY) as client:
        listed = (await client.get("/rounds", params={"game": "dice", "limit": 5})).json()
        assert listed["items"][0]["id"] == round_id and listed["items"][0]["phase"] == "betting"
        assert all(item["game"] == "dice" for item in listed["items"])
        everything = (await client.get("/rounds", params={"limit": 3})).json()
        assert len(everything["items"]) == 3 and everything["next"] == str(everything["items"][-1]["id"])
        later = (await client.get("/rounds", params={"limit": 3, "cursor": everything["next"]})).json()
        assert later["items"][0]["id"] < everything["items"][-1]["id"]
        shown = (await client.get(f"/rounds/{round_id}")).json()
        assert shown["phase"] == "betting" and shown["seed"] is None and shown["outcome"] is None
        assert shown["bets"]["count"] >= 1 and shown["bets"]["total"] >= 30 and len(shown["seed_hash"]) == 64
        assert (await client.get("/rounds/999999999999")).status_code == 404
        assert (await client.get("/rounds", params={"limit": 0})).status_code == 400
        assert (await client.get("/rounds", params={"cursor": "abc"})).status_code == 400
    await ws.close()


async def test_publish_reaches_a_games_subscribers_one_users_sockets_and_all(office: RunningNode, bank: Ledger) -> None:
    watcher, _ = await player(office, bank)
    target, target_id = await player(office, bank)
    await request(watcher, {"t": "subscribe", "id": 1, "game": "crash"})
    async with admin(office) as client:
        sent = await client.post("/publish", json={"channel": "game:crash", "text": "double payouts tonight",
                                                   "data": {"banner": "x2"}, "reason": "promo"})  # fmt: skip
        assert sent.status_code == 200, sent.text
        expected = {"t": "announcement", "to": "game:crash", "text": "double payouts tonight", "data": {"banner": "x2"}}
        assert await _announcement(watcher) == expected
        await client.post("/publish", json={"channel": f"user:{target_id}", "data": {"gift": 5}})
        assert await _announcement(target) == {"t": "announcement", "to": "user", "data": {"gift": 5}}
        await client.post("/publish", json={"channel": "all", "text": "maintenance at 03:00"})
        for ws in (watcher, target):
            assert (await _announcement(ws))["text"] == "maintenance at 03:00"
        bad = [{"channel": "game:nope", "text": "x"}, {"channel": "user:abc", "text": "x"}, {"channel": "all"},
               {"channel": "all", "data": {"x": "\u0000"}}, {"channel": "all", "data": {"x": "y" * 9000}}]  # fmt: skip
        for body in bad:
            refused = await client.post("/publish", json=body)
            assert refused.status_code == 400, (body, refused.text)
        log = (await client.get("/actions", params={"target": "game:crash"})).json()["items"]
        assert log[0]["action"] == "publish" and log[0]["after"]["text"] == "double payouts tonight"
    for ws in (watcher, target):
        await ws.close()


async def _announcement(ws: object) -> dict[str, object]:
    while True:
        message = await recv(ws)  # type: ignore[arg-type]
        if message["t"] == "announcement":
            assert isinstance(message.pop("ts"), int)
            return message


async def test_cluster_shows_the_node_its_sockets_drivers_and_the_outbox(office: RunningNode, bank: Ledger) -> None:
    ws, _ = await player(office, bank)
    await betting_round(ws)
    async with admin(office, READ_KEY) as client:
        view = (await client.get("/cluster")).json()
    assert view["node"] == "test-node"
    [node] = [n for n in view["nodes"] if n["node"] == "test-node"]
    assert node["answered"] and node["sockets"] >= 1 and set(node["driving"]) == {"crash", "dice", "roulette"}
    assert view["drivers"]["dice"]["locked"] is True and view["drivers"]["dice"]["driving"] == ["test-node"]
    assert view["drivers"]["dice"]["holder"] == "test-node"
    assert set(view["outbox"]) == {"backlog", "oldest_seconds"}
    await ws.close()


async def test_bad_bodies_and_methods(office: RunningNode, bank: Ledger) -> None:
    ws, user_id = await player(office, bank)
    async with admin(office) as client:
        for body in (b"not json", b"[]", b'{"reason": 5}', b"{}"):
            refused = await client.post(f"/users/{user_id}/block", content=body)
            assert refused.status_code == 400 and refused.json()["error"] == "bad_request", body
        assert (await client.post(f"/users/{user_id}/block", content=b"x" * 70_000)).status_code == 413
        assert (await client.get(f"/users/{user_id}/block")).status_code == 405
    await ws.close()
