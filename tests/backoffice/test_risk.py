"""Risk flags through ``/admin/api`` over real HTTP against a real node: the list (keyset pages, filters),
reviews (scopes, audited, once), and a user's view with their open flags and responsible-gaming state."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any

import asyncpg
import pytest

from server.backoffice.routes import ENDPOINTS
from server.ledger import Ledger
from server.risk import Flag, FlagKind, Window, store_flags
from tests.backoffice.conftest import ADMIN_KEYS, READ_KEY, admin, player
from tests.conftest import RunningNode, StartNode
from tests.edge.client import request
from tests.ledger.conftest import next_user_id

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
async def office(start_node: StartNode) -> RunningNode:  # type: ignore[misc]
    async with start_node(admin_keys=ADMIN_KEYS) as node:
        yield node


async def add_flags(db: asyncpg.Connection, user_id: int, hours: range, kind: FlagKind = FlagKind.LUCK) -> None:
    """Flags of ``user_id`` over one-hour windows from ``T0`` (one row each), as ``croupier risk report``
    writes them."""
    for hour in hours:
        start = T0 + dt.timedelta(hours=hour)
        found = Flag(user_id, kind, 4.0 + hour, {"summary": f"{kind.value} in hour {hour}", "hour": hour})
        await store_flags(db, [found], Window(start, start + dt.timedelta(hours=1)))


async def listed(client: Any, **params: Any) -> list[dict[str, Any]]:
    reply = await client.get("/risk/flags", params={"limit": 100, **params})
    assert reply.status_code == 200, reply.text
    items: list[dict[str, Any]] = reply.json()["items"]
    return items


async def test_no_key_is_401_and_a_read_key_lists_but_cannot_review(
    office: RunningNode, db: asyncpg.Connection
) -> None:
    user_id = next_user_id()
    await add_flags(db, user_id, range(1))
    async with admin(office, None) as client:
        review = await client.post("/risk/flags/1/review", json={"reason": "x"})
        for refused in (await client.get("/risk/flags"), review):
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    async with admin(office, READ_KEY) as client:
        [flag] = await listed(client, user=user_id)
        forbidden = await client.post(f"/risk/flags/{flag['id']}/review", json={"reason": "looked"})
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
        assert "auditor" in forbidden.json()["message"]
        [still] = await listed(client, user=user_id)
    assert still["reviewed_at"] is None and still["reviewer"] is None
    assert await db.fetchval("SELECT count(*) FROM admin_actions WHERE target = $1", f"risk_flag:{flag['id']}") == 0


async def test_flags_are_listed_newest_first_and_filtered_by_state_kind_and_user(
    office: RunningNode, db: asyncpg.Connection
) -> None:
    user_id, other = next_user_id(), next_user_id()
    await add_flags(db, user_id, range(3))
    await add_flags(db, user_id, range(2), FlagKind.BET_VELOCITY)
    await add_flags(db, other, range(1), FlagKind.BET_VELOCITY)
    async with admin(office) as client:
        mine = await listed(client, user=user_id)
        assert [f["id"] for f in mine] == sorted((f["id"] for f in mine), reverse=True) and len(mine) == 5
        newest = mine[0]
        assert newest == {
            "id": newest["id"], "user": user_id, "kind": "bet_velocity", "score": 5.0,
            "evidence": {"summary": "bet_velocity in hour 1", "hour": 1},
            "window": {"start": int((T0 + dt.timedelta(hours=1)).timestamp() * 1000),
                       "end": int((T0 + dt.timedelta(hours=2)).timestamp() * 1000)},
            "created_at": newest["created_at"], "reviewed_at": None, "reviewer": None,
        }  # fmt: skip
        assert isinstance(newest["created_at"], int)
        luck = [f for f in mine if f["kind"] == "luck"]
        reviewed = await client.post(f"/risk/flags/{luck[0]['id']}/review", json={"reason": "a lucky streak"})
        assert reviewed.status_code == 200, reviewed.text
        assert [f["id"] for f in await listed(client, user=user_id, kind="luck")] == [f["id"] for f in luck]
        assert [f["id"] for f in await listed(client, user=user_id, kind="luck", open="true")] == [
            f["id"] for f in luck[1:]]  # fmt: skip
        assert [f["id"] for f in await listed(client, user=user_id, open="false")] == [luck[0]["id"]]
        assert len(await listed(client, user=user_id, open="TRUE")) == 4
        velocity = await listed(client, kind="bet_velocity", open="true")
        assert {f["user"] for f in velocity} >= {user_id, other} and {f["kind"] for f in velocity} == {"bet_velocity"}
        assert all(f["reviewed_at"] is None for f in await listed(client, open="true"))
        assert await listed(client, user=next_user_id()) == []
        bad = [({"open": "yes"}, "open"), ({"open": "1"}, "open"), ({"kind": "fraud"}, "kind"), ({"user": "0"}, "user"),
               ({"user": "abc"}, "user"), ({"user": str(2**63)}, "user"), ({"user": "-5"}, "user"),
               ({"limit": "0"}, "limit"), ({"cursor": "x"}, "cursor")]  # fmt: skip
        for params, field in bad:
            refused = await client.get("/risk/flags", params=params)
            assert refused.status_code == 400, (params, refused.text)
            assert (refused.json()["error"], refused.json()["field"]) == ("bad_request", field)
            assert field in refused.json()["message"]
        named = (await client.get("/risk/flags", params={"kind": "fraud"})).json()["message"]
        assert all(kind.value in named for kind in FlagKind)


async def test_paging_while_flags_are_added_shows_each_older_flag_once(
    office: RunningNode, db: asyncpg.Connection, database_url: str
) -> None:
    user_id = next_user_id()
    await add_flags(db, user_id, range(30))
    writer = await asyncpg.connect(database_url)
    added = 0

    async def keep_flagging() -> None:
        nonlocal added
        for hour in range(100, 1000):
            await add_flags(writer, user_id, range(hour, hour + 1))
            added += 1
            await asyncio.sleep(0.01)

    flagging = asyncio.create_task(keep_flagging())
    try:
        async with admin(office, READ_KEY) as client:
            for params in ({"user": user_id}, {}):  # one user's flags, then every flag
                newest = await db.fetchval("SELECT max(id) FROM risk_flags")
                older = {row["id"] for row in await db.fetch(
                    "SELECT id FROM risk_flags WHERE id <= $1 AND ($2::bigint IS NULL OR user_id = $2)",
                    newest, params.get("user"))}  # fmt: skip
                seen: list[int] = []
                cursor: str | None = None
                pages = 0
                while True:
                    page = {**params, "limit": 7, **({"cursor": cursor} if cursor else {})}
                    reply = await client.get("/risk/flags", params=page)
                    assert reply.status_code == 200, reply.text
                    ids = [f["id"] for f in reply.json()["items"]]
                    assert ids == sorted(ids, reverse=True) and not (seen and ids and ids[0] >= seen[-1])
                    seen.extend(ids)
                    pages += 1
                    cursor = reply.json()["next"]
                    if cursor is None:
                        break
                    await asyncio.sleep(0.03)  # flags keep coming between pages
                assert pages >= 5
                assert len(seen) == len(set(seen)), "a flag was shown twice"
                assert older <= set(seen), "a flag older than the first page was skipped"
                assert all(flag_id > newest for flag_id in set(seen) - older)  # newer ones only on the first page
    finally:
        flagging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flagging
        await writer.close()
    assert added, "no flag was added while paging"


async def test_a_review_is_recorded_once_with_the_keys_name_and_audited(
    office: RunningNode, db: asyncpg.Connection
) -> None:
    user_id = next_user_id()
    await add_flags(db, user_id, range(2), FlagKind.BOTH_SIDES)
    async with admin(office) as client:
        first, second = await listed(client, user=user_id)
        path = f"/risk/flags/{first['id']}/review"
        done = await client.post(path, json={"reason": "same household, not a ring"})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["changed"] is True and body["flag"]["reviewer"] == "ops"
        assert isinstance(body["flag"]["reviewed_at"], int)
        assert {k: v for k, v in body["flag"].items() if k not in ("reviewed_at", "reviewer")} == {
            k: v for k, v in first.items() if k not in ("reviewed_at", "reviewer")}  # fmt: skip
        again = (await client.post(path, json={"reason": "looked again"})).json()
        assert again == {"flag": body["flag"], "changed": False}  # the first review stays
        racing = await asyncio.gather(*(client.post(f"/risk/flags/{second['id']}/review", json={"reason": f"r{i}"})
                                        for i in range(4)))  # fmt: skip
        assert sorted(r.json()["changed"] for r in racing) == [False, False, False, True]
        log = (await client.get("/actions", params={"target": f"risk_flag:{first['id']}"})).json()["items"]
        assert (await client.post("/risk/flags/999999999999/review", json={"reason": "x"})).status_code == 404
        for bad_path, payload in ((path, {"reason": " "}), (path, {}), ("/risk/flags/0/review", {"reason": "x"}),
                                  ("/risk/flags/x/review", {"reason": "x"})):  # fmt: skip
            assert (await client.post(bad_path, json=payload)).status_code == 400, (bad_path, payload)
        assert (await client.get(path)).status_code == 405
    [action] = log
    assert (action["action"], action["key"], action["reason"]) == ("review", "ops", "same household, not a ring")
    state = {"user": user_id, "kind": "both_sides", "score": first["score"]}
    assert action["before"] == {**state, "reviewed_at": None, "reviewer": None}
    assert action["after"] == {**state, "reviewed_at": body["flag"]["reviewed_at"], "reviewer": "ops"}
    count = await db.fetchval("SELECT count(*) FROM admin_actions WHERE target = $1", f"risk_flag:{second['id']}")
    assert count == 1
    row = await db.fetchrow("SELECT reviewer, reviewed_at FROM risk_flags WHERE id = $1", first["id"])
    assert row is not None and row["reviewer"] == "ops"


async def test_a_users_view_shows_their_open_flags_limits_and_exclusion(
    office: RunningNode, bank: Ledger, db: asyncpg.Connection
) -> None:
    ws, user_id = await player(office, bank, 500)
    plain, plain_id = await player(office, bank)
    limited = await request(ws, {"t": "set_limit", "id": 1, "kind": "loss", "period": "day", "amount": 50})
    excluded = await request(ws, {"t": "exclude", "id": 2, "kind": "self_exclusion", "days": None})
    assert excluded["exclusion"] == {"kind": "self_exclusion", "until": None}
    await add_flags(db, user_id, range(3), FlagKind.REFUND_CYCLING)
    async with admin(office, READ_KEY) as reader, admin(office) as writer:
        flags = await listed(reader, user=user_id)
        await writer.post(f"/risk/flags/{flags[0]['id']}/review", json={"reason": "refunds explained"})
        view = (await reader.get(f"/users/{user_id}")).json()
        empty = (await reader.get(f"/users/{plain_id}")).json()
    assert view["id"] == user_id and view["balance"] == 500 and view["open_risk_flags"] == 2
    assert view["responsible_gaming"] == {"limits": limited["limits"],
                                          "exclusion": {"kind": "self_exclusion", "until": None}}  # fmt: skip
    assert view["responsible_gaming"]["limits"][0]["amount"] == 50
    assert empty["open_risk_flags"] == 0 and empty["responsible_gaming"] == {"limits": [], "exclusion": None}
    # The view reads them; the exclusion stays whatever the back office does.
    assert (await request(ws, {"t": "limits", "id": 3}))["exclusion"] == {"kind": "self_exclusion", "until": None}
    for sock in (ws, plain):
        await sock.close()


def test_no_route_of_the_back_office_changes_a_players_own_limits_or_exclusion() -> None:
    writes = [e.path for e in ENDPOINTS if e.method != "GET"]
    assert writes and not [path for path in writes if "limit" in path or "exclu" in path or "responsible" in path]
