"""One database, the nodes on it, and who stops the embedded PostgreSQL: real ``croupier serve`` processes.

A second node on the in-process broker against a database another node uses is refused (its bets
would never see a round); a node that did not start the embedded PostgreSQL never stops it; a node
whose embedded PostgreSQL dies exits instead of spinning; a node on ``DATABASE_URL`` waits for its
server to come back and claims the database again. A node alone (the in-process broker) stopped with
Ctrl-C waits for no successor and ends the rounds its players bet on before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.auth import sign_init_data
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


def assert_refused_naming_the_address(result: subprocess.CompletedProcess[str], port: int) -> None:
    """The node stopped at once, on one line naming the address it could not listen on: it neither
    started anything nor said it serves."""
    assert result.returncode == 1, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == [f"croupier: cannot listen on 127.0.0.1:{port}: address already in use (another process "
                     "listens there: stop it, or choose another port: --port, or make run PORT=)"], lines  # fmt: skip


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
        # first node's port it cannot listen, and says so before it starts anything (it takes its port
        # first); either way it must leave the first node's PostgreSQL.
        for second_port in (free_port(), port):
            second = serve_once(env, second_port)
            if second_port == port:
                assert_refused_naming_the_address(second, port)
            else:
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
        assert_refused_naming_the_address(second, port)
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


# ---------------------------------------------------------------------------------------- Ctrl-C on a node alone


async def bet_on_the_round_taking_bets(ws: ClientConnection, user_id: int) -> tuple[int, int]:
    """Authenticate ``user_id`` on ``ws``, subscribe to dice, bet 10 on the round taking bets (waiting
    for one if none is); its round id and bet id."""
    await ws.send(json.dumps({"t": "auth", "id": 1, "init_data": sign_init_data(TOKEN, user_id=user_id)}))
    assert json.loads(await ws.recv())["t"] == "welcome"
    await ws.send(json.dumps({"t": "subscribe", "id": 2, "game": "dice"}))
    current = json.loads(await ws.recv())["round"]
    while current is None or current["phase"] != "betting":
        event = json.loads(await ws.recv())
        if event["t"] == "round":
            current = event
    await ws.send(json.dumps({"t": "bet", "id": 3, "game": "dice", "round": current["round"], "amount": 10,
                              "params": {"target": 5000, "side": "over"}, "key": "before-ctrl-c"}))  # fmt: skip
    while (reply := json.loads(await ws.recv())).get("id") != 3:
        pass
    assert reply["t"] == "bet_ok", reply
    return int(current["round"]), int(reply["bet"]["id"])


async def events_until_closed(ws: ClientConnection) -> tuple[list[dict[str, object]], int | None]:
    """Every message ``ws`` gets until the node closes it, and the close code."""
    seen: list[dict[str, object]] = []
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(60):
            while True:
                seen.append(json.loads(await ws.recv()))
    return seen, ws.close_code


def lone_env(database_url: str, state: Path, betting_ms: int, games: str = "dice") -> dict[str, str]:
    """A node alone on ``database_url`` (the in-process broker), with a betting window of ``betting_ms``."""
    return clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=database_url, CROUPIER_DATA_DIR=str(state),
                     CROUPIER_GAMES=games, CROUPIER_BETTING_MS=str(betting_ms), CROUPIER_WELCOME_CREDIT="100",
                     CROUPIER_SEED_CHAIN_LENGTH="50", CROUPIER_HANDOVER_SECONDS="5")  # fmt: skip


def stopped_with_ctrl_c(node: subprocess.Popen[bytes], log: Path) -> str:
    """Send Ctrl-C (SIGINT) to ``node``, wait for it to exit (status 0) and return its log."""
    node.send_signal(signal.SIGINT)
    try:
        status = node.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the node still runs 60 s after Ctrl-C:\n{log.read_text()[-3000:]}")
    output = log.read_text()
    assert status == 0 and output.rstrip().endswith("Croupier stopped."), output[-3000:]
    return output


async def test_a_node_alone_waits_for_no_successor_and_voids_the_rounds_still_betting(
    empty_database: str, tmp_path: Path
) -> None:
    """No bet anywhere, and rounds that close within the hand-over budget: Ctrl-C waits for none of them
    (no successor needs them finished) and voids them at once, so the next start has nothing to recover."""
    log = tmp_path / "node.log"
    env = lone_env(empty_database, tmp_path / "state", 4_500, games="crash,dice,roulette")
    port = free_port()
    with serving(env, port, log, "--log-level", "info") as node:
        await wait_ready(port, attempts=STARTUP_ATTEMPTS)
        conn = await asyncpg.connect(empty_database)
        try:
            async with asyncio.timeout(30):  # every driver has opened its first round
                while await conn.fetchval("SELECT count(DISTINCT game) FROM rounds") < 3:
                    await asyncio.sleep(0.02)
            output = stopped_with_ctrl_c(node, log)
            phases = {row["id"]: row["phase"] for row in await conn.fetch("SELECT id, phase FROM rounds")}
        finally:
            await conn.close()
    assert "handing over: finishing" not in output, output  # no round waited for
    assert "stopped driving crash, dice, roulette: no other node takes them over" in output, output
    assert "handed over" not in output, output
    assert "betting" not in phases.values(), phases
    assert "voided" in phases.values(), phases


async def test_a_bet_placed_just_before_ctrl_c_on_a_node_alone_is_refunded_before_it_stops(
    empty_database: str, tmp_path: Path
) -> None:
    """The bet's round takes bets for a minute, far past the 5 s hand-over budget: the node voids it as it
    stops and refunds the bet (the player sees the round voided before the socket closes with 1012)."""
    log = tmp_path / "node.log"
    env = lone_env(empty_database, tmp_path / "state", 60_000)
    port = free_port()
    with serving(env, port, log, "--log-level", "info") as node:
        await wait_ready(port, attempts=STARTUP_ATTEMPTS)
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            round_id, bet_id = await bet_on_the_round_taking_bets(ws, 616001)
            node.send_signal(signal.SIGINT)
            seen, close_code = await events_until_closed(ws)
        output = stopped_with_ctrl_c(node, log)
    assert close_code == 1012, seen
    assert any(e.get("t") == "round" and e.get("round") == round_id and e.get("voided") for e in seen), seen
    refund = [e for e in seen if e.get("t") == "balance" and e.get("reason") == "refund" and e.get("ref") == bet_id]
    assert refund and refund[0]["balance"] == 100, seen  # the stake back, before the socket closed
    assert "handing over: finishing" not in output, output
    assert f"stopping: dice round {round_id} still takes bets: voiding it now" in output, output
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT phase FROM rounds WHERE id = $1", round_id) == "voided"
        assert await conn.fetchval("SELECT status FROM bets WHERE id = $1", bet_id) == "refunded"
        assert await conn.fetchval("SELECT balance FROM accounts WHERE user_id = 616001") == 100
    finally:
        await conn.close()


async def test_a_bet_whose_round_closes_within_the_budget_is_settled_before_the_node_alone_stops(
    empty_database: str, tmp_path: Path
) -> None:
    """The bet's round closes within the 5 s hand-over budget: the node waits for it, plays it and settles
    the bet by its roll before it stops (it waits for that round because it holds a bet)."""
    log = tmp_path / "node.log"
    env = lone_env(empty_database, tmp_path / "state", 2_500)
    port = free_port()
    with serving(env, port, log, "--log-level", "info") as node:
        await wait_ready(port, attempts=STARTUP_ATTEMPTS)
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            round_id, bet_id = await bet_on_the_round_taking_bets(ws, 616002)
            node.send_signal(signal.SIGINT)
            seen, _ = await events_until_closed(ws)
        output = stopped_with_ctrl_c(node, log)
    assert "handing over: finishing the rounds of dice" in output, output
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT phase FROM rounds WHERE id = $1", round_id) == "settled"
        assert await conn.fetchval("SELECT status FROM bets WHERE id = $1", bet_id) in ("won", "lost")
    finally:
        await conn.close()
    assert any(e.get("t") == "bet_settled" and e.get("bet") == bet_id for e in seen), seen
