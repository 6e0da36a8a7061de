"""``croupier serve --workers N``: one port, N real worker processes, each a node of the cluster.

Connections spread over the workers; a bet on one worker reaches the player's socket on the
other (through Redis); a worker killed is started again on the same socket; SIGTERM to the
supervisor drains every worker (1012) and leaves no process behind. Bad set-ups stop with a
line naming what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from server.workers import MIN_UPTIME, bind_sockets
from tests.services import EmbeddedRedis, clean_env, free_port
from tests.test_cluster import Player, bet, node_env, players

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def supervisor(env: dict[str, str], workers: int, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``croupier serve --workers N`` on a free port, its output in ``log``; every process it started is
    gone after (killed if need be)."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--workers",
                                    str(workers), "--log-level", "info"], env=env, stdout=out, stderr=out)  # fmt: skip
    try:
        yield process, port
    finally:
        children = _children(process.pid)
        if process.poll() is None:
            process.kill()
            process.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(children, timeout=10)


def _children(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).children(recursive=True)
    return []


async def all_ready(log: Path, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while "workers ready" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.05)


def worker_of(player: Player, workers: list[psutil.Process]) -> int:
    """The pid of the worker holding ``player``'s socket (matched on the client's address)."""
    client = player.ws.local_address[:2]
    for worker in workers:
        for conn in worker.net_connections(kind="tcp"):
            if conn.raddr and tuple(conn.raddr) == tuple(client):
                return int(worker.pid)
    raise AssertionError(f"no worker holds {client}")


async def test_workers_share_the_port_follow_the_player_restart_and_drain(
    empty_database: str, redis: EmbeddedRedis, tmp_path: Path
) -> None:
    # Up to 40 sockets of one user below, until both workers hold one: the per-user cap (default 5, the
    # oldest closed with 4409) would close the first whenever the kernel gives one worker the first six.
    env = node_env(empty_database, redis.url, tmp_path / "state", "wk", CROUPIER_MAX_SOCKETS_PER_USER="41")
    log = tmp_path / "node.log"
    with supervisor(env, 2, log) as (process, port):
        await all_ready(log, process)
        started = time.monotonic()
        workers = _children(process.pid)
        assert len(workers) == 2
        # Sockets of one user until both workers hold one (the kernel spreads connections over them).
        joined: dict[int, Player] = {}
        spare: list[Player] = []
        for _ in range(40):
            player = await Player.join(port, 4242)
            holder = worker_of(player, workers)
            if holder in joined:
                spare.append(player)
            else:
                joined[holder] = player
            if len(joined) == 2:
                break
        async with players(*joined.values(), *spare):
            assert len(joined) == 2, "every connection went to the same worker"
            here, there = joined.values()
            assert (await here.request({"t": "subscribe", "id": "s", "game": "dice"}))["t"] == "subscribed"
            opening = await here.next_betting(timeout=15)
            placed = await bet(here, opening["round"], "workers-1")
            assert placed["t"] == "bet_ok", placed
            pushed = await there.wait_for(lambda m: m["t"] == "balance" and m["ref"] == placed["bet"]["id"])
            assert pushed["balance"] == placed["balance"]

        # A worker that dies after running a while is started again, on the same port.
        await asyncio.sleep(max(0.0, MIN_UPTIME + 0.5 - (time.monotonic() - started)))
        victim = workers[0]
        victim.kill()
        deadline = time.monotonic() + 20
        while True:
            now = _children(process.pid)
            pids = {p.pid for p in now}
            if len(pids) == 2 and victim.pid not in pids and log.read_text().count("workers ready") >= 2:
                break
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        assert re.search(r"worker \d exited with status -9 after \d+ s: starting it again", log.read_text())
        later = [await Player.join(port, 5000 + i) for i in range(30)]
        async with players(*later):
            assert {worker_of(player, now) for player in later} == pids, "the restarted worker takes connections"

        # SIGTERM to the supervisor: every worker drains, its sockets close with 1012, nothing is left.
        watcher = await Player.join(port, 4343)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await watcher.ws.wait_closed()
        assert watcher.ws.close_code == 1012
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert "Croupier stopped." in log.read_text()
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in now)
        assert await watcher.ws.wait_closed() is None


def test_several_workers_need_redis(empty_database: str, tmp_path: Path) -> None:
    env = clean_env(CROUPIER_BOT_TOKEN="1:abcdefghijklmnop", DATABASE_URL=empty_database,
                    CROUPIER_DATA_DIR=str(tmp_path))  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "server", "serve", "--workers", "2"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "--workers 2 needs REDIS_URL" in result.stderr
    result = subprocess.run([sys.executable, "-m", "server", "serve", "--workers", "0"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode == 2 and "--workers must be at least 1" in result.stderr


def test_worker_sockets_share_one_port_and_a_taken_port_is_named() -> None:
    sockets = bind_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1 and all(sock.get_inheritable() for sock in sockets)
        with socket.socket() as other:  # an ordinary listener (no SO_REUSEPORT) holds a port
            other.bind(("127.0.0.1", 0))
            other.listen()
            taken = other.getsockname()[1]
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{taken}"):
                bind_sockets("127.0.0.1", taken, 2)
    finally:
        for sock in sockets:
            sock.close()
