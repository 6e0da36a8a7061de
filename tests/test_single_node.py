"""One database, the nodes on it, and who stops the embedded PostgreSQL: real ``croupier serve`` processes.

A second node on the in-process broker against a database another node uses is refused (its bets
would never see a round); a node that did not start the embedded PostgreSQL never stops it; a node
whose embedded PostgreSQL dies exits instead of spinning; a node on ``DATABASE_URL`` waits for its
server to come back and claims the database again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from server.db.embedded import EmbeddedPostgres, default_pg_data_dir
from server.db.instance import DatabaseClaim, DatabaseInUse, NodeFailure
from tests.services import EmbeddedRedis, alive, clean_env, free_port, wait_ready, world_traversable_tempdir

TOKEN = "1:abcdefghijklmnop"
STARTUP_ATTEMPTS = 1800
"""``wait_ready`` polls (50 ms each): a first start runs initdb, slow on a busy machine."""


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A node's data dir PostgreSQL's user can reach; whatever PostgreSQL is left in it is killed after."""
    root = world_traversable_tempdir("croupier-single-")
    state = root / "state"
    try:
        yield state
    finally:
        pid = postmaster_pid(state)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            until_gone(pid)
        shutil.rmtree(root, ignore_errors=True)


def dev_env(state: Path, **extra: str) -> dict[str, str]:
    """What ``make run`` gives a node: development mode, the embedded PostgreSQL under ``state``."""
    return clean_env(CROUPIER_DEV="1", CROUPIER_DATA_DIR=str(state), CROUPIER_GAMES="dice", **extra)


def postmaster_pid(state: Path) -> int | None:
    """The PID of the PostgreSQL running on the embedded data dir of a node whose state is ``state``."""
    try:
        first = (default_pg_data_dir(state) / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    if not first.strip().isdigit() or not alive(int(first)):
        return None
    with contextlib.suppress(OSError):
        if b"postgres" in Path(f"/proc/{first.strip()}/cmdline").read_bytes():
            return int(first)
    return None


def until_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def serving(env: dict[str, str], port: int, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``croupier serve`` on ``port``, its output in ``log``; stopped with Ctrl-C (then killed) after."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--port", str(port), "--log-level", "warning", *extra],
            env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # as Ctrl-C: the node stops the PostgreSQL it started
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve_once(env: dict[str, str], port: int, timeout: float = 45) -> subprocess.CompletedProcess[str]:
    """Run ``croupier serve`` expecting it to exit by itself (it is killed, and the test fails, if not)."""
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


async def readyz(port: int) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code


def assert_refused_naming_redis_url(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("croupier: ") and "REDIS_URL" in last, result.stderr


async def test_a_second_node_on_the_in_process_broker_is_refused_and_the_first_keeps_its_postgres(
    state_dir: Path, tmp_path: Path
) -> None:
    env = dev_env(state_dir)
    port = free_port()
    with serving(env, port, tmp_path / "first.log") as first:
        await wait_ready(port, attempts=STARTUP_ATTEMPTS)
        postgres = postmaster_pid(state_dir)
        assert postgres is not None
        # On a free port the second node would serve bets whose rounds it never hears of: refused. On the
        # first node's port it could not listen anyway; either way it must leave the first node's PostgreSQL.
        for second_port in (free_port(), port):
            second = serve_once(env, second_port)
            assert_refused_naming_redis_url(second)
            assert postmaster_pid(state_dir) == postgres, "the second node stopped the first node's PostgreSQL"
            assert await readyz(port) == 200
            assert first.poll() is None


async def test_a_node_that_cannot_listen_leaves_the_postgres_it_did_not_start(
    state_dir: Path, tmp_path: Path, redis: EmbeddedRedis
) -> None:
    """With Redis two nodes may share the embedded PostgreSQL; the one that did not start it never stops it."""
    env = dev_env(state_dir, REDIS_URL=redis.url)
    port = free_port()
    with serving(env, port, tmp_path / "first.log") as first:
        await wait_ready(port, attempts=STARTUP_ATTEMPTS)
        postgres = postmaster_pid(state_dir)
        assert postgres is not None
        second = serve_once(env, port)
        assert second.returncode != 0 and "address already in use" in second.stderr, second.stderr
        assert postmaster_pid(state_dir) == postgres, "the second node stopped the first node's PostgreSQL"
        assert await readyz(port) == 200
        assert first.poll() is None
    # The first node started it: Ctrl-C stopped it.
    until_gone(postgres)
    assert not alive(postgres), "the node that started the embedded PostgreSQL left it running"


async def test_a_node_whose_embedded_postgres_dies_exits_instead_of_spinning(state_dir: Path, tmp_path: Path) -> None:
    env = dev_env(state_dir)
    port = free_port()
    log = tmp_path / "node.log"
    with serving(env, port, log) as node:
        await wait_ready(port, attempts=STARTUP_ATTEMPTS)
        postgres = postmaster_pid(state_dir)
        assert postgres is not None
        os.kill(postgres, signal.SIGKILL)
        killed = time.monotonic()
        try:
            status = node.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the node still runs 30 s after its PostgreSQL died:\n{log.read_text()[-2000:]}")
        took = time.monotonic() - killed
    output = log.read_text()
    assert status == 1, output
    assert took < 15, f"took {took:.1f} s to stop"
    last = output.strip().splitlines()[-1]
    assert last.startswith("croupier: ") and "PostgreSQL" in last and "has stopped" in last, output
    assert output.count("has stopped") == 2, output  # noticed once (logged), then the exit line: no spin


async def test_a_node_on_database_url_claims_the_database_again_when_its_server_comes_back(tmp_path: Path) -> None:
    root = world_traversable_tempdir("croupier-reconnect-")
    server = EmbeddedPostgres(root / "pg", fsync=False)
    try:
        dsn = server.start()
        env = clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=dsn, CROUPIER_DATA_DIR=str(tmp_path / "state"),
                        CROUPIER_GAMES="dice")  # fmt: skip
        port = free_port()
        with serving(env, port, tmp_path / "node.log") as node:
            await wait_ready(port, attempts=STARTUP_ATTEMPTS)
            server.stop()
            for _ in range(100):
                if await readyz(port) == 503:
                    break
                await asyncio.sleep(0.05)
            assert await readyz(port) == 503
            await asyncio.sleep(2)
            assert node.poll() is None, "a node on DATABASE_URL must wait for its server, not exit"
            server.start()
            await wait_ready(port, attempts=600)  # the pool reconnects
            # ... and so does the node's claim on the database: a node on the in-process broker is still refused.
            for _ in range(40):
                second = serve_once(env, free_port())
                if second.returncode == 2:
                    break
            assert_refused_naming_redis_url(second)
            assert node.poll() is None
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_the_claim_admits_nodes_sharing_events_through_redis_and_refuses_the_rest(empty_database: str) -> None:
    solo = DatabaseClaim(empty_database, node_id="solo", shared=False)
    await solo.acquire(grace=0)
    try:
        for shared in (False, True):
            with pytest.raises(DatabaseInUse, match="REDIS_URL") as refused:
                await DatabaseClaim(empty_database, node_id="late", shared=shared).acquire(grace=0)
            assert "solo" in str(refused.value) and "\n" not in str(refused.value)
    finally:
        await solo.release()
    first = DatabaseClaim(empty_database, node_id="first", shared=True)
    second = DatabaseClaim(empty_database, node_id="second", shared=True)
    await first.acquire(grace=0)
    await second.acquire(grace=0)
    try:
        with pytest.raises(DatabaseInUse, match="REDIS_URL") as refused:
            await DatabaseClaim(empty_database, node_id="late", shared=False).acquire(grace=0)
        assert "first" in str(refused.value) and "second" in str(refused.value)
    finally:
        await first.release()
        await second.release()
    again = DatabaseClaim(empty_database, node_id="again", shared=False)
    await again.acquire(grace=0)  # released with the claims' sessions
    await again.release()


async def test_a_claim_lost_with_its_session_is_taken_again_or_the_node_told_to_stop(empty_database: str) -> None:
    terminate = ("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                 "WHERE application_name LIKE '%node ' || $1 || ' %'")  # fmt: skip
    failures: list[NodeFailure] = []
    admin = await asyncpg.connect(empty_database)
    quick = DatabaseClaim(empty_database, node_id="quick", shared=False, on_failure=failures.append, interval=0.05)
    await quick.acquire(grace=0)
    try:
        await admin.execute(terminate, "quick")
        await asyncio.sleep(1.0)  # it notices, connects again and takes the lock again
        with pytest.raises(DatabaseInUse, match="quick"):
            await DatabaseClaim(empty_database, node_id="late", shared=False).acquire(grace=0)
        assert not failures and quick.failure is None
    finally:
        await quick.release()
    # Lost, and another node claims the database before it is back: the holder is told to stop.
    slow = DatabaseClaim(empty_database, node_id="slow", shared=False, on_failure=failures.append, interval=1.0)
    await slow.acquire(grace=0)
    usurper = DatabaseClaim(empty_database, node_id="usurper", shared=False)
    try:
        await admin.execute(terminate, "slow")
        await usurper.acquire(grace=0)
        for _ in range(60):
            if failures:
                break
            await asyncio.sleep(0.05)
        assert len(failures) == 1 and isinstance(failures[0], DatabaseInUse) and slow.failure is failures[0]
        assert "usurper" in str(failures[0])
    finally:
        await usurper.release()
        await slow.release()
        await admin.close()


async def test_workers_whose_embedded_postgres_dies_are_stopped_with_their_supervisor(
    state_dir: Path, tmp_path: Path, redis: EmbeddedRedis
) -> None:
    env = dev_env(state_dir, REDIS_URL=redis.url)
    port = free_port()
    log = tmp_path / "supervisor.log"
    with serving(env, port, log, "--workers", "2") as node:
        await wait_ready(port, attempts=STARTUP_ATTEMPTS)
        postgres = postmaster_pid(state_dir)
        assert postgres is not None
        os.kill(postgres, signal.SIGKILL)
        try:
            status = node.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the workers still run 60 s after their PostgreSQL died:\n{log.read_text()[-2000:]}")
    output = log.read_text()
    assert status == 1, output
    assert "embedded PostgreSQL of this node" in output and "stopping the workers" in output, output
