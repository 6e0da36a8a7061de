"""The back office's ``croupier`` commands as an operator runs them (real processes): ``credit --key``,
``user block|unblock``, ``round void``, audited like the API's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg

from protocol import CloseCode
from server.ledger import Ledger
from tests.backoffice.conftest import betting_round, dice_bet, player
from tests.conftest import StartNode
from tests.edge.client import closed_with, request
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
