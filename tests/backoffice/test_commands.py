"""The back office's ``croupier`` commands as an operator runs them (real processes): ``credit --key``,
``user block|unblock``, ``round void``, ``risk flags`` and ``risk review``, audited like the API's."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson

from protocol import CloseCode
from server.ledger import Ledger
from server.risk import Flag, FlagKind, Window, store_flags
from tests.backoffice.conftest import betting_round, dice_bet, player
from tests.conftest import StartNode
from tests.edge.client import closed_with, recv, request
from tests.ledger.conftest import next_user_id
from tests.services import clean_env


async def croupier(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "server", *args], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    return await asyncio.to_thread(run)  # the node under test keeps serving meanwhile


def environment(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(CROUPIER_DATA_DIR=str(tmp_path / "cli"), DATABASE_URL=database_url, **extra)


async def test_credit_with_a_key_credits_once(
    start_node: StartNode, bank: Ledger, database_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with start_node() as node:
        ws, user_id = await player(node, bank, 10)
        env = environment(database_url, tmp_path)
        key = f"cli-promo-{user_id}"
        first = await croupier("credit", str(user_id), "25", "--reason", "promo", "--key", key, env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"user {user_id}: credited 25; balance 35"
        again = await croupier("credit", str(user_id), "25", "--reason", "promo", "--key", key, env=env)
        assert again.returncode == 0 and "balance 35 (key" in again.stdout and "nothing moved" in again.stdout
        other = await croupier("credit", str(user_id), "26", "--reason", "promo", "--key", key, env=env)
        assert other.returncode == 1 and "was made for user" in other.stderr
        bad = await croupier("credit", str(user_id), "5", "--reason", "promo", "--key", "two words", env=env)
        assert bad.returncode == 2 and "--key" in bad.stderr
        # The node hears of the credit through the outbox (its sweeper relays what no node announced) and
        # pushes it to the socket; its balance answers follow.
        async with asyncio.timeout(15):
            while (push := await recv(ws, timeout=15)).get("t") != "balance" or push.get("balance") != 35:
                pass
        assert (await request(ws, {"t": "balance", "id": 1}))["balance"] == 35
        row = await db.fetchrow("SELECT key_name, after FROM admin_actions WHERE idempotency_key = $1", key)
        assert row is not None and row["key_name"].startswith("cli:")
        await ws.close()


async def test_block_unblock_and_void_from_the_command_line_reach_the_nodes_through_redis(
    start_node: StartNode, redis_url: str, bank: Ledger, database_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    async with start_node(redis_url=redis_url, node_id="cli-node") as node:
        env = environment(database_url, tmp_path, REDIS_URL=redis_url)
        ws, user_id = await player(node, bank, 100)
        blocked = await croupier("user", "block", str(user_id), "--reason", "bot farm", env=env)
        assert blocked.returncode == 0, blocked.stderr
        assert blocked.stdout.strip() == f"user {user_id}: blocked"
        assert await closed_with(ws) == CloseCode.FORBIDDEN
        unblocked = await croupier("user", "unblock", str(user_id), "--reason", "false positive", env=env)
        assert unblocked.returncode == 0 and unblocked.stdout.strip() == f"user {user_id}: not blocked"
        ws, _ = await player(node, bank, 100)  # another player, betting in the round to void
        round_id = await betting_round(ws)
        assert (await request(ws, dice_bet(1, round_id, 60)))["t"] == "bet_ok"
        voided = await croupier("round", "void", str(round_id), "--reason", "stuck wheel", env=env)
        assert voided.returncode == 0, voided.stderr
        assert voided.stdout.strip() == f"round {round_id} (dice): voided, 1 bets refunded (60 chips)"
        assert (await request(ws, {"t": "balance", "id": 2}))["balance"] == 100
        actions = await db.fetch("SELECT action, reason FROM admin_actions WHERE target = ANY($1::text[]) ORDER BY id",
                                 [f"user:{user_id}", f"round:{round_id}"])  # fmt: skip
        assert [(a["action"], a["reason"]) for a in actions] == [
            ("block", "bot farm"), ("unblock", "false positive"), ("void", "stuck wheel")]  # fmt: skip
        await ws.close()
    no_redis = await croupier("round", "void", str(round_id), "--reason", "x", env=environment(database_url, tmp_path))
    assert no_redis.returncode == 2 and "REDIS_URL" in no_redis.stderr


async def test_risk_flags_and_review_from_the_command_line(
    database_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    user_id = next_user_id()
    start = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    for hour, kind in enumerate((FlagKind.LUCK, FlagKind.BET_VELOCITY, FlagKind.LUCK)):
        window = Window(start + dt.timedelta(hours=hour), start + dt.timedelta(hours=hour + 1))
        await store_flags(db, [Flag(user_id, kind, 10.0 + hour, {"summary": f"finding {hour}"})], window)
    env = environment(database_url, tmp_path)
    listed = await croupier("risk", "flags", "--user", str(user_id), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    page = orjson.loads(listed.stdout)
    assert [(f["kind"], f["score"]) for f in page["items"]] == [("luck", 12.0), ("bet_velocity", 11.0), ("luck", 10.0)]
    assert page["next"] is None
    newest = page["items"][0]["id"]

    reviewed = await croupier("risk", "review", str(newest), "--reason", "verified the seeds", env=env)
    assert reviewed.returncode == 0, reviewed.stderr
    line = reviewed.stdout.strip()
    assert line.startswith(f"risk flag {newest} (user {user_id}, luck): reviewed by cli:") and "already" not in line
    again = await croupier("risk", "review", str(newest), "--reason", "again", env=env)
    assert again.returncode == 0 and again.stdout.strip().endswith("(already: nothing changed)")
    row = await db.fetchrow("SELECT key_name, reason FROM admin_actions WHERE target = $1", f"risk_flag:{newest}")
    assert row is not None and row["key_name"].startswith("cli:") and row["reason"] == "verified the seeds"
    assert await db.fetchval("SELECT reviewer FROM risk_flags WHERE id = $1", newest) == row["key_name"]

    open_luck = await croupier("risk", "flags", "--open", "--kind", "luck", "--user", str(user_id), env=env)
    assert open_luck.returncode == 0, open_luck.stderr
    header, *lines = open_luck.stdout.strip().splitlines()
    assert header.split()[:4] == ["id", "user", "kind", "score"]
    assert len(lines) == 1 and lines[0].split()[1:4] == [str(user_id), "luck", "10"]
    assert "open" in lines[0] and lines[0].endswith("finding 0")
    paged = await croupier("risk", "flags", "--user", str(user_id), "--limit", "2", env=env)
    assert paged.returncode == 0, paged.stderr
    shown = paged.stdout.strip().splitlines()
    assert len(shown) == 4 and shown[-1] == f"more: the same command with --before {page['items'][1]['id']}"
    assert row["key_name"] in paged.stdout

    missing = await croupier("risk", "review", "999999999999", "--reason", "x", env=env)
    assert missing.returncode == 1 and "no risk flag 999999999999" in missing.stderr
    bad_kind = await croupier("risk", "flags", "--kind", "fraud", env=env)
    assert bad_kind.returncode == 2 and "--kind must be one of" in bad_kind.stderr
    blank = await croupier("risk", "review", str(newest), "--reason", " ", env=env)
    assert blank.returncode == 2
