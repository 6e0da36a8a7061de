"""Notifications end to end: the outbox in real PostgreSQL, senders sending through aiogram to the Bot API
test server (tests/telegram/botapi.py, with Telegram's flood limits), flood gates in a real Redis.

A sender here is what a node runs (:class:`server.telegram.Sender`); two of them with two Redis gates
are two nodes. The test server records every call with the time it arrived: the limits, the pause after
a 429 and "sent once" are read from that record. The deposit receipt is tested through a real node and
its webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.cli import main
from server.telegram import (
    FloodGate,
    FloodLimits,
    NotificationKind,
    Sender,
    SenderOptions,
    Source,
    create_bot,
    deposit_key,
    mark_reachable,
    mark_unreachable,
    queue,
)
from server.telegram.announcements import open_announcement, queue_batch
from server.telegram.floodcontrol import MemoryFloodGate, RedisFloodGate
from server.telegram.notifications import claim
from tests.conftest import TEST_BOT_TOKEN, StartNode
from tests.edge.client import authed
from tests.services import migrated_pool, scratch_database
from tests.telegram.botapi import BotApiServer
from tests.telegram.test_cashier import cashier_node, delivered, deposit

pytestmark = pytest.mark.integration
JSON = dict[str, Any]
GRACE = 0.05
"""Seconds after a 429 during which a message already let through by another sender may still arrive:
the pause is set once the 429's answer is back (Telegram sees the same: requests already on the way)."""


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
async def notify_db(pg_server_url: str) -> AsyncIterator[str]:
    """A database of this module's own: no other test's node sends these rows, no row of theirs is sent here."""
    async with scratch_database(pg_server_url, "croupier_notify") as url, migrated_pool(url):
        yield url


@pytest.fixture
async def npool(notify_db: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the module's database; nothing is left queued after the test."""
    async with migrated_pool(notify_db, max_size=8) as pool:
        yield pool
        await pool.execute("UPDATE notifications SET status = 'dropped', last_error = 'test ended' "
                           "WHERE status IN ('queued', 'sending')")  # fmt: skip


def fast(**changes: Any) -> SenderOptions:
    """Sender options for tests: a short poll; the rest production's unless changed."""
    return SenderOptions(**{"poll": 0.02, **changes})


@contextlib.asynccontextmanager
async def running(pool: asyncpg.Pool, botapi: BotApiServer, gate: FloodGate | None = None,
                  options: SenderOptions | None = None, *, name: str = "node",
                  jitter: float | None = None) -> AsyncIterator[Sender]:  # fmt: skip
    """A started sender with its own bot on the test server (and its own in-process gate unless given);
    ``jitter`` fixes the retry schedule's jitter."""
    bot = create_bot(TEST_BOT_TOKEN, api_url=botapi.base_url)
    options = options or fast()
    sender = Sender(pool, bot, gate or MemoryFloodGate(options.limits), options, name=name,
                    **({} if jitter is None else {"jitter": lambda: jitter}))  # fmt: skip
    sender.start()
    try:
        yield sender
    finally:
        await sender.close()
        await bot.session.close()


@contextlib.asynccontextmanager
async def redis_gates(redis_url: str, count: int, limits: FloodLimits | None = None) -> AsyncIterator[list[FloodGate]]:
    """``count`` gates of one bot in Redis (one per node), on keys of this test's own."""
    prefix = f"test-{secrets.token_hex(4)}:"
    gates: list[FloodGate] = [RedisFloodGate(redis_url, limits or FloodLimits(), bot_id=123456789, prefix=prefix)
                              for _ in range(count)]  # fmt: skip
    try:
        yield gates
    finally:
        for gate in gates:
            await gate.close()


async def reachable(pool: asyncpg.Pool, users: Iterable[int], language: str | None = None) -> None:
    async with pool.acquire() as conn:
        for user in users:
            await mark_reachable(conn, user, language_code=language)


async def receipts(pool: asyncpg.Pool, rows: Sequence[tuple[int, int]]) -> list[bool]:
    """Queue a deposit receipt (user, chips) each, keyed by a fresh charge id; one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        return [await queue(conn, user, NotificationKind.DEPOSIT_RECEIPT, {"stars": chips, "chips": chips},
                            deposit_key(secrets.token_hex(8))) for user, chips in rows]  # fmt: skip


async def settled(pool: asyncpg.Pool, users: Iterable[int], timeout: float = 30.0) -> list[asyncpg.Record]:
    """Wait until no notification of ``users`` is queued or being sent; their rows, by id."""
    users = list(users)
    async with asyncio.timeout(timeout):
        while await pool.fetchval("SELECT count(*) FROM notifications WHERE user_id = ANY($1) "
                                  "AND status IN ('queued', 'sending')", users):  # fmt: skip
            await asyncio.sleep(0.02)
    return await pool.fetch("SELECT * FROM notifications WHERE user_id = ANY($1) ORDER BY id", users)


async def sends(botapi: BotApiServer) -> list[JSON]:
    """The sendMessage calls so far, in order of arrival."""
    return sorted(await botapi.calls("sendMessage"), key=lambda call: call["time"])


def chat_of(call: JSON) -> int:
    return int(call["params"]["chat_id"])


def most_in_any_window(times: Sequence[float], window: float) -> int:
    """The most of ``times`` (sorted) within any half-open ``window`` seconds, as the test server counts."""
    return max((sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times)), default=0)


# ------------------------------------------------------------------------------------ deposit receipt


async def test_a_paid_deposit_queues_one_receipt_and_it_is_sent_once(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    user = 7_300_001
    async with cashier_node(start_node, botapi) as node:
        ws, _ = await authed(node, user)
        await mark_reachable(db, user, source=Source.START)  # as /start does
        invoice = await deposit(ws, 25)
        outcome = await botapi.pay(invoice["url"], user)
        assert outcome["status"] == "paid"
        (receipt,) = await botapi.calls("sendMessage", wait=10)
        assert chat_of(receipt) == user and receipt["status"] == 200
        assert receipt["params"]["text"].startswith("Payment received: 25 Stars. 25 chips are on your balance.")
        # Telegram delivers the payment again, and the same charge in another update: no second receipt.
        await botapi.redeliver(outcome["message_update_id"])
        await delivered(botapi)
        await asyncio.sleep(1.0)  # two polls of the node's sender
        assert len(await botapi.calls("sendMessage")) == 1
        await ws.close()
    (row,) = await db.fetch("SELECT * FROM notifications WHERE user_id = $1", user)
    assert (row["kind"], row["status"], row["attempts"]) == ("deposit_receipt", "sent", 1)
    assert row["dedupe_key"] == deposit_key(outcome["charge_id"]) and row["sent_at"] is not None


async def test_a_payment_by_an_unreachable_user_is_credited_and_its_receipt_dropped(
    start_node: StartNode, botapi: BotApiServer, db: asyncpg.Connection
) -> None:
    user = 7_300_002  # never pressed /start, initData did not allow messages
    async with cashier_node(start_node, botapi) as node:
        ws, _ = await authed(node, user)
        invoice = await deposit(ws, 5)
        assert (await botapi.pay(invoice["url"], user))["status"] == "paid"
        assert {d["status"] for d in await delivered(botapi)} == {200}
        await ws.close()
    assert await db.fetchval("SELECT status FROM notifications WHERE user_id = $1", user) == "dropped"
    assert await db.fetchval("SELECT balance FROM accounts WHERE user_id = $1", user) == 5
    assert await botapi.calls("sendMessage") == []


# --------------------------------------------------------------------------------------- reachability


@pytest.mark.parametrize("state", ["blocked", "deactivated"])
async def test_a_403_marks_the_user_unreachable_and_drops_their_queue(
    npool: asyncpg.Pool, botapi: BotApiServer, state: str
) -> None:
    user = 7_310_001 if state == "blocked" else 7_310_002
    await reachable(npool, [user])
    await botapi.set_chat(user, state)  # type: ignore[arg-type]
    await receipts(npool, [(user, 10), (user, 20), (user, 30)])
    async with running(npool, botapi) as sender:
        rows = await settled(npool, [user])
    assert [row["status"] for row in rows] == ["dropped"] * 3
    assert all("unreachable: TelegramForbiddenError: Forbidden:" in row["last_error"] for row in rows)
    (call,) = await sends(botapi)  # one try told all: the other two were never sent
    assert call["status"] == 403 and sender.stats.unreachable == 1
    recipient = await npool.fetchrow("SELECT * FROM notify_recipients WHERE user_id = $1", user)
    assert (recipient["reachable"], recipient["source"]) == (False, "forbidden")
    assert await receipts(npool, [(user, 40)]) == [False]  # queued from now on: dropped at once
    assert await npool.fetchval("SELECT count(*) FROM notifications WHERE user_id = $1 AND status = 'queued'",
                                user) == 0  # fmt: skip
    await reachable(npool, [user])  # they press /start again
    assert await receipts(npool, [(user, 50)]) == [True]


async def test_only_reachable_users_get_messages(npool: asyncpg.Pool, botapi: BotApiServer) -> None:
    started, stranger, blocked, late = 7_320_001, 7_320_002, 7_320_003, 7_320_004
    await reachable(npool, [started, blocked, late])
    async with npool.acquire() as conn:
        await mark_unreachable(conn, blocked, source=Source.FORBIDDEN, reason="Forbidden: bot was blocked by the user")
    assert await receipts(npool, [(started, 1), (stranger, 2), (blocked, 3), (late, 4)]) == [True, False, False, True]
    async with npool.acquire() as conn:  # unreachable after queueing, before sending: its row goes with it
        await mark_unreachable(conn, late, source=Source.CHAT_NOT_FOUND, reason="Bad Request: chat not found")
    async with running(npool, botapi):
        rows = await settled(npool, [started, stranger, blocked, late])
    assert [(row["user_id"], row["status"]) for row in rows] == [
        (started, "sent"), (stranger, "dropped"), (blocked, "dropped"), (late, "dropped")
    ]  # fmt: skip
    assert [chat_of(call) for call in await sends(botapi)] == [started]


async def test_chat_not_found_makes_the_user_unreachable(npool: asyncpg.Pool, botapi: BotApiServer) -> None:
    user = 7_320_010
    await reachable(npool, [user])
    await botapi.set_chat(user, "not_found")
    await receipts(npool, [(user, 1)])
    async with running(npool, botapi):
        (row,) = await settled(npool, [user])
    assert row["status"] == "dropped" and "chat not found" in row["last_error"]
    assert await npool.fetchval("SELECT source FROM notify_recipients WHERE user_id = $1", user) == "chat_not_found"


# ---------------------------------------------------------------------------------------- languages


async def test_texts_are_in_the_users_language_falling_back_to_english(
    npool: asyncpg.Pool, botapi: BotApiServer
) -> None:
    russian, german, unknown, signed_in = 7_330_001, 7_330_002, 7_330_003, 7_330_004
    await reachable(npool, [russian], language="ru")
    await reachable(npool, [german], language="de")
    await reachable(npool, [unknown, signed_in], language="ru")
    await npool.execute("INSERT INTO users (id, first_name, language_code) VALUES ($1, 'Signed', 'en-GB')", signed_in)
    await receipts(npool, [(russian, 7), (german, 7), (unknown, 7), (signed_in, 7)])
    await npool.execute("UPDATE notify_recipients SET language_code = NULL WHERE user_id = $1", unknown)
    async with running(npool, botapi):
        await settled(npool, [russian, german, unknown, signed_in])
    texts = {chat_of(call): call["params"]["text"] for call in await sends(botapi)}
    assert texts[russian].startswith("Платёж получен: 7 звёзд.")
    assert texts[german].startswith("Payment received: 7 Stars.")
    assert texts[unknown].startswith("Платёж получен")  # the language is the one it was queued with
    assert texts[signed_in].startswith("Payment received")  # the users row (from initData) wins over /start's


# ------------------------------------------------------------------------------------- limits, 429s


@pytest.mark.timing
async def test_two_senders_never_pass_telegrams_limits_nor_send_a_row_twice(
    npool: asyncpg.Pool, botapi: BotApiServer, redis_url: str
) -> None:
    """90 rows (15 users with two) through two senders (two nodes, one Redis): the test server, which
    enforces 30 a second per bot and 1 a second per chat, never answers 429; every row is sent once.

    The server counts a message when it arrives, the gate when it lets it go: on a loaded machine one
    request can be held up longer than the default 20 ms margin, and two arrivals then fall closer than
    their stamps. The margin here (250 ms) is wider than this machine's worst hold-up under the CI load,
    so what is tested is the sharing (two senders never double the rate), not the loopback's jitter."""
    users = list(range(7_340_001, 7_340_076))
    await reachable(npool, users)
    rows = [(user, 1000 + n) for n, user in enumerate(users)] + [(user, 2000 + n) for n, user in enumerate(users[:15])]
    await receipts(npool, rows)
    async with redis_gates(redis_url, 2, FloodLimits(margin=0.25)) as (one, two), \
            running(npool, botapi, one, name="a") as a, running(npool, botapi, two, name="b") as b:  # fmt: skip
        done = await settled(npool, users)
    calls = await sends(botapi)
    assert [call["status"] for call in calls] == [200] * len(rows), [c for c in calls if c["status"] != 200][:3]
    assert {row["status"] for row in done} == {"sent"} and {row["attempts"] for row in done} == {1}
    per_row = Counter((chat_of(call), call["params"]["text"].split(".")[1]) for call in calls)
    assert len(per_row) == len(rows) and set(per_row.values()) == {1}  # each (chat, chips) exactly once
    assert a.stats.sent > 0 and b.stats.sent > 0 and a.stats.sent + b.stats.sent == len(rows)
    times = [call["time"] for call in calls]
    assert most_in_any_window(times, 1.0) <= 30
    by_chat: dict[int, list[float]] = {}
    for call in calls:
        by_chat.setdefault(chat_of(call), []).append(call["time"])
    assert min(later - first for first, later in (t for t in by_chat.values() if len(t) == 2)) >= 1.0


async def test_a_429_pauses_every_sender_for_retry_after(
    npool: asyncpg.Pool, botapi: BotApiServer, redis_url: str
) -> None:
    """Two senders (two nodes) are sending when one gets a 429 with retry_after 1: no message reaches the
    test server until the pause ends (beyond those already on their way), both resume within 100 ms."""
    users = list(range(7_350_001, 7_350_061))
    await reachable(npool, users)
    await receipts(npool, [(user, 1) for user in users])
    async with redis_gates(redis_url, 2) as (one, two), running(npool, botapi, one, name="a") as a, \
            running(npool, botapi, two, name="b") as b:  # fmt: skip
        await botapi.calls("sendMessage", wait=10, min_count=8)
        await botapi.fail_next("sendMessage", retry_after=1)
        rows = await settled(npool, users)
    assert {row["status"] for row in rows} == {"sent"}
    calls = await sends(botapi)
    (throttled,) = [call for call in calls if call["status"] == 429]
    assert a.stats.throttled + b.stats.throttled == 1
    start, end = throttled["time"], throttled["time"] + 1.0
    during = [call["time"] - start for call in calls if start + GRACE < call["time"] < end]
    assert during == [], f"messages {during} s after the 429, before its retry_after ended"
    after = [call for call in calls if call["time"] >= end]
    assert after, "nothing was sent after the pause"
    assert after[0]["time"] - end < 0.1, f"resumed {1000 * (after[0]['time'] - end):.0f} ms after the pause"
    claimed_by = {row["user_id"]: row["claimed_by"].split(":")[0] for row in rows}
    assert {claimed_by[chat_of(call)] for call in after} == {"a", "b"}  # both senders resumed
    assert [call["status"] for call in calls].count(200) == len(users)


async def test_a_receipt_goes_before_the_rest_of_an_announcement(pg_server_url: str, botapi: BotApiServer) -> None:
    users, buyer = list(range(7_355_001, 7_355_031)), 7_355_100
    async with scratch_database(pg_server_url, "croupier_priority") as url, migrated_pool(url) as pool:
        await reachable(pool, users)
        async with pool.acquire() as conn:
            announcement = await open_announcement(conn, "sale", "The tables are open!")
            async with conn.transaction():
                await queue_batch(conn, announcement)
        await reachable(pool, [buyer])
        await receipts(pool, [(buyer, 10)])  # queued after the 30 announcement rows
        async with running(pool, botapi):
            await settled(pool, [*users, buyer])
    calls = await sends(botapi)
    assert chat_of(calls[0]) == buyer and len(calls) == len(users) + 1


# ---------------------------------------------------------------------------------- retries, leases


async def test_server_errors_are_retried_with_backoff_then_dead_lettered(
    npool: asyncpg.Pool, botapi: BotApiServer
) -> None:
    dead, recovered = 7_360_001, 7_360_002
    await reachable(npool, [dead, recovered])
    options = fast(max_attempts=3, retry_base=0.2)
    async with running(npool, botapi, options=options, jitter=0.0) as sender:  # the schedule's lower edge: 0.1, 0.2 s
        await botapi.fail_next("sendMessage", count=3, error_code=500)
        await receipts(npool, [(dead, 1)])
        (row,) = await settled(npool, [dead])
        await botapi.fail_next("sendMessage", count=2, error_code=502)
        await receipts(npool, [(recovered, 2)])
        (later,) = await settled(npool, [recovered])
    assert (row["status"], row["attempts"]) == ("dead", 3)
    assert "TelegramServerError: Internal Server Error" in row["last_error"]
    assert (later["status"], later["attempts"], later["last_error"]) == ("sent", 3, None)
    calls = await sends(botapi)
    assert [(chat_of(c), c["status"]) for c in calls] == [(dead, 500)] * 3 + [(recovered, 502)] * 2 + [(recovered, 200)]
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(calls[:3])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps
    assert sender.stats.dead == 1 and sender.stats.retried == 4


async def test_a_bot_the_api_refuses_holds_its_notifications_and_gives_none_up(
    npool: asyncpg.Pool, botapi: BotApiServer
) -> None:
    user = 7_365_001
    await reachable(npool, [user])
    await botapi.fail_next("sendMessage", count=2, error_code=401)  # a revoked token, then back
    await receipts(npool, [(user, 1)])
    async with running(npool, botapi, options=fast(stall=0.2)):
        (row,) = await settled(npool, [user])
    assert (row["status"], row["attempts"]) == ("sent", 1)  # the same claim, never counted as a failure
    calls = await sends(botapi)
    assert [call["status"] for call in calls] == [401, 401, 200]
    assert calls[1]["time"] - calls[0]["time"] >= 0.2 and calls[2]["time"] - calls[1]["time"] >= 0.2


async def test_the_rows_of_a_sender_that_died_are_sent_once_its_lease_ends(
    npool: asyncpg.Pool, botapi: BotApiServer
) -> None:
    users = [7_370_001, 7_370_002, 7_370_003]
    await reachable(npool, users)
    await receipts(npool, [(user, 1) for user in users])
    held = await claim(npool, 10, lease=0.5, token="dead-node:1")  # claimed, never sent: the node died
    assert sorted(n.user_id for n in held) == users
    async with running(npool, botapi):
        await asyncio.sleep(0.3)
        assert await botapi.calls("sendMessage") == []  # still leased
        rows = await settled(npool, users)
    assert [(row["status"], row["attempts"]) for row in rows] == [("sent", 2)] * 3
    assert sorted(chat_of(call) for call in await sends(botapi)) == users


# ------------------------------------------------------------------------------------ croupier notify


async def test_croupier_notify_queues_every_reachable_user_once_resumes_and_waits_for_the_sending(
    pg_server_url: str, botapi: BotApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    users = list(range(7_380_001, 7_380_046))
    text = "Tournament tonight at 20:00!"
    async with scratch_database(pg_server_url, "croupier_announce") as url, migrated_pool(url) as pool:
        await reachable(pool, users)
        await reachable(pool, [7_380_100])
        async with pool.acquire() as conn:
            await mark_unreachable(conn, 7_380_100, source=Source.FORBIDDEN, reason="blocked")
            # A first run died after queueing one batch of 20.
            first = await open_announcement(conn, "launch", text)
            async with conn.transaction():
                first = await queue_batch(conn, first, batch=20)
        assert first.queued_through == users[19] and not first.done_queueing
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("CROUPIER_BOT_TOKEN", TEST_BOT_TOKEN)
        monkeypatch.setenv("CROUPIER_DATA_DIR", str(tmp_path))
        async with running(pool, botapi):
            status = await asyncio.to_thread(main, ["notify", "--all", text, "--id", "launch"])
            out = capsys.readouterr().err
            assert status == 0, out
            again = await asyncio.to_thread(main, ["notify", "--all", text, "--id", "launch"])
            out_again = capsys.readouterr().err
            other = await asyncio.to_thread(main, ["notify", "--all", "Another text", "--id", "launch", "--no-wait"])
            refused = capsys.readouterr().err
        rows = await pool.fetch("SELECT user_id, status FROM notifications ORDER BY user_id")
    assert "announcement launch (id 1, resuming)" in out and "sent 45/45" in out
    assert out.rstrip().endswith("done: 45 sent, 0 dropped (unreachable), 0 dead")
    assert again == 0 and "done: 45 sent" in out_again
    assert other == 1 and "exists with another text" in refused
    assert [(row["user_id"], row["status"]) for row in rows] == [(user, "sent") for user in users]
    calls = await sends(botapi)
    assert sorted(chat_of(call) for call in calls) == users and {c["params"]["text"] for c in calls} == {text}


async def test_croupier_notify_refuses_an_empty_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CROUPIER_BOT_TOKEN", TEST_BOT_TOKEN)
    monkeypatch.setenv("CROUPIER_DATA_DIR", str(tmp_path))
    assert await asyncio.to_thread(main, ["notify", "--all", "   "]) == 2
    assert "the text is empty" in capsys.readouterr().err
