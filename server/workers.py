"""``croupier serve --workers N``: one node as N worker processes sharing its port.

One Python process uses one core. With ``--workers N`` the ``croupier serve`` process becomes a
supervisor: it binds N listening sockets to the same address with ``SO_REUSEPORT`` (the kernel
spreads new connections over them), starts N ``croupier serve`` workers, one socket each, and
watches them. Every worker is a full node of the cluster (its own database pool, broker
subscription, round drivers under the same PostgreSQL locks) with its own node id
(``<node id>-w<i>``), so they share events through Redis exactly as separate machines do:
several workers need ``REDIS_URL``.

Signals: the workers run in their own session, so a Ctrl-C in the terminal reaches only the
supervisor, which forwards one SIGTERM to each worker (they drain, then close their sockets
with 1012); a second Ctrl-C or SIGTERM forwards a second one (stop now). A worker that dies is
started again on the same socket (connections that arrive meanwhile wait in its listen queue)
unless it died within :data:`MIN_UPTIME` of its start: then the node is broken (a database that
refuses, a bug at startup) and the supervisor stops every worker and exits with status 1. If
the supervisor itself dies, the kernel sends each worker SIGTERM (``PR_SET_PDEATHSIG``).

Metrics: the workers share a ``PROMETHEUS_MULTIPROC_DIR`` (:mod:`server.metrics.multiprocess`), so
whichever worker answers ``/metrics`` reports the whole node; a worker that exits is marked dead there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .metrics.multiprocess import MultiprocessDir, worker_metrics_dir

log = logging.getLogger(__name__)

MIN_UPTIME = 10.0
"""Seconds a worker must have run for its death to be answered by a restart rather than a stop."""
STOP_GRACE = 60.0
"""Seconds the supervisor waits for draining workers before it kills them."""
LISTEN_BACKLOG = 2048
"""Pending connections per worker socket (uvicorn's default for the sockets it binds)."""
_PR_SET_PDEATHSIG = 1


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets on ``host:port`` with ``SO_REUSEPORT`` (port 0: one free port
    chosen for all of them). Raises ``OSError`` naming the address when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
            port = sock.getsockname()[1]
            sock.listen(LISTEN_BACKLOG)
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def die_with_parent() -> None:
    """In a worker: have the kernel send SIGTERM when the supervisor exits (Linux), and stop at
    once if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Worker:
    index: int
    sock: socket.socket
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    ready: bool = False


class Supervisor:
    """Starts, watches and stops the worker processes of one node."""

    def __init__(self, sockets: list[socket.socket], argv: Sequence[str], *, env: Mapping[str, str], node_id: str,
                 host: str, min_uptime: float = MIN_UPTIME, stop_grace: float = STOP_GRACE) -> None:  # fmt: skip
        """``argv`` starts one worker (``croupier serve`` with the node's options); each gets
        ``--listen-fd`` (its socket) and ``--ready-fd`` (a pipe to write one byte to once it serves)
        appended, and ``CROUPIER_NODE_ID=<node_id>-w<i>`` in its environment."""
        self._workers = [_Worker(index, sock) for index, sock in enumerate(sockets)]
        self._argv = list(argv)
        self._env = dict(env)
        self._node_id = node_id
        self._host = host
        self._min_uptime = min_uptime
        self._stop_grace = stop_grace
        self._stopping = asyncio.Event()
        self._watchers: set[asyncio.Task[None]] = set()  # readiness readers (the loop keeps only weak references)
        self._metrics: MultiprocessDir | None = None

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [w.process.pid for w in self._workers if w.process is not None and w.process.returncode is None]

    @property
    def port(self) -> int:
        return int(self._workers[0].sock.getsockname()[1])

    async def run(self) -> int:
        """Run the workers until a signal (exit status 0) or a worker that cannot stay up (1); the
        listening sockets are closed when it returns."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        self._metrics = worker_metrics_dir(self._env, len(self._workers))
        try:
            for worker in self._workers:
                await self._start(worker)
            status = await self._watch()
            await self._stop_all()
            return status
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for worker in self._workers:  # whatever happened: no worker outlives the supervisor
                if worker.process is not None and worker.process.returncode is None:
                    worker.process.kill()
                    await worker.process.wait()
                worker.sock.close()
            if self._metrics is not None:
                for worker in self._workers:
                    if worker.process is not None:
                        self._metrics.worker_exited(worker.process.pid)
                self._metrics.close()

    def stop(self) -> None:
        """Send every worker SIGTERM (they drain and exit); :meth:`run` returns once they are gone.
        What SIGINT and SIGTERM do; a second call sends a second SIGTERM (workers then stop at once)."""
        self._stopping.set()
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)

    async def _start(self, worker: _Worker) -> None:
        ready_read, ready_write = os.pipe()
        fd = worker.sock.fileno()
        env = {**self._env, "CROUPIER_NODE_ID": f"{self._node_id}-w{worker.index}", "CROUPIER_WORKERS": "1",
               **(self._metrics.env() if self._metrics is not None else {})}  # fmt: skip
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self._argv, "--listen-fd", str(fd), "--ready-fd", str(ready_write),
                env=env, pass_fds=(fd, ready_write), start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(ready_write)
        worker.started, worker.ready = time.monotonic(), False
        watcher = asyncio.get_running_loop().create_task(self._await_ready(worker, ready_read))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _await_ready(self, worker: _Worker, ready_read: int) -> None:
        try:
            said = await asyncio.to_thread(os.read, ready_read, 1)
        finally:
            os.close(ready_read)
        if not said or worker.process is None:
            return  # it exited before it was ready: _watch deals with that
        log.info("worker %d ready (pid %d)", worker.index, worker.process.pid)
        worker.ready = True
        if all(w.ready for w in self._workers):
            address = f"{self._host}:{self._workers[0].sock.getsockname()[1]}"
            print(f"Croupier node {self._node_id}: {len(self._workers)} workers ready on http://{address}"
                  f"  (WebSocket: ws://{address}/ws)", flush=True)  # fmt: skip

    async def _watch(self) -> int:
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                exits = {asyncio.ensure_future(w.process.wait()): w for w in self._workers if w.process is not None}
                done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
                for future in exits:
                    if future not in done:
                        future.cancel()
                if self._stopping.is_set():
                    return 0
                for future in done:
                    worker = exits[future]
                    code = future.result()
                    if self._metrics is not None and worker.process is not None:
                        self._metrics.worker_exited(worker.process.pid)
                    uptime = time.monotonic() - worker.started
                    if uptime < self._min_uptime:
                        log.error("worker %d exited with status %d %.1f s after its start: stopping the node",
                                  worker.index, code, uptime)  # fmt: skip
                        return 1
                    log.error("worker %d exited with status %d after %.0f s: starting it again",
                              worker.index, code, uptime)  # fmt: skip
                    await self._start(worker)
            return 0
        finally:
            stopping.cancel()

    async def _stop_all(self) -> None:
        if not self._stopping.is_set():
            self.stop()
        running = [w.process for w in self._workers if w.process is not None and w.process.returncode is None]
        if not running:
            return
        _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running], timeout=self._stop_grace)
        if late:
            log.error("%d workers still running %.0f s after SIGTERM: killing them", len(late), self._stop_grace)
