"""The worker supervisor's rules, with small real worker processes standing in for ``croupier serve``.

Each stand-in gets the socket and ready pipe the supervisor hands a worker, says it is ready,
records its pid, and then does what its ``BEHAVIOUR`` says: serve until SIGTERM, die after a
while, die at once, or ignore SIGTERM. ``tests/test_workers.py`` runs the real thing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from server.workers import Supervisor, bind_sockets

WORKER = r"""
import os, signal, socket, sys, time
args = sys.argv[1:]
listen_fd, ready_fd = int(args[args.index("--listen-fd") + 1]), int(args[args.index("--ready-fd") + 1])
sock = socket.socket(fileno=listen_fd)
assert sock.getsockname()[1] > 0
pids = os.environ["PIDS"]
with open(pids, "a") as f:
    f.write(f"{os.environ['CROUPIER_NODE_ID']} {os.getpid()}\n")
behaviour = os.environ["BEHAVIOUR"]
if behaviour == "die-at-once":
    sys.exit(3)
os.write(ready_fd, b"!")
if behaviour == "ignore-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if behaviour == "die-once" and open(pids).read().count(os.environ["CROUPIER_NODE_ID"] + " ") == 1:
    time.sleep(0.3)
    sys.exit(4)
while True:
    time.sleep(0.05)
"""


def supervisor(tmp_path: Path, behaviour: str, workers: int = 2, **options: float) -> Supervisor:
    env = {**os.environ, "PIDS": str(tmp_path / "pids"), "BEHAVIOUR": behaviour}
    return Supervisor(bind_sockets("127.0.0.1", 0, workers), [sys.executable, "-c", WORKER], env=env,
                      node_id="sup", host="127.0.0.1", **options)  # fmt: skip


def started(tmp_path: Path) -> list[tuple[str, int]]:
    path = tmp_path / "pids"
    if not path.exists():
        return []
    return [(name, int(pid)) for name, pid in (line.split() for line in path.read_text().splitlines())]


async def until(condition: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_sigterm_stops_every_worker_and_run_returns_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sup = supervisor(tmp_path, "serve")
    running = asyncio.create_task(sup.run())
    out: list[str] = []
    await until(lambda: out.append(capsys.readouterr().out) or "sup: 2 workers ready" in "".join(out))
    assert len(sup.pids) == 2
    assert sorted(name for name, _ in started(tmp_path)) == ["sup-w0", "sup-w1"]
    os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's own handler: forwarded to the workers
    assert await asyncio.wait_for(running, 10) == 0
    assert all(gone(pid) for _, pid in started(tmp_path))


async def test_a_worker_that_dies_after_running_a_while_is_started_again(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, "die-once", min_uptime=0.1)
    running = asyncio.create_task(sup.run())
    await until(lambda: len(started(tmp_path)) == 4 and len(sup.pids) == 2)  # both died once, both restarted
    first, second = started(tmp_path)[:2], started(tmp_path)[2:]
    assert {name for name, _ in first} == {name for name, _ in second} == {"sup-w0", "sup-w1"}
    assert set(sup.pids) == {pid for _, pid in second}
    sup.stop()
    assert await asyncio.wait_for(running, 10) == 0
    assert all(gone(pid) for _, pid in started(tmp_path))


async def test_a_worker_that_dies_at_start_stops_the_node_with_status_1(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, "die-at-once")
    assert await asyncio.wait_for(sup.run(), 10) == 1
    assert len(started(tmp_path)) >= 1 and all(gone(pid) for _, pid in started(tmp_path))


async def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, "ignore-sigterm", workers=1, stop_grace=0.5)
    running = asyncio.create_task(sup.run())
    await until(lambda: len(sup.pids) == 1 and len(started(tmp_path)) == 1)
    await asyncio.sleep(0.2)  # past its signal set-up
    sup.stop()
    assert await asyncio.wait_for(running, 10) == 0
    assert gone(started(tmp_path)[0][1])
