"""A real ``croupier serve`` in development mode for the browser tests, restartable on the same port and data dir.

What ``make run`` starts (``CROUPIER_DEV=1``: the embedded PostgreSQL under a fresh data dir, the in-process
broker, a generated bot token), with short rounds, on a free port of 127.0.0.1. Started and stopped by its
PID like the suite's other node processes (``tests/services.py``): SIGTERM, then SIGKILL; a PostgreSQL left
behind by a killed node is stopped by the PID it wrote, only if it runs on this data dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.db.embedded import default_pg_data_dir
from server.settings import DEV_TOKEN_FILE
from tests.services import alive, clean_env, free_port, world_traversable_tempdir

GAME_PARAMS = {
    # The players' edge at its limit: every crash round reaches 2.00x, so a cash-out is always possible,
    # and the curve climbs fast enough (2.00x after 2.3 s) for a test to watch.
    "crash": {"house_edge_bp": -10_000, "growth_per_ms": 0.0003},
    "dice": {"running_ms": 200},
    "roulette": {"running_ms": 300},
}
STARTUP_SECONDS = 120.0
"""A first start runs initdb: slow on a busy machine."""


class DevNode:
    """One development node process; :meth:`start` again after :meth:`stop` restarts it on the same port and
    data dir (the same database, the same bot token)."""

    def __init__(self) -> None:
        self.root = world_traversable_tempdir("croupier-browser-")
        self.state = self.root / "state"
        self.port = free_port()
        self.log = self.root / "node.log"
        self.env = clean_env(
            CROUPIER_DEV="1",
            CROUPIER_DATA_DIR=str(self.state),
            CROUPIER_GAMES="crash,dice,roulette",
            CROUPIER_BETTING_MS="3000",
            CROUPIER_ROUND_PAUSE_MS="300",
            CROUPIER_GAME_PARAMS=json.dumps(GAME_PARAMS),
            CROUPIER_SEED_CHAIN_LENGTH="1000",
            CROUPIER_HANDOVER_SECONDS="1",
            CROUPIER_NODE_ID="browser-tests",
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bot_token(self) -> str:
        """The development bot token the node generated (what its initData is signed with)."""
        return (self.state / DEV_TOKEN_FILE).read_text().strip()

    def start(self) -> None:
        """Start the node; return once ``/readyz`` answers 200 (or fail with the end of its log)."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "warning"],
                env=self.env, stdout=out, stderr=out,
            )  # fmt: skip
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"croupier serve exited ({self.process.returncode}) at start:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"croupier serve not ready within {STARTUP_SECONDS:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (the node drains: sockets closed with 1012, its PostgreSQL stopped), SIGKILL after 30 s."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait()
        self._stop_orphan_postgres()

    def cleanup(self) -> None:
        """Stop the node and remove its data dir."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _stop_orphan_postgres(self) -> None:
        pg_data = default_pg_data_dir(self.state)
        try:
            first = (pg_data / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return
        if not first.isdigit() or not alive(int(first)):
            return
        with contextlib.suppress(OSError):
            if str(pg_data).encode() in Path(f"/proc/{first}/cmdline").read_bytes():
                os.kill(int(first), signal.SIGTERM)
                deadline = time.monotonic() + 10
                while alive(int(first)) and time.monotonic() < deadline:
                    time.sleep(0.05)
