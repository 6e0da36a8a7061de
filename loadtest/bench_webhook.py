"""Benchmark: the Telegram webhook's intake, and its pre-checkout answers while a swarm plays.

A real ``croupier serve`` process with a webhook secret, its Bot API pointed at the test server
(tests/telegram/botapi.py, a real loopback HTTP server, flood limits off), on a fresh database:

1. ``--users`` players sign in over real sockets and each asks for ``--orders-per-user`` deposits
   (``deposit`` -> an order and a ``createInvoiceLink`` call each).
2. Ceiling: updates that carry nothing to handle (``{"update_id": n}``) posted to
   ``/telegram/webhook`` by ``--concurrency`` HTTP clients: what the route answers per second
   when it only authenticates and parses.
3. Intake: one ``message.successful_payment`` update per order, posted the same way: each is a
   transaction (update recorded, order paid, wallet credited, ``balance`` event in the outbox).
   Checked afterwards: every order paid once, and the deposits in the ledger sum to the Stars paid.
4. With ``--swarm N``: ``N`` locust players (loadtest/locustfile.py, headless) play crash, dice and
   roulette; meanwhile ``pre_checkout_query`` updates for pending orders are posted one at a time
   (``--checkouts``, paced at ``--checkout-rate``/s) and each request's time is measured. The
   node answers the query (``answerPreCheckoutQuery`` to the test server) inside the request, so
   the request's time bounds the answer time. Telegram's budget is 10 s.

    .venv/bin/python -m loadtest.bench_webhook --users 300 --orders-per-user 10 --concurrency 64
    .venv/bin/python -m loadtest.bench_webhook --users 100 --swarm 2000 --checkouts 300

Prints updates/s against the ceiling and their ratio, and pre-checkout p50/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from websockets.asyncio.client import connect

from loadtest.common import bench_database, latency_summary, node_process
from server.auth import sign_init_data
from tests.telegram.botapi import BotApiServer

TOKEN = "7000001:bench-webhook-token-abcdefghij"
SECRET = "bench-webhook-secret-0123456789"
HEADER = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
FIRST_USER = 81_000_000


@dataclass(frozen=True, slots=True)
class Order:
    user_id: int
    order_id: int
    stars: int


async def open_orders(ws_url: str, users: int, per_user: int) -> list[Order]:
    """Each user signs in and asks for ``per_user`` deposits, all users at once."""

    async def one(user_id: int) -> list[Order]:
        async with connect(ws_url, subprotocols=["croupier.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"t": "auth", "id": 0, "init_data": sign_init_data(TOKEN, user_id=user_id)}))
            welcome = json.loads(await ws.recv())
            assert welcome["t"] == "welcome", welcome
            made: list[Order] = []
            for n in range(per_user):
                stars = 1 + (user_id + n) % 50
                await ws.send(json.dumps({"t": "deposit", "id": n, "stars": stars}))
                while True:
                    reply = json.loads(await ws.recv())
                    if reply.get("id") == n:
                        break
                assert reply["t"] == "invoice", reply
                made.append(Order(user_id, int(reply["order"]), stars))
            return made

    batches = await asyncio.gather(*(one(FIRST_USER + i) for i in range(users)))
    return [order for batch in batches for order in batch]


def payment(update_id: int, order: Order) -> dict[str, Any]:
    user = {"id": order.user_id, "is_bot": False, "first_name": f"Bench {order.user_id}"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "from": user,
            "chat": {"id": order.user_id, "type": "private", "first_name": user["first_name"]},
            "date": int(time.time()),
            "successful_payment": {
                "currency": "XTR",
                "total_amount": order.stars,
                "invoice_payload": str(order.order_id),
                "telegram_payment_charge_id": f"stxbench{order.order_id}-{secrets.token_hex(4)}",
                "provider_payment_charge_id": f"pbench{order.order_id}",
            },
        },
    }


def pre_checkout(update_id: int, order: Order) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "pre_checkout_query": {
            "id": f"bench-{update_id}",
            "from": {"id": order.user_id, "is_bot": False, "first_name": f"Bench {order.user_id}"},
            "currency": "XTR",
            "total_amount": order.stars,
            "invoice_payload": str(order.order_id),
        },
    }


async def post_all(url: str, updates: list[dict[str, Any]], concurrency: int) -> tuple[float, list[float]]:
    """Post every update with ``concurrency`` clients (aiohttp, keep-alive: httpx's client alone tops out
    near 300 requests/s here); the seconds it took and each request's ms."""
    queue = list(reversed(updates))
    times: list[float] = []
    headers = {**HEADER, "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            update = queue.pop()
            sent = time.perf_counter()
            async with session.post(url, data=json.dumps(update), headers=headers) as response:
                body = await response.read()
            times.append((time.perf_counter() - sent) * 1000)
            if response.status != 200:
                raise RuntimeError(f"update {update['update_id']}: {response.status} {body[:200]!r}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started, times


async def paced(url: str, updates: list[dict[str, Any]], rate: float) -> list[float]:
    """Post ``updates`` one at a time, ``rate`` a second; each request's ms."""
    times: list[float] = []
    headers = {**HEADER, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for update in updates:
            sent = time.perf_counter()
            async with session.post(url, data=json.dumps(update), headers=headers) as response:
                body = await response.read()
            times.append((time.perf_counter() - sent) * 1000)
            if response.status != 200:
                raise RuntimeError(f"pre-checkout {update['update_id']}: {response.status} {body[:200]!r}")
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - sent)))
    return times


async def ledger_check(database_url: str, orders: list[Order]) -> tuple[int, int, int]:
    """Orders paid, deposits in the ledger, and Stars paid vs chips deposited (1 chip per Star)."""
    conn = await asyncpg.connect(database_url)
    try:
        ids = [order.order_id for order in orders]
        paid = await conn.fetchval("SELECT count(*) FROM star_orders WHERE id = ANY($1::bigint[]) AND status = 'paid'",
                                   ids)  # fmt: skip
        deposits = await conn.fetchval(
            "SELECT count(*) FROM ledger_txns WHERE kind = 'deposit' AND ref LIKE 'stxbench%'"
        )
        chips = await conn.fetchval(
            "SELECT coalesce(sum(l.amount), 0) FROM ledger_txns t JOIN ledger_legs l ON l.txn_id = t.id "
            "WHERE t.kind = 'deposit' AND t.ref LIKE 'stxbench%' AND l.amount > 0"
        )
        return int(paid), int(deposits), int(chips)
    finally:
        await conn.close()


def swarm(ws_url: str, users: int, log: Path) -> subprocess.Popen[bytes]:
    """A headless locust swarm of ``users`` players (stopped by the caller)."""
    env = {**os.environ, "CROUPIER_BOT_TOKEN": TOKEN}
    command = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless", "-u", str(users),
               "-r", "200", "--host", ws_url, "--only-summary"]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--orders-per-user", type=int, default=10, help="at most 10: the node's unpaid-invoice limit")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--swarm", type=int, default=0, help="locust players during the pre-checkout part (0: none)")
    parser.add_argument("--checkouts", type=int, default=300)
    parser.add_argument("--checkout-rate", type=float, default=20.0)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to create the bench database on")
    args = parser.parse_args()

    env = {
        "CROUPIER_TELEGRAM_API_URL": "",
        "CROUPIER_WEBHOOK_SECRET": SECRET,
        "CROUPIER_DEPOSIT_DAILY_STARS": "100000000",
        "CROUPIER_GAMES": "crash,dice,roulette",  # the games the locust players play
        "CROUPIER_WELCOME_CREDIT": "100000",
        "CROUPIER_IP_CONNECT_RATE": "0",
    }
    with bench_database(args.database_url) as database_url, BotApiServer.start(TOKEN, rate_limits_enabled=False) as api:
        env["CROUPIER_TELEGRAM_API_URL"] = api.base_url
        with node_process(database_url, TOKEN, **env) as (ws_url, _pid):
            webhook = ws_url.replace("ws://", "http://").removesuffix("/ws") + "/telegram/webhook"
            started = time.perf_counter()
            orders = asyncio.run(open_orders(ws_url, args.users, args.orders_per_user))
            print(f"orders: {len(orders):,} made over sockets in {time.perf_counter() - started:.1f} s")
            # Payments arrive from many users at once, not user after user (each user's payments commit
            # one after another on the wallet's row lock).
            random.Random(7).shuffle(orders)
            checkouts = orders[: min(args.checkouts, len(orders) // 10)]
            to_pay = orders[len(checkouts) :]
            update_ids = iter(range(1, 10**9))
            empty = [{"update_id": next(update_ids)} for _ in to_pay]
            seconds, _ = asyncio.run(post_all(webhook, empty, args.concurrency))
            ceiling = len(empty) / seconds
            print(f"ceiling: {ceiling:,.0f} updates/s (nothing to handle; {args.concurrency} clients)")
            payments = [payment(next(update_ids), order) for order in to_pay]
            seconds, times = asyncio.run(post_all(webhook, payments, args.concurrency))
            intake = len(payments) / seconds
            print(f"intake: {intake:,.0f} successful_payment updates/s = {intake / ceiling:.0%} of the ceiling; "
                  f"request {latency_summary(times)}")  # fmt: skip
            paid, deposits, chips = asyncio.run(ledger_check(database_url, to_pay))
            stars = sum(order.stars for order in to_pay)
            verdict = "ok" if paid == deposits == len(to_pay) and chips == stars else "MISMATCH"
            print(f"check: {paid:,} orders paid, {deposits:,} deposits, {chips:,} chips for {stars:,} Stars: {verdict}")
            if args.swarm:
                log = Path(tempfile.mkstemp(prefix="croupier-bench-locust-", suffix=".log")[1])
                players = swarm(ws_url, args.swarm, log)
                try:
                    time.sleep(args.swarm / 200 + 10)  # ramp-up at 200/s, then settle
                    if players.poll() is not None:
                        raise RuntimeError(f"locust stopped: {log.read_text()[-2000:]}")
                    queries = [pre_checkout(next(update_ids), order) for order in checkouts]
                    times = asyncio.run(paced(webhook, queries, args.checkout_rate))
                    print(f"pre-checkout under {args.swarm:,} players: {len(times)} answered, "
                          f"{latency_summary(times)} (budget 10,000 ms)")  # fmt: skip
                finally:
                    os.killpg(players.pid, signal.SIGINT)
                    try:
                        players.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(players.pid, signal.SIGKILL)
                        players.wait()
                    print(f"  (locust log: {log})")


if __name__ == "__main__":
    main()
