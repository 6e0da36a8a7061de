"""Shared pieces of the benchmarks: a PostgreSQL to run on, a node process, latency summaries."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil

from server.db.embedded import EmbeddedPostgres
from tests.services import free_port as free_port  # re-exported: the benchmarks take it from here
from tests.services import node_process as serving_process


@contextlib.contextmanager
def bench_database(server_url: str | None, settings: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh database for one run: on ``server_url`` (created, then dropped) or on an embedded
    PostgreSQL with fsync on and ``settings`` (server settings), in a temp dir removed afterwards."""
    import asyncio

    if server_url is None:
        root = Path(tempfile.mkdtemp(prefix="croupier-bench-"))
        root.chmod(0o755)
        server = EmbeddedPostgres(root / "pg", fsync=True, settings=settings)
        try:
            yield server.start()
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
        return
    name = f"croupier_bench_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    head, sep, query = server_url.partition("?")
    try:
        yield f"{head.rsplit('/', 1)[0]}/{name}{sep}{query}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def node_process(database_url: str, bot_token: str, **env: str) -> Iterator[tuple[str, int]]:
    """Run ``croupier serve`` on a free port (:func:`tests.services.node_process`) and wait until it is
    ready; yield its ws:// URL and PID; stop it after (SIGTERM, then SIGKILL after 15 s)."""
    state = tempfile.mkdtemp(prefix="croupier-bench-state-")
    environ = {**os.environ, "DATABASE_URL": database_url, "CROUPIER_BOT_TOKEN": bot_token, "CROUPIER_DATA_DIR": state,
               **env}  # fmt: skip
    # The node's log goes to a file, never to a pipe nobody reads (a full pipe would stall the node).
    log = tempfile.NamedTemporaryFile(prefix="croupier-bench-node-", suffix=".log", delete=False)  # noqa: SIM115
    workers = int(environ.get("CROUPIER_WORKERS", "1"))
    try:
        with serving_process(environ, output=log, stop_grace=15.0) as (process, port):
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                        # With workers, /readyz answers from whichever took the connection: wait for all.
                        if response.status == 200 and (workers == 1 or "workers ready" in Path(log.name).read_text()):
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"node did not start: {Path(log.name).read_text()}")
                time.sleep(0.1)
            yield f"ws://127.0.0.1:{port}/ws", process.pid
    finally:
        log.close()
        shutil.rmtree(state, ignore_errors=True)
        print(f"  (node log: {log.name})")


WAL_SEGMENT_MB = 16


def recycled_wal_settings(segments: int) -> dict[str, str]:
    """Embedded-server settings under which a checkpoint keeps ``segments`` old WAL segments for reuse
    (``min_wal_size``), and no checkpoint is forced before twice that much WAL was written."""
    return {"min_wal_size": f"{segments * WAL_SEGMENT_MB}MB", "max_wal_size": f"{2 * segments * WAL_SEGMENT_MB}MB"}


async def recycle_wal(database_url: str, segments: int) -> None:
    """Leave ``segments`` WAL segment files ready for reuse, as a server that has been running has them
    (its checkpoints rename old segments for reuse, up to ``min_wal_size``): write a little WAL and switch
    to a new segment ``segments`` times, then checkpoint. Superuser only (the embedded server).

    On a freshly initialised cluster every segment the write position reaches is a new file that PostgreSQL
    zero-fills (16 MB) and syncs while every commit waits: at the bets benchmark's WAL rate a stall of
    ~55 ms every ~0.6 s, which was most of its ack p99 (docs/performance.md)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE bench_wal_filler (x integer)")  # logged: a temp table writes no WAL
        for _ in range(segments):
            await conn.execute("INSERT INTO bench_wal_filler VALUES (1)")
            await conn.execute("SELECT pg_switch_wal()")
        await conn.execute("DROP TABLE bench_wal_filler")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process itself used so far (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (a node's worker processes)."""
    total = 0.0
    for member in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            total += times.user + times.system
    return total


POSTGRES_BACKGROUND = ("checkpointer", "background writer", "walwriter", "autovacuum", "logical replication",
                       "io worker", "walsummarizer", "archiver", "stats collector")  # fmt: skip
"""How the titles of PostgreSQL's own processes begin (``postgres: <title>``); the rest serve connections."""


def postgres_cpu_seconds(postmaster: int) -> dict[str, float]:
    """CPU seconds so far of one PostgreSQL server's processes: ``backends`` (those serving connections) and
    ``background`` (the postmaster, WAL writer, checkpointer, autovacuum, I/O workers, and every process that
    exited: autovacuum workers come and go within seconds; the postmaster's reaped-children times keep theirs)."""
    parent = psutil.Process(postmaster)
    with parent.oneshot():
        times = parent.cpu_times()
        background = times.user + times.system + times.children_user + times.children_system
    backends = 0.0
    for child in parent.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            title = " ".join(child.cmdline()).removeprefix("postgres: ")
            seconds = sum(child.cpu_times()[:2])
            if any(part.startswith(POSTGRES_BACKGROUND) for part in title.split(": ")):
                background += seconds
            else:
                backends += seconds
    return {"backends": backends, "background": background}


def tree_system_calls(pid: int) -> tuple[int, int]:
    """Read and write system calls so far of a process and its live children (``/proc/<pid>/io``)."""
    reads = writes = 0
    for member in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            counters = member.io_counters()
            reads, writes = reads + counters.read_count, writes + counters.write_count
    return reads, writes


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its live children, in bytes."""
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def p99(samples: list[float]) -> float:
    """The 99th percentile (nearest rank below), NaN without samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def latency_summary(samples_ms: list[float]) -> str:
    if not samples_ms:
        return "no samples"
    return f"p50 {statistics.median(samples_ms):.1f} ms, p99 {p99(samples_ms):.1f} ms, max {max(samples_ms):.1f} ms"
