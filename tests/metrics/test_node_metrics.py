"""``/metrics`` of real ``croupier serve`` processes: counters that move with play, bounded labels, the
ledger-health gauge catching a planted violation, and ``--workers 2`` reporting both workers."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect

from server.metrics.labels import FRAME_IN_TYPES
from tests.metrics.scrape import Scrape, scrape, scrape_until
from tests.services import EmbeddedRedis, alive, clean_env, free_port, wait_ready
from tests.test_cluster import TOKEN, Player, bet, node_env, players
from tests.test_single_node import serving
from tests.test_workers import _children, all_ready, supervisor, worker_of

pytestmark = pytest.mark.integration


def single_env(database_url: str, state: Path, **extra: str) -> dict[str, str]:
    return clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=database_url, CROUPIER_DATA_DIR=str(state),
                     CROUPIER_NODE_ID="metrics-1", CROUPIER_GAMES="dice", CROUPIER_BETTING_MS="700",
                     CROUPIER_ROUND_PAUSE_MS="100", CROUPIER_SEED_CHAIN_LENGTH="500", CROUPIER_WELCOME_CREDIT="1000",
                     CROUPIER_LEDGER_AUDIT_INTERVAL="0.3", CROUPIER_AUTH_TIMEOUT="60", **extra)  # fmt: skip


async def test_play_moves_the_metrics_labels_stay_bounded_and_the_audit_catches_a_planted_leg(
    empty_database: str, tmp_path: Path
) -> None:
    port = free_port()
    with serving(single_env(empty_database, tmp_path / "state"), port, tmp_path / "node.log"):
        await wait_ready(port)
        before = await scrape(port)
        assert before.value("croupier_ledger_audit_ok") == 1 or "croupier_ledger_audit_ok" not in before.samples
        player = await Player.join(port, 7001)
        binary = await connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["croupier.v1.msgpack"])  # type: ignore[list-item]
        async with players(player):
            assert (await player.request({"t": "subscribe", "id": "s", "game": "dice"}))["t"] == "subscribed"
            opening = await player.next_betting(timeout=15)
            placed = await bet(player, opening["round"], "metrics-1")
            assert placed["t"] == "bet_ok", placed
            # Frames of types nobody defined: counted as "other", never as a label of their own.
            for i in range(3):
                assert (await player.request({"t": f"x-made-up-{i}", "id": f"u{i}"}))["t"] == "error"
            after = await scrape_until(port, lambda s: s.value("croupier_frames_out_total", type="balance") >= 1)
            await binary.close()

        assert after.value("croupier_sockets_open", codec="json") >= 1
        assert after.value("croupier_sockets_open", codec="msgpack") == 1
        assert after.value("croupier_connections_total", codec="json") >= 1
        assert after.value("croupier_auth_total", result="ok") >= 1
        assert after.value("croupier_frames_in_total", type="auth") >= 1
        assert after.value("croupier_frames_in_total", type="bet") == 1
        assert after.value("croupier_frames_in_total", type="other") >= 3
        assert after.label_values("croupier_frames_in_total", "type") <= {*FRAME_IN_TYPES, "other"}
        assert not any("made-up" in v for have, _ in after.samples["croupier_frames_in_total"] for v in have.values())
        assert after.value("croupier_frames_out_total", type="bet_ok") == 1
        assert after.value("croupier_frames_out_total", type="welcome") >= 1
        assert after.value("croupier_frames_out_total", type="round") >= 1
        assert after.value("croupier_request_duration_seconds_count", type="bet") == 1
        assert after.value("croupier_request_duration_seconds_bucket", type="bet", le="+Inf") == 1
        assert after.value("croupier_bets_committed_total") == 1
        assert after.value("croupier_group_commit_batch_size_count", name="bet-batcher") >= 1
        assert after.value("croupier_group_commit_seconds_count", name="sign-ins") >= 1
        assert after.value("croupier_rounds_total", game="dice", phase="betting") >= 1
        assert after.value("croupier_driver_leases", game="dice") == 1
        assert after.value("croupier_driver_takeovers_total", game="dice") >= 1
        assert after.value("croupier_broker_published_total", backend="memory") >= 2
        assert after.value("croupier_outbox_relay_lag_seconds_count") >= 1
        assert after.value("croupier_dependency_up", dependency="postgres") == 1
        assert "redis" not in after.label_values("croupier_dependency_up", "dependency")
        assert after.value("croupier_event_loop_lag_seconds_count") >= 1
        assert after.value("process_resident_memory_bytes") > 0
        assert after.value("croupier_node_info", node="metrics-1") == 1

        healthy = await scrape_until(port, lambda s: s.value("croupier_ledger_audit_checked_transactions_total") > 0)
        assert healthy.value("croupier_ledger_audit_ok") == 1, healthy.samples.get("croupier_ledger_audit_ok")
        assert healthy.value("croupier_ledger_audit_violations_total") == 0
        assert healthy.value("croupier_ledger_audit_last_pass_timestamp_seconds") > 0

        # Plant a violation behind the ledger's back: a transaction with one leg (money from nowhere).
        conn = await asyncpg.connect(empty_database)
        try:
            async with conn.transaction():
                txn = await conn.fetchval("INSERT INTO ledger_txns (kind, reason) VALUES ('adjust', 'planted') "
                                          "RETURNING id")  # fmt: skip
                wallet = await conn.fetchval("SELECT id FROM accounts WHERE user_id = 7001")
                await conn.execute("INSERT INTO ledger_legs (txn_id, account_id, amount) VALUES ($1, $2, 5)", txn,
                                   wallet)  # fmt: skip
                await conn.execute("UPDATE accounts SET balance = balance + 5 WHERE id = $1", wallet)
        finally:
            await conn.close()
        failing = await scrape_until(port, lambda s: s.value("croupier_ledger_audit_ok") == 0)
        assert failing.value("croupier_ledger_audit_ok") == 0
        assert failing.value("croupier_ledger_audit_violations_total", check="unbalanced_transactions") == 1
        assert failing.value("croupier_ledger_audit_violations_total", check="not_conserved") >= 1


async def test_reads_are_counted_by_what_answered_them(empty_database: str, tmp_path: Path) -> None:
    port = free_port()
    with serving(single_env(empty_database, tmp_path / "state"), port, tmp_path / "node.log"):
        await wait_ready(port)
        player = await Player.join(port, 7002)
        async with players(player):
            for i in range(2):
                for request in ({"t": "balance"}, {"t": "history", "game": "dice"},
                                {"t": "leaderboard", "game": "dice", "metric": "net", "period": "day"}):  # fmt: skip
                    reply = await player.request({**request, "id": f"{request['t']}-{i}"})
                    assert reply["t"] == request["t"], reply
            for kind in ("my_bets", "my_transactions", "limits"):
                assert (await player.request({"t": kind, "id": kind}))["t"] == kind
            reads = await scrape_until(port, lambda s: s.value("croupier_reads_total", read="limits", source="database")
                                       > 0)  # fmt: skip

    def read(what: str, source: str) -> float:
        return reads.value("croupier_reads_total", read=what, source=source)

    # The balance was confirmed at sign-in and every change reaches the node: never asked of PostgreSQL.
    assert (read("balance", "memory"), read("balance", "database")) == (2, 0)
    # The first history read fills the node's list of rounds; the second is served from it.
    assert (read("history", "memory"), read("history", "database")) == (1, 1)
    # A lone node holds the boards itself (no Redis); nobody is on them yet, so no name is read.
    assert (read("leaderboard", "memory"), read("leaderboard", "redis")) == (2, 0)
    assert read("names", "database") == 0
    assert read("my_bets", "database") == read("my_transactions", "database") == read("limits", "database") == 1
    assert reads.label_values("croupier_reads_total", "source") <= {"memory", "redis", "database"}


async def test_metrics_can_be_switched_off_or_moved_to_a_port_of_their_own(empty_database: str, tmp_path: Path) -> None:
    port = free_port()
    with serving(single_env(empty_database, tmp_path / "off", CROUPIER_METRICS="off"), port, tmp_path / "off.log"):
        await wait_ready(port)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 404
    metrics_port = free_port()
    env = single_env(empty_database, tmp_path / "port", CROUPIER_METRICS_PORT=str(metrics_port),
                     CROUPIER_METRICS_HOST="127.0.0.1")  # fmt: skip
    port = free_port()
    with serving(env, port, tmp_path / "port.log"):
        await wait_ready(port)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 404
            assert (await client.get(f"http://127.0.0.1:{metrics_port}/")).status_code == 404
        moved = await scrape(metrics_port)
        assert moved.value("croupier_node_info", node="metrics-1") == 1


async def test_every_worker_of_a_node_is_in_its_metrics(
    empty_database: str, redis: EmbeddedRedis, tmp_path: Path
) -> None:
    env = node_env(empty_database, redis.url, tmp_path / "state", "wm")
    log = tmp_path / "node.log"
    with supervisor(env, 2, log) as (process, port):
        await all_ready(log, process)
        workers = _children(process.pid)
        joined: dict[int, Player] = {}
        spare: list[Player] = []
        for i in range(40):
            player = await Player.join(port, 6000 + i)
            holder = worker_of(player, workers)
            if holder in joined:
                spare.append(player)
            else:
                joined[holder] = player
            if len(joined) == 2:
                break
        everyone = [*joined.values(), *spare]
        async with players(*everyone):
            assert len(joined) == 2, "every connection went to the same worker"

            def settled(s: Scrape) -> bool:
                return s.value("croupier_sockets_open", codec="json") == len(everyone)

            # Whichever worker answers, the node's figures: every socket, both workers' series.
            for _ in range(4):
                result = await scrape_until(port, settled)
                assert result.value("croupier_sockets_open", codec="json") == len(everyone)
                assert result.value("croupier_auth_total", result="ok") == len(everyone)
                assert result.label_values("croupier_node_info", "node") == {"wm-w0", "wm-w1"}
                assert len(result.label_values("croupier_node_info", "pid")) == 2
                assert result.value("process_resident_memory_bytes") > 0
                assert result.value("process_cpu_seconds_total") > 0
                assert result.value("croupier_dependency_up", dependency="redis") == 1
                assert result.value("croupier_dependency_up", dependency="postgres") == 1
        pids = {p.pid for p in workers}
        assert pids == {int(p) for p in result.label_values("croupier_node_info", "pid")}
        assert all(alive(pid) for pid in pids)
