"""Which nodes may share a database, and what a node does when its database goes away.

Nodes on one database must hear each other's events. With ``REDIS_URL`` they do; on the
in-process broker they do not: a second node would take bets for rounds it never hears of. So
every node holds one PostgreSQL session advisory lock, on a connection of its own, for as long
as it runs: exclusively on the in-process broker, shared with Redis. A node on the in-process
broker then starts only when no other node is live on the database, and a node with Redis only
when no node on the in-process broker is; the late one is refused with :class:`DatabaseInUse`
(one line naming ``REDIS_URL``; ``croupier serve`` exits with status 2). PostgreSQL drops the
lock with the session, so a node that was killed frees the database at once.

While the node runs, :class:`DatabaseClaim` watches what it stands on. Its lock connection
dropped (a ``DATABASE_URL`` server restarting): it connects again, quietly, until the server is
back, and takes the lock again; taken meanwhile by a node it may not share with: the node must
stop (:class:`DatabaseInUse`). The embedded PostgreSQL's postmaster gone: nothing would bring it
back, so the node must stop (:class:`DatabaseGone`, status 1) rather than answer 503 forever.

:class:`FailureReport` carries such a failure from the app's lifespan to ``croupier serve``,
which prints it as one line and exits with its status (no traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import asyncpg
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .embedded import EmbeddedPostgres

log = logging.getLogger(__name__)

LOCK_KEY = 0x4352_4F55_4E4F_4445
"""The advisory lock, one bigint key ("CROUNODE"): apart from the migrator's and the rounds' locks."""
REFUSAL_GRACE = 2.0
"""Seconds a node retries a lock another session holds before it is refused: the session of a
node killed a moment ago may not have ended yet."""
WATCH_INTERVAL = 0.5
"""Seconds between two looks at the postmaster and the lock connection."""
CONNECT_TIMEOUT = 5.0

_HOLDERS = """
SELECT coalesce(a.application_name, '') AS name
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::int8 << 32) | l.objid::int8) = $1
"""


class NodeFailure(Exception):
    """The node cannot run, or go on running, on its database. The message is one line for people."""

    exit_status = 1
    """What ``croupier serve`` exits with."""


class DatabaseInUse(NodeFailure):
    """Another live node uses the database and the two would not hear each other's events."""

    exit_status = 2


class DatabaseGone(NodeFailure):
    """The embedded PostgreSQL the node runs on has stopped."""


def interrupt_this_process(failure: NodeFailure) -> None:
    """Stop the node the way Ctrl-C does: the server drains and closes its sockets, the node's
    resources close, and ``croupier serve`` exits with ``failure``'s status."""
    signal.raise_signal(signal.SIGINT)


class DatabaseClaim:
    """A node's claim on its database, from :meth:`acquire` to :meth:`release` (see the module).

    ``dsn``: the node's session DSN (``CROUPIER_DB_SESSION_URL``, else ``DATABASE_URL``), never a
    transaction-mode pooler (see :mod:`server.db.pool`): the lock lives as long as the session.
    ``postmaster``: the embedded PostgreSQL the node runs on, watched until it stops.
    ``on_failure`` is called once, from the event loop, when the node must stop; :attr:`failure`
    says why.
    """

    def __init__(self, dsn: str, *, node_id: str, shared: bool, postmaster: EmbeddedPostgres | None = None,
                 on_failure: Callable[[NodeFailure], None] | None = None,
                 interval: float = WATCH_INTERVAL) -> None:  # fmt: skip
        """``shared``: the node shares events through Redis, so other such nodes may use the database too."""
        self._dsn = dsn
        self._shared = shared
        self._name = f"croupier node {node_id} ({'Redis' if shared else 'in-process broker'})"[:63]
        self._postmaster = postmaster
        self._on_failure = on_failure
        self._interval = interval
        self._conn: asyncpg.Connection | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.failure: NodeFailure | None = None
        """Why the node must stop, once it must."""

    async def acquire(self, grace: float = REFUSAL_GRACE) -> None:
        """Take the lock (retrying for ``grace`` seconds while another session holds it) and start
        watching. Raises :class:`DatabaseInUse` naming the nodes in the way."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            try:
                await self._take()
                break
            except DatabaseInUse:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.2)
        self._watcher = loop.create_task(self._watch(), name="database-claim")

    async def release(self) -> None:
        """Stop watching and end the lock's session (PostgreSQL releases the lock with it)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT)
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresError):
                conn.terminate()

    async def _take(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT,
                                     server_settings={"application_name": self._name})  # fmt: skip
        try:
            function = "pg_try_advisory_lock_shared" if self._shared else "pg_try_advisory_lock"
            if await conn.fetchval(f"SELECT {function}($1)", LOCK_KEY):
                self._conn = conn
                return
            holders = await conn.fetch(_HOLDERS, LOCK_KEY)
        except BaseException:
            conn.terminate()
            raise
        await conn.close()
        raise DatabaseInUse(self._refusal([row["name"] for row in holders]))

    def _refusal(self, holders: Sequence[str]) -> str:
        names = ", ".join(sorted(name.removeprefix("croupier ") or "another session" for name in holders))
        users = f"this database is in use by {names or 'another node'}"
        if self._shared:
            return f"{users}, which hears no other node: restart it with REDIS_URL to run more nodes beside it"
        return f"{users}; the in-process broker serves one node alone: set REDIS_URL on every node to run several"

    async def _watch(self) -> None:
        lost = False
        while True:
            await asyncio.sleep(self._interval)
            postmaster = self._postmaster
            if postmaster is not None and not postmaster.is_running():
                where = f"pid {postmaster.pid}, data in {postmaster.data_dir}"
                self._fail(DatabaseGone(f"the embedded PostgreSQL this node runs on ({where}) has stopped; "
                                        "start the node again to restart it"))  # fmt: skip
                return
            if self._conn is not None and not self._conn.is_closed():
                continue
            if not lost:
                log.warning("lost the database session holding this node's claim; connecting again")
                lost = True
            self._conn = None
            try:
                await self._take()
            except DatabaseInUse as exc:
                self._fail(exc)
                return
            except Exception as exc:  # not back yet: refused, reset, starting up, timed out
                log.debug("database claim: %s", exc)
                continue
            log.info("database back: this node's claim on it is taken again")
            lost = False

    def _fail(self, failure: NodeFailure) -> None:
        self.failure = failure
        log.error("%s: stopping this node", failure)
        if self._on_failure is not None:
            self._on_failure(failure)


class FailureReport:
    """ASGI middleware for ``croupier serve``: a :class:`NodeFailure` raised through the lifespan
    (the node refused to start, or stopped because its database went away) is appended to
    ``failures`` for the command to print as one line and exit with, instead of the traceback
    uvicorn would log. Other scopes and other exceptions pass through untouched.
    """

    def __init__(self, app: ASGIApp, failures: list[NodeFailure]) -> None:
        self.app = app
        self.failures = failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def forward(message: Message) -> None:
            if message["type"] in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
                held.append(message)  # its traceback is sent below, unless the exception is a NodeFailure
            else:
                await send(message)

        try:
            await self.app(scope, receive, forward)
        except NodeFailure as failure:
            self.failures.append(failure)
            if any(message["type"] == "lifespan.startup.failed" for message in held):
                await send({"type": "lifespan.startup.failed", "message": ""})  # the server exits: nothing to undo
            elif held:
                await send({"type": "lifespan.shutdown.complete"})  # raised once everything was closed
            return
        except BaseException:
            for message in held:
                await send(message)
            raise
        for message in held:
            await send(message)
