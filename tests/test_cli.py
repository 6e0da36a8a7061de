"""The ``croupier`` command as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.services import clean_env, free_port, node_process, wait_ready, world_traversable_tempdir


def croupier(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def state_dir() -> Iterator[Path]:
    root = world_traversable_tempdir("croupier-cli-")
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


def test_missing_setting_fails_with_one_line(state_dir: Path) -> None:
    result = croupier("serve", env=clean_env(CROUPIER_DATA_DIR=str(state_dir)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CROUPIER_BOT_TOKEN" in lines[0]


def test_bad_database_url_fails_with_one_line(state_dir: Path) -> None:
    result = croupier("serve", env=clean_env(CROUPIER_DEV="1", CROUPIER_DATA_DIR=str(state_dir), DATABASE_URL="x"))
    assert result.returncode == 2 and "DATABASE_URL" in result.stderr


def test_serve_on_a_taken_port_stops_at_once_naming_the_address(state_dir: Path) -> None:
    """It takes its port before anything else: one line naming the address, status 1, and nothing said or
    started before it (no "serving on", no uvicorn startup, no embedded PostgreSQL)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(CROUPIER_DEV="1", CROUPIER_DATA_DIR=str(state_dir))
        result = croupier("serve", "--port", str(port), env=env)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"croupier: cannot listen on 127.0.0.1:{port}: address already in use "
                                          "(another process listens there: stop it, or choose another port: "
                                          "--port, or make run PORT=)"]  # fmt: skip
    assert not (state_dir / "pg").exists()


def test_dev_initdata_needs_a_token(state_dir: Path) -> None:
    result = croupier("dev-initdata", "--user-id", "1", env=clean_env(CROUPIER_BOT_ID="42"))
    assert result.returncode == 2 and "CROUPIER_BOT_TOKEN" in result.stderr


def test_migrate_command(database_url: str, state_dir: Path) -> None:
    result = croupier(
        "migrate", env=clean_env(CROUPIER_DEV="1", CROUPIER_DATA_DIR=str(state_dir), DATABASE_URL=database_url)
    )
    assert result.returncode == 0, result.stderr
    assert "schema at migration" in result.stdout


async def test_credit_and_audit_commands(database_url: str, state_dir: Path) -> None:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    await conn.execute("INSERT INTO users (id, first_name) VALUES (777001, 'cli') ON CONFLICT DO NOTHING")
    await conn.execute("INSERT INTO accounts (kind, user_id) VALUES ('wallet', 777001) ON CONFLICT DO NOTHING")
    await conn.close()
    token = "1:abcdefghijklmnop"
    env = clean_env(CROUPIER_BOT_TOKEN=token, CROUPIER_DATA_DIR=str(state_dir), DATABASE_URL=database_url)
    credited = croupier("credit", "777001", "500", "--reason", "launch promo", env=env)
    assert credited.returncode == 0, credited.stderr
    assert "balance 500" in credited.stdout
    debited = croupier("credit", "777001", "-200", "--reason", "correction", env=env)
    assert "balance 300" in debited.stdout
    overdraw = croupier("credit", "777001", "-301", "--reason", "too much", env=env)
    assert overdraw.returncode == 1 and "less than 301" in overdraw.stderr
    unknown = croupier("credit", "999999999", "5", "--reason", "who", env=env)
    assert unknown.returncode == 1 and "no wallet" in unknown.stderr
    no_reason = croupier("credit", "777001", "5", env=env)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    audit = croupier("audit", env=env)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit: OK" in audit.stdout


async def test_commands_that_check_no_initdata_run_without_a_bot_token(empty_database: str, state_dir: Path) -> None:
    """The README's commands as it writes them, with no CROUPIER_BOT_TOKEN, CROUPIER_BOT_ID or CROUPIER_DEV:
    only ``serve`` checks initData and needs one; the Bot API commands and ``dev-initdata`` say what they
    lack in one line; no development token is made."""
    import asyncpg

    env = clean_env(CROUPIER_DATA_DIR=str(state_dir), DATABASE_URL=empty_database)
    migrated = croupier("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    conn = await asyncpg.connect(empty_database)
    await conn.execute("INSERT INTO users (id, first_name) VALUES (42, 'cli')")
    await conn.execute("INSERT INTO accounts (kind, user_id) VALUES ('wallet', 42)")
    await conn.close()
    credited = croupier("credit", "42", "5000", "--reason", "demo", env=env)
    assert credited.returncode == 0 and "balance 5000" in credited.stdout, credited.stderr
    audit = croupier("audit", env=env)
    assert audit.returncode == 0 and "audit: OK" in audit.stdout, audit.stdout + audit.stderr
    notify = croupier("notify", "--all", "Tables open at eight", "--no-wait", env=env)
    assert notify.returncode == 0, notify.stderr
    for command in (("stars", "reconcile"), ("bot", "info")):
        refused = croupier(*command, env=env)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert "needs CROUPIER_BOT_TOKEN" in lines[0] and "configuration error" not in lines[0], lines
    minted = croupier("dev-initdata", "--user-id", "42", env=env)
    assert minted.returncode == 2 and "dev-initdata needs CROUPIER_BOT_TOKEN" in minted.stderr, minted.stderr
    serve = croupier("serve", env=env)
    assert serve.returncode == 2 and "configuration error: CROUPIER_BOT_TOKEN is not set" in serve.stderr
    assert not (state_dir / "dev-bot-token").exists()


async def test_credit_refuses_user_ids_and_amounts_out_of_range_in_one_line(database_url: str, state_dir: Path) -> None:
    import asyncpg

    from protocol.messages import MAX_AMOUNT

    conn = await asyncpg.connect(database_url)
    await conn.execute("INSERT INTO users (id, first_name) VALUES (777002, 'cli') ON CONFLICT DO NOTHING")
    await conn.execute("INSERT INTO accounts (kind, user_id) VALUES ('wallet', 777002) ON CONFLICT DO NOTHING")
    await conn.close()
    env = clean_env(CROUPIER_BOT_TOKEN="1:abcdefghijklmnop", CROUPIER_DATA_DIR=str(state_dir),
                    DATABASE_URL=database_url)  # fmt: skip
    refused = {
        ("777002", str(2**63 - 1)): "AMOUNT",
        ("777002", str(-(2**63))): "AMOUNT",
        ("777002", str(MAX_AMOUNT + 1)): "AMOUNT",
        ("777002", str(-MAX_AMOUNT - 1)): "AMOUNT",
        ("777002", "0"): "AMOUNT",
        ("0", "5"): "USER_ID",
        ("-7", "5"): "USER_ID",
        (str(2**63), "5"): "USER_ID",
    }
    for (user_id, amount), named in refused.items():
        result = croupier("credit", user_id, amount, "--reason", "range", env=env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (user_id, amount, result.stderr)
        assert len(lines) == 1 and named in lines[0] and lines[0].startswith("croupier: "), result.stderr
    blank = croupier("credit", "777002", "5", "--reason", " ", env=env)
    assert blank.returncode == 2 and "--reason" in blank.stderr
    largest = croupier("credit", "777002", str(MAX_AMOUNT), "--reason", "the largest credit", env=env)
    assert largest.returncode == 0 and f"balance {MAX_AMOUNT}" in largest.stdout, largest.stderr
    back = croupier("credit", "777002", str(-MAX_AMOUNT), "--reason", "and back", env=env)
    assert back.returncode == 0 and "balance 0" in back.stdout, back.stderr


async def test_credit_that_would_overflow_a_balance_says_so_in_one_line(empty_database: str, state_dir: Path) -> None:
    import asyncpg

    env = clean_env(CROUPIER_BOT_TOKEN="1:abcdefghijklmnop", CROUPIER_DATA_DIR=str(state_dir),
                    DATABASE_URL=empty_database)  # fmt: skip
    assert croupier("migrate", env=env).returncode == 0
    conn = await asyncpg.connect(empty_database)  # this test's own database: a balance no credit could reach
    await conn.execute("INSERT INTO users (id, first_name) VALUES (777003, 'cli')")
    await conn.execute("INSERT INTO accounts (kind, user_id, balance) VALUES ('wallet', 777003, $1)", 2**63 - 10)
    await conn.close()
    result = croupier("credit", "777003", "100", "--reason", "overflow", env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "cannot hold" in lines[0], result.stderr


async def test_serve_on_embedded_postgres_accepts_dev_initdata_and_stops_everything(state_dir: Path) -> None:
    """What `make run` does: embedded PostgreSQL, dev token, a socket that authenticates, Ctrl-C cleans up."""
    port = free_port()
    env = clean_env(CROUPIER_DEV="1", CROUPIER_DATA_DIR=str(state_dir))
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "node did not become ready"
                await asyncio.sleep(0.1)
        minted = croupier("dev-initdata", "--user-id", "4242", "--first-name", "Dev", env=env)
        assert minted.returncode == 0, minted.stderr
        async with connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["croupier.v1.json"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"t": "auth", "id": 1, "init_data": minted.stdout.strip()}))
            welcome = json.loads(await ws.recv())
        assert welcome["t"] == "welcome" and welcome["user"]["id"] == 4242

        pg_dir = state_dir / "pg" if (state_dir / "pg").exists() else None
        pidfile_text = (pg_dir / "postmaster.pid").read_text() if pg_dir else ""
        postgres_pid = int(pidfile_text.splitlines()[0]) if pidfile_text else None
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "serving on http://127.0.0.1" in output
        assert minted.stdout.strip() not in output  # the credential is never logged
        if postgres_pid is not None:
            assert not Path(f"/proc/{postgres_pid}").exists(), "embedded PostgreSQL left running"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_node_killed_between_commit_and_reply_loses_nothing(empty_database: str, state_dir: Path) -> None:
    """SIGKILL the node while bets are in flight; after a restart, retries with the same keys
    return the committed bets (refunded with their voided round) or are refused, and nothing is
    charged twice or lost."""
    import asyncpg

    from server.auth import sign_init_data

    token = "1:abcdefghijklmnop"
    env = clean_env(CROUPIER_BOT_TOKEN=token, CROUPIER_DATA_DIR=str(state_dir), DATABASE_URL=empty_database,
                    CROUPIER_WELCOME_CREDIT="1000", CROUPIER_SEED_CHAIN_LENGTH="500",
                    CROUPIER_BETTING_MS="60000")  # fmt: skip
    user_id = 880000 + os.getpid() % 1000

    def bet(i: int, round_id: int) -> str:
        return json.dumps({"t": "bet", "id": i, "game": "dice", "round": round_id, "amount": 7,
                           "params": {"target": 5000, "side": "over"}, "key": f"crash-{i}"})  # fmt: skip

    async def reply_to(ws: Any, request_id: object) -> dict[str, Any]:
        while True:
            reply: dict[str, Any] = json.loads(await ws.recv())
            if reply.get("id") == request_id:
                return reply

    async def authenticate(ws: Any) -> None:
        await ws.send(json.dumps({"t": "auth", "id": 0, "init_data": sign_init_data(token, user_id=user_id)}))
        assert json.loads(await ws.recv())["t"] == "welcome"

    with node_process(env) as (process, port):
        await wait_ready(port)
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await authenticate(ws)
            for attempt in range(100):  # the driver opens the first round just after the node is ready
                await ws.send(json.dumps({"t": "subscribe", "id": attempt, "game": "dice"}))
                snapshot = (await reply_to(ws, attempt))["round"]
                if snapshot is not None:
                    break
                await asyncio.sleep(0.05)
            round_id = snapshot["round"]
            for i in range(1, 31):
                await ws.send(bet(i, round_id))
            acked = answered = 0
            while acked < 5 and answered < 30:  # some bets answered, more committed unanswered, the rest unread
                reply = json.loads(await ws.recv())
                answered += "id" in reply
                acked += reply["t"] == "bet_ok"
            assert acked == 5, reply
            process.kill()
            process.wait()

    # The restarted node finds the round unfinished in `betting` and voids it, refunding every bet (its driver
    # task does, right after the node is ready: wait for it, then retry every bet).
    with node_process(env) as (process, port):
        await wait_ready(port)
        watcher = await asyncpg.connect(empty_database)
        try:
            async with asyncio.timeout(30):
                while await watcher.fetchval("SELECT phase FROM rounds WHERE id = $1", round_id) != "voided":
                    await asyncio.sleep(0.05)
        finally:
            await watcher.close()
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await authenticate(ws)
            replayed = 0
            for i in range(1, 31):
                await ws.send(bet(i, round_id))
                reply = await reply_to(ws, i)
                if reply["t"] == "bet_ok":  # committed before the kill: the same bet comes back, refunded
                    assert reply["bet"]["status"] == "refunded", reply
                    replayed += 1
                else:  # never committed: its round is gone, nothing was charged
                    assert reply["code"] in ("betting_closed", "round_mismatch"), reply
            assert replayed >= 5
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM bets WHERE user_id = $1", user_id) == replayed
        assert await conn.fetchval("SELECT phase FROM rounds WHERE id = $1", round_id) == "voided"
        assert await conn.fetchval("SELECT balance FROM accounts WHERE user_id = $1", user_id) == 1000
    finally:
        await conn.close()
    audit = croupier("audit", env=env)
    assert audit.returncode == 0 and "audit: OK" in audit.stdout


def test_simulate_prints_rtp_within_the_declared_interval() -> None:
    result = croupier("simulate", "dice", "--rounds", "100000", "--strategy", '{"target": 3000, "side": "over"}',
                      env=clean_env())  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "within the interval" in result.stdout and "hit rate" in result.stdout
    bad = croupier("simulate", "dice", "--strategy", '{"target": 0, "side": "over"}', env=clean_env())
    assert bad.returncode == 2 and "target" in bad.stderr
    unknown = croupier("simulate", "poker", env=clean_env())
    assert unknown.returncode == 2 and "no game" in unknown.stderr


def test_simulate_plays_the_operators_table_or_the_params_given() -> None:
    rounds = ("simulate", "crash", "--rounds", "20000")
    default = croupier(*rounds, env=clean_env())
    assert default.returncode == 0, default.stderr
    assert "declared 0.99000" in default.stdout  # crash's default house edge: 1%
    table = clean_env(CROUPIER_GAME_PARAMS='{"crash": {"house_edge_bp": 200, "max_bet": 500}}')
    operator = croupier(*rounds, env=table)  # no bot token: simulate checks no initData
    assert operator.returncode == 0, operator.stderr
    assert "declared 0.98000" in operator.stdout  # the limits in the entry change no outcome: ignored
    given = croupier(*rounds, "--params", '{"house_edge_bp": 300}', env=table)
    assert given.returncode == 0, given.stderr
    assert "declared 0.97000" in given.stdout and given.stdout != operator.stdout  # --params wins
    bad_json = croupier(*rounds, "--params", "{house_edge_bp: 3}", env=clean_env())
    assert bad_json.returncode == 2 and bad_json.stderr.strip() == (
        "croupier: --params must be JSON, e.g. '{\"house_edge_bp\": 200}'"
    )
    unknown = croupier(*rounds, "--params", '{"house_edge": 300}', env=clean_env())
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1 and "house_edge" in unknown.stderr
    bad_env = croupier(*rounds, env=clean_env(CROUPIER_GAME_PARAMS='{"crash": {"edge": 1}}'))
    assert bad_env.returncode == 2 and "CROUPIER_GAME_PARAMS" in bad_env.stderr and "edge" in bad_env.stderr


@pytest.mark.usefixtures("game_registry")
def test_simulate_exits_1_when_a_game_pays_other_than_it_declares(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A game that pays 2x on heads of a fair coin (RTP 1.0) but declares 0.9: over the simulator's
    # fixed seed chain the measured RTP is 1.0 +- ~0.02, so 0.9 is outside on every machine.
    from server.cli import main
    from server.games.registry import register
    from server.rounds.fair import FairRng
    from server.rounds.handler import BetInfo, BetParams, GameParams, RoundHandler

    @register
    class Overpaying(RoundHandler[GameParams, BetParams]):
        name = "overpaying"
        strategies = {"any": {}}

        def outcome(self, rng: FairRng) -> dict[str, Any]:
            return {"heads": rng.below(2) == 1}

        def payout(self, bet: BetInfo[BetParams], outcome: Any) -> int:
            return 2 * bet.amount if outcome["heads"] else 0

        def declared_rtp(self, params: Any) -> float:
            return 0.9

    monkeypatch.delenv("CROUPIER_GAME_PARAMS", raising=False)
    assert main(["simulate", "overpaying", "--rounds", "10000"]) == 1
    printed = capsys.readouterr().out
    assert "[any] overpaying" in printed and "declared 0.90000: OUTSIDE the interval" in printed
    assert printed.rstrip().endswith("OUTSIDE the interval: any")


def test_verify_recomputes_an_outcome_from_the_seed() -> None:
    from server.games.roulette import Roulette
    from server.rounds.fair import FairRng, sha256_hex

    seed, salt = "ab" * 32, "cd" * 32
    result = croupier("verify", "roulette", "--seed", seed, "--salt", salt, env=clean_env())
    assert result.returncode == 0, result.stderr
    expected = Roulette().outcome(FairRng(seed, salt, "roulette"))
    assert f"outcome {expected}" in result.stdout and sha256_hex(seed) in result.stdout
    bad = croupier("verify", "roulette", "--seed", "xyz", "--salt", salt, env=clean_env())
    assert bad.returncode == 2 and "64 lowercase hex" in bad.stderr


def test_verify_computes_the_outcome_of_the_operators_table() -> None:
    from server.games.crash import Crash
    from server.rounds.fair import FairRng

    seed, salt = "ab" * 32, "cd" * 32
    args = ("verify", "crash", "--seed", seed, "--salt", salt)
    default_point = Crash().outcome(FairRng(seed, salt, "crash"))
    table_point = Crash({"house_edge_bp": 500}).outcome(FairRng(seed, salt, "crash"))
    assert default_point != table_point  # 684 and 656: a 5% table crashes earlier on the same seed
    default = croupier(*args, env=clean_env())
    assert default.returncode == 0 and f"outcome {default_point}" in default.stdout
    given = croupier(*args, "--params", '{"house_edge_bp": 500}', env=clean_env())
    assert given.returncode == 0, given.stderr
    assert f"outcome {table_point}" in given.stdout
    operator = croupier(*args, env=clean_env(CROUPIER_GAME_PARAMS='{"crash": {"house_edge_bp": 500}}'))
    assert operator.returncode == 0 and f"outcome {table_point}" in operator.stdout  # as the node computed it
    unknown = croupier(*args, "--params", '{"house_edge": 500}', env=clean_env())
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1 and "house_edge" in unknown.stderr
    bad_json = croupier(*args, "--params", "500", env=clean_env())
    assert bad_json.returncode == 2 and "--params must be a JSON object" in bad_json.stderr


def test_simulate_plays_each_strategy_the_game_names_or_those_given(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    assert main(["simulate", "roulette", "--rounds", "20000"]) == 0
    printed = capsys.readouterr().out
    assert all(f"[{name}] roulette" in printed for name in ("red", "dozen", "straight"))  # one per bet type
    assert main(["simulate", "roulette", "--rounds", "20000", "--strategy", "red", "--strategy",
                 '{"type": "column", "numbers": [1]}']) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "[red]" in printed and '[{"type": "column", "numbers": [1]}]' in printed and "[dozen]" not in printed
    assert main(["simulate", "roulette", "--strategy", "blue"]) == 2
    assert "neither a strategy of roulette (red, dozen, straight) nor JSON" in capsys.readouterr().err
    assert main(["simulate", "roulette", "--strategy", '{"type": "red", "numbers": [1]}']) == 2
    assert "params.numbers" in capsys.readouterr().err


def test_verify_recomputes_a_bets_own_draw(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main
    from server.games.plinko import Plinko
    from server.games.testing import GameTable

    seed, salt = "ab" * 32, "cd" * 32
    table = GameTable(Plinko(), seed=seed, salt=salt)
    placed = [table.bet(100, {"risk": "high"}) for _ in range(3)]
    paid = table.settle()
    for bet in placed:
        args = ["verify", "plinko", "--seed", seed, "--salt", salt, "--bet-id", str(bet.bet_id), "--bet",
                '{"risk": "high"}']  # fmt: skip
        assert main(args) == 0
        printed = capsys.readouterr().out
        assert f"bet {bet.bet_id} result {table.result(bet)}" in printed
        assert f"bet {bet.bet_id} pays {paid[bet.bet_id]} for 100" in printed
    assert main(["verify", "plinko", "--seed", seed, "--salt", salt, "--bet-id", "1", "--bet", '{"risk": "x"}']) == 2
    assert "--bet: params.risk" in capsys.readouterr().err


def test_schema_lists_every_games_params_and_bet_types(capsys: pytest.CaptureFixture[str]) -> None:
    import orjson

    from server.cli import main

    assert main(["schema"]) == 0
    schema = orjson.loads(capsys.readouterr().out)
    games = schema["properties"]["games"]["properties"]
    assert {"crash", "dice", "roulette", "wheel", "plinko"} <= set(games)
    assert games["dice"]["properties"]["bet"] == {"$ref": "#/$defs/DiceBet"}
    dice_bet = schema["$defs"]["DiceBet"]
    assert dice_bet["properties"]["target"] == {"type": "integer", "minimum": 1, "maximum": 9998}
    assert set(dice_bet["required"]) == {"target", "side"} and "GameInfo" in schema["$defs"]


async def test_credit_funds_a_range_of_players_once_per_batch(empty_database: str, state_dir: Path) -> None:
    """``croupier credit FIRST-LAST AMOUNT --batch REF``: a load test funds its players without a welcome credit;
    running it again credits nobody twice; players who never signed in get a wallet."""
    import asyncpg

    env = clean_env(CROUPIER_DATA_DIR=str(state_dir), DATABASE_URL=empty_database)
    assert croupier("migrate", env=env).returncode == 0
    conn = await asyncpg.connect(empty_database)
    await conn.execute("INSERT INTO users (id, first_name) VALUES (88000002, 'known')")
    await conn.execute("INSERT INTO accounts (kind, user_id) VALUES ('wallet', 88000002)")
    await conn.close()
    first = croupier("credit", "88000001-88000005", "1000", "--batch", "swarm-1", "--reason", "load test", env=env)
    assert first.returncode == 0 and "5 credited 1000 each now; 0 had batch" in first.stdout, first.stderr
    again = croupier("credit", "88000001-88000005", "1000", "--batch", "swarm-1", "--reason", "load test", env=env)
    assert again.returncode == 0 and "0 credited 1000 each now; 5 had batch" in again.stdout, again.stderr
    conn = await asyncpg.connect(empty_database)
    balances = await conn.fetch("SELECT user_id, balance FROM accounts WHERE user_id BETWEEN 88000001 AND 88000005 "
                                "ORDER BY user_id")  # fmt: skip
    await conn.close()
    assert [(r["user_id"], r["balance"]) for r in balances] == [(88000001 + i, 1000) for i in range(5)]
    for args, named in ((("88000001-88000005", "10"), "--batch"), (("9-3", "10"), "USER_ID"),
                        (("1-2", "-5", "--batch", "b"), "AMOUNT")):  # fmt: skip
        refused = croupier("credit", *args, "--reason", "x", env=env)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1 and named in lines[0], refused.stderr
    audit = croupier("audit", env=env)
    assert audit.returncode == 0 and "audit: OK" in audit.stdout, audit.stdout + audit.stderr
