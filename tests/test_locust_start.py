"""A locust swarm whose players cannot start fails loudly: each player that cannot start is a failure
naming why, and a run in which no player ever played exits with status 1 saying so (run for real,
headless, a few seconds; the swarm that plays is in tests/test_locust.py)."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from tests.services import clean_env, free_port
from tests.test_locust import LOCUSTFILE, locust_binary

Failures = dict[tuple[str, str], int]
"""Failure counts by (type, name), as locust's ``_stats.csv`` has them."""


def swarm(tmp_path: Path, env: dict[str, str], host: str, processes: int) -> tuple[subprocess.CompletedProcess[str],
                                                                                    Failures]:  # fmt: skip
    """Run 4 players for 3 s against ``host``: the run, and each (type, name)'s failure count."""
    run = subprocess.run(
        [locust_binary(), "-f", str(LOCUSTFILE), "--headless", "-u", "4", "-r", "4", "-t", "3s", "--csv",
         str(tmp_path / "out"), "--host", host, "--only-summary", "--processes", str(processes)],
        env={**env, "PYTHONPATH": str(LOCUSTFILE.parents[1])}, capture_output=True, text=True, timeout=90,
        check=False, cwd=tmp_path,
    )  # fmt: skip
    with open(tmp_path / "out_stats.csv") as handle:
        failures = {(row["Type"], row["Name"]): int(row["Failure Count"]) for row in csv.DictReader(handle)}
    return run, failures


@pytest.mark.parametrize("processes", [1, 2])
def test_a_swarm_without_the_bot_token_records_why_and_exits_1(tmp_path: Path, processes: int) -> None:
    run, failures = swarm(tmp_path, clean_env(), "ws://127.0.0.1:9", processes)
    report = run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 1, report
    assert failures[("WS", "start")] == 4, (failures, report)  # one per player
    with open(tmp_path / "out_failures.csv") as handle:
        (failure,) = list(csv.DictReader(handle))
    assert failure["Name"] == "start" and "CROUPIER_BOT_TOKEN is not set" in failure["Error"], failure
    assert "no player ever started playing" in run.stderr and "CROUPIER_BOT_TOKEN is not set" in run.stderr, report


def test_a_swarm_that_cannot_connect_records_why_and_exits_1(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    run, failures = swarm(tmp_path, clean_env(CROUPIER_BOT_TOKEN="1:abcdefghijklmnop"), f"ws://127.0.0.1:{port}", 1)
    report = run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 1, report
    assert failures[("WS", "connect")] == 4, (failures, report)
    assert "no player ever started playing" in run.stderr and "connect:" in run.stderr, report
