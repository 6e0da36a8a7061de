"""The outbox and its relay: every committed user event is announced, at least once, deduplicated by offset."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from protocol import JSON
from server.broker.memory import MemoryBroker
from server.broker.redis import RedisBroker
from server.edge.audience import Audience
from server.edge.feeds import UserFeeds
from server.ledger import BetRequest, Ledger, OutboxRelay
from tests.conftest import RunningNode
from tests.edge.client import authed, init_data, open_socket, recv, request
from tests.edge.test_audience import FakePeer
from tests.ledger.conftest import create_open_round, next_user_id, sign_up
from tests.services import free_port, migrated_pool


@pytest.fixture
async def own_pool(empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database of this test's own: no other test's events in its outbox."""
    async with migrated_pool(empty_database) as pool:
        yield pool


async def unrelayed(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch('SELECT "offset" FROM user_events_pending ORDER BY "offset"')
    return [row["offset"] for row in rows]


async def test_events_committed_but_never_published_are_swept_once(own_pool: asyncpg.Pool) -> None:
    # A ledger with no relay behind it is a node that died between commit and publish.
    orphan = Ledger(own_pool, welcome_credit=50)
    await orphan.start()
    user = next_user_id()
    await sign_up(orphan, user)
    await orphan.deposit(user, 25, ref="charge-1")
    await orphan.close()
    assert await unrelayed(own_pool) == [1, 2]

    broker = MemoryBroker()
    received: list[dict[str, Any]] = []
    await broker.subscribe(f"user:{user}", lambda _, payload: received.append(json.loads(payload)))
    relay = OutboxRelay(own_pool, broker)
    assert await relay.sweep(grace=60) == 0  # still young: the committing node may yet publish them
    assert await relay.sweep(grace=0) == 2
    assert await relay.sweep(grace=0) == 0  # relayed once, not again
    assert await unrelayed(own_pool) == []
    assert [(e["t"], e["offset"], e["balance"], e["delta"], e["reason"]) for e in received] == [
        ("balance", 1, 50, 50, "deposit"),
        ("balance", 2, 75, 25, "deposit"),
    ]


async def test_pruning_keeps_an_old_event_until_it_is_relayed(own_pool: asyncpg.Pool) -> None:
    orphan = Ledger(own_pool, welcome_credit=50)  # no relay: the events stay unrelayed
    await orphan.start()
    user = next_user_id()
    await sign_up(orphan, user)
    await orphan.close()
    await own_pool.execute("UPDATE user_events SET created_at = now() - interval '1 day' WHERE user_id = $1", user)
    relay = OutboxRelay(own_pool, MemoryBroker(), retention=60)
    await relay.prune()
    assert await own_pool.fetchval("SELECT count(*) FROM user_events WHERE user_id = $1", user) == 1
    assert await relay.sweep(grace=0) == 1
    await relay.prune()
    assert await own_pool.fetchval("SELECT count(*) FROM user_events WHERE user_id = $1", user) == 0


async def test_a_broker_that_does_not_take_the_events_leaves_them_for_later(
    own_pool: asyncpg.Pool, redis_url: str
) -> None:
    down = RedisBroker(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there: Redis is down
    local: list[bytes] = []
    await down.subscribe("user:7", lambda _, payload: local.append(payload))
    ledger = Ledger(own_pool, welcome_credit=10, announce=OutboxRelay(own_pool, down).announce)
    await ledger.start()
    try:
        await sign_up(ledger, 7)
        await asyncio.sleep(0.3)
        assert len(local) == 1  # this node's own sockets still got it
        assert await unrelayed(own_pool) == [1]  # but it did not reach the other nodes: kept
        with pytest.raises(ConnectionError):
            await OutboxRelay(own_pool, down).sweep(grace=0)
        assert await unrelayed(own_pool) == [1]

        # Redis is back: the sweep of any node relays it to the others.
        up, other = RedisBroker(redis_url), RedisBroker(redis_url)
        elsewhere: list[bytes] = []
        await other.subscribe("user:7", lambda _, payload: elsewhere.append(payload))
        assert await OutboxRelay(own_pool, up).sweep(grace=0) == 1
        for _ in range(100):
            if elsewhere:
                break
            await asyncio.sleep(0.02)
        assert [json.loads(p)["offset"] for p in elsewhere] == [1]
        assert await unrelayed(own_pool) == []
        await up.close()
        await other.close()
    finally:
        await ledger.close()
        await down.close()


async def test_a_bets_push_is_published_in_the_turn_its_bettor_is_acknowledged(own_pool: asyncpg.Pool) -> None:
    # A socket's frames of one loop turn leave in one write at its end (the cork in server/edge/wsprotocol.py,
    # a call_soon from the turn's first frame). The balance push must reach the bettor's handler in the turn
    # the ack resumes the bettor, before such a callback, for the ack and the push to share that write.
    broker = MemoryBroker()
    relay = OutboxRelay(own_pool, broker)
    ledger = Ledger(own_pool, welcome_credit=100, announce=relay.announce)
    await ledger.start()
    try:
        user = next_user_id()
        await sign_up(ledger, user)
        round_id = await create_open_round(own_pool, "dice")
        bet_pushes: list[int] = []  # offsets of the user's bet pushes (the welcome credit's may come any time)

        def pushed(_: str, payload: bytes) -> None:
            event = json.loads(payload)
            if event["reason"] == "bet":
                bet_pushes.append(event["offset"])

        await broker.subscribe(f"user:{user}", pushed)
        placed = await ledger.place_bet(BetRequest(user, "dice", round_id, 10, {"target": 5000, "side": "over"}))
        loop = asyncio.get_running_loop()
        written_at_turn_end: asyncio.Future[list[int]] = loop.create_future()
        loop.call_soon(lambda: written_at_turn_end.set_result(list(bet_pushes)))
        assert await written_at_turn_end == [placed.version]
    finally:
        await ledger.close()
        await relay.close()  # publishes and marks what was announced before it stops
    assert await unrelayed(own_pool) == []


async def test_a_second_copy_of_a_user_event_is_dropped() -> None:
    broker = MemoryBroker()
    feeds = UserFeeds(broker, Audience())
    peer = FakePeer(JSON)
    await feeds.join(9, peer)

    def event(offset: int) -> bytes:
        return json.dumps({"t": "balance", "ch": "user", "offset": offset, "epoch": "e", "balance": offset}).encode()

    for offset in (1, 2, 2, 1, 4, 3, 4):  # duplicates and a late one (3 arrives after 4)
        await broker.publish("user:9", event(offset))
    assert [json.loads(frame.data)["offset"] for frame in peer.frames] == [1, 2, 4, 3]


async def test_a_commit_by_a_process_that_never_publishes_still_reaches_the_socket(
    node_server: RunningNode, bank: Ledger
) -> None:
    user = next_user_id()
    ws, welcome = await authed(node_server, user)
    await bank.deposit(user, 40, ref=f"charge-{user}")  # the bank ledger has no relay: only the outbox knows
    push = await recv(ws, timeout=10)  # the node's sweeper publishes it after the grace period
    assert (push["t"], push["ch"], push["reason"], push["delta"], push["balance"]) == ("balance", "user",
                                                                                      "deposit", 40, 40)  # fmt: skip
    assert push["offset"] == welcome["offset"] + 1 and push["epoch"] == welcome["epoch"]
    await ws.close()


async def test_auth_with_since_replays_the_user_events_missed_between_sockets(
    node_server: RunningNode, bank: Ledger
) -> None:
    user = next_user_id()
    ws, welcome = await authed(node_server, user)
    await ws.close()
    await bank.deposit(user, 5, ref=f"a-{user}")
    await bank.adjust(user, -2, reason="test")
    since = {"offset": welcome["offset"], "epoch": welcome["epoch"]}

    ws = await open_socket(node_server)
    back = await request(ws, {"t": "auth", "id": 2, "init_data": init_data(user), "since": since})
    assert back["recovered"] is True and back["offset"] == welcome["offset"] + 2 and back["balance"] == 3
    assert [(e["offset"], e["reason"], e["delta"], e["balance"]) for e in back["missed"]] == [
        (welcome["offset"] + 1, "deposit", 5, 5),
        (welcome["offset"] + 2, "adjust", -2, 3),
    ]
    await ws.close()

    for position in ({"offset": welcome["offset"], "epoch": "another"}, {"offset": 10**6, "epoch": welcome["epoch"]}):
        ws = await open_socket(node_server)
        back = await request(ws, {"t": "auth", "id": 3, "init_data": init_data(user), "since": position})
        assert (back["t"], back["recovered"], back["missed"], back["balance"]) == ("welcome", False, [], 3)
        await ws.close()

    # History pruned (older than the retention): not recoverable, the welcome's balance is the truth.
    async with asyncpg.create_pool(node_server.settings.database_url, min_size=1, max_size=1) as pool:
        await pool.execute("UPDATE user_events SET created_at = now() - interval '1 day' WHERE user_id = $1", user)
        await pool.execute("DELETE FROM user_events_pending WHERE user_id = $1", user)  # relayed, all of them
        await OutboxRelay(pool, MemoryBroker(), retention=60).prune()
    ws = await open_socket(node_server)
    back = await request(ws, {"t": "auth", "id": 4, "init_data": init_data(user), "since": since})
    assert (back["recovered"], back["missed"], back["balance"]) == (False, [], 3)
    await ws.close()


async def test_auth_with_a_malformed_since_names_the_field(node_server: RunningNode) -> None:
    ws = await open_socket(node_server)
    reply = await request(ws, {"t": "auth", "id": 1, "init_data": init_data(5), "since": {"offset": -1, "epoch": "x"}})
    assert (reply["t"], reply["code"], reply["field"]) == ("error", "bad_request", "since.offset")
    welcome = await request(ws, {"t": "auth", "id": 2, "init_data": init_data(5)})  # the socket stays for a retry
    assert welcome["t"] == "welcome" and "recovered" not in welcome
    await ws.close()


async def test_a_gap_in_a_user_channel_is_filled_from_the_history(own_pool: asyncpg.Pool) -> None:
    orphan = Ledger(own_pool, welcome_credit=10)
    await orphan.start()
    user = next_user_id()
    await sign_up(orphan, user)
    for ref in ("d2", "d3"):
        await orphan.deposit(user, 1, ref=ref)
    relay = OutboxRelay(own_pool, MemoryBroker())
    broker = MemoryBroker()
    feeds = UserFeeds(broker, Audience(), relay.events_after)
    peer = FakePeer(JSON)
    await feeds.join(user, peer, offset=0)
    third = await own_pool.fetchval('SELECT payload FROM user_events WHERE user_id = $1 AND "offset" = 3', user)
    await broker.publish(f"user:{user}", third)  # 1 and 2 were lost on the way (the broker was down)
    for _ in range(100):
        if len(peer.frames) == 3:
            break
        await asyncio.sleep(0.02)
    assert [json.loads(frame.data)["offset"] for frame in peer.frames] == [3, 1, 2]

    # Nothing arrives to reveal a loss, but the broker says it was disconnected: catch up anyway.
    await orphan.deposit(user, 1, ref="d4")
    await orphan.close()
    feeds.catch_up_all()
    for _ in range(100):
        if len(peer.frames) == 4:
            break
        await asyncio.sleep(0.02)
    assert [json.loads(frame.data)["offset"] for frame in peer.frames] == [3, 1, 2, 4]
    await broker.publish(f"user:{user}", third)
    assert len(peer.frames) == 4  # and never twice


async def test_a_socket_joining_gets_only_events_after_its_welcome(own_pool: asyncpg.Pool) -> None:
    broker = MemoryBroker()
    feeds = UserFeeds(broker, Audience())
    peer = FakePeer(JSON)
    await feeds.join(5, peer, offset=7)  # the welcome said balance as of offset 7

    def event(offset: int) -> bytes:
        return json.dumps({"t": "balance", "ch": "user", "offset": offset, "epoch": "e", "balance": 1}).encode()

    for offset in (6, 7, 8):  # a late relay of old events, then a new one
        await broker.publish("user:5", event(offset))
    assert [json.loads(frame.data)["offset"] for frame in peer.frames] == [8]
