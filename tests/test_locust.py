"""The locust swarm, run for real (headless, a few seconds) against a real node process."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.services import clean_env, node_process, wait_ready

TOKEN = "1:abcdefghijklmnop"
LOCUSTFILE = Path(__file__).resolve().parents[1] / "loadtest" / "locustfile.py"


def locust_binary() -> str:
    found = shutil.which("locust", path=str(Path(sys.executable).parent)) or shutil.which("locust")
    if found is None:
        pytest.skip("locust is not installed (pip install -e '.[loadtest]')")
    return found


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_small_swarm_plays_every_game_with_no_failures(
    empty_database: str, tmp_path: Path, processes: int
) -> None:
    """Also as ``locust --processes 2`` (forked after the locustfile is imported): still one user per player."""
    locust = locust_binary()
    env = clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=empty_database, CROUPIER_DATA_DIR=str(tmp_path / "state"),
                    CROUPIER_BETTING_MS="1200", CROUPIER_ROUND_PAUSE_MS="200", CROUPIER_WELCOME_CREDIT="100000",
                    CROUPIER_SEED_CHAIN_LENGTH="500",
                    CROUPIER_GAME_PARAMS='{"crash": {"growth_per_ms": 0.002}}')  # fmt: skip
    with node_process(env) as (_, port):
        await wait_ready(port)
        run = subprocess.run(
            [locust, "-f", str(LOCUSTFILE), "--headless", "-u", "12", "-r", "12", "-t", "8s", "--csv",
             str(tmp_path / "out"), "--host", f"ws://127.0.0.1:{port}", "--croupier-think-min", "0.1",
             "--croupier-think-max", "0.3", "--croupier-cashout", "120", "--only-summary",
             "--processes", str(processes)],
            env={**clean_env(CROUPIER_BOT_TOKEN=TOKEN), "PYTHONPATH": str(LOCUSTFILE.parents[1])},
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        )  # fmt: skip
    with open(tmp_path / "out_stats.csv") as handle:
        stats = {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}
    report = run.stdout[-3000:] + run.stderr[-3000:]
    assert int(stats[("", "Aggregated")]["Failure Count"]) == 0, report
    for name in ("auth", "subscribe", "bet"):
        assert int(stats[("WS", name)]["Request Count"]) > 0, report
    assert int(stats[("WS", "auth")]["Request Count"]) == 12  # one per player
    assert int(stats[("PUSH", "lag round")]["Request Count"]) > 0, report
    # No latency bound: a timed assertion fails on a busy machine rather than on a regression. Latency is
    # measured by the benchmarks in loadtest/, which print it beside its ceiling.
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 12  # no two players share a Telegram user
    finally:
        await conn.close()


def test_a_swarm_without_the_bot_token_stops_with_a_clear_message(tmp_path: Path) -> None:
    locust = locust_binary()
    run = subprocess.run(
        [locust, "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-r", "1", "-t", "2s", "--host", "ws://127.0.0.1:9"],
        env={k: v for k, v in os.environ.items() if k != "CROUPIER_BOT_TOKEN"}, capture_output=True, text=True,
        timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert "CROUPIER_BOT_TOKEN" in run.stdout + run.stderr
