"""Ledger health as a metric: an incremental audit of what changed since the last pass.

``croupier audit`` (``server/ledger/audit.py``) proves the whole ledger in one snapshot; its cost
grows with history. This pass checks the same money invariants on what is new, every
``CROUPIER_LEDGER_AUDIT_INTERVAL`` seconds, on one node (:class:`LedgerAuditor` holds an advisory
lock; the others stand by), and exports the result:

- every ledger transaction with an id in the window sums to zero and has two legs or more;
- every leg of the window belongs to a transaction and an account that exist (the ledger's tables
  keep no foreign keys: migration 0021);
- every account a transaction of the window touched holds exactly the sum of its legs;
- no wallet the window touched is negative;
- the balances of all accounts sum to zero (one indexed pass over ``accounts``).

**The window.** Transaction ids come from a sequence, and a transaction may commit after one with
a higher id: "ids above the last one checked" would skip a slow commit. So a pass records a mark
(the sequence's last value, and the time it was read), and a mark's ids are *settled* once every
transaction open at that time has ended (the oldest open transaction in ``pg_stat_activity``
started after the mark): every id up to it is then committed or never will be. Each pass checks
the ids from the last settled mark checked to the newest settled one (:class:`AuditWindow`). The
node's role must see other sessions' ``xact_start`` (the same role, a superuser or
``pg_read_all_stats``), or a slow transaction of another role may be checked before it commits
(and found wanting).

**Balances.** An account's legs are summed once (index ``ledger_legs_by_account``) and then kept up
to date with each window's legs (:class:`LegSums`, bounded); its balance in the pass's snapshot
must equal that sum plus its legs above the window (committed but not settled yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .definitions import AuditMetrics, audit_metrics

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection, or one lent by a pool."""

log = logging.getLogger(__name__)

LOCK_CLASS = 0x41554454
"""Advisory lock namespace "AUDT": the node holding ``(LOCK_CLASS, 1)`` runs the incremental audit."""
MAX_MARKS = 1000
"""Marks kept waiting to settle (a transaction open for hours keeps them all: the oldest are dropped)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open (or close) the lock's connection."""
STATEMENT_TIMEOUT = 60.0
"""Seconds one statement of a pass may take on the lock's connection before the pass fails (and the lock
is given up with the connection)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """The ledger transaction sequence's last value (``sequence``) as read at ``at`` (Unix seconds)."""

    sequence: int
    at: float


class AuditWindow:
    """Which ledger transaction ids a pass may check: those up to the newest settled mark, above
    what was checked before (no I/O; see the module's docstring)."""

    def __init__(self) -> None:
        self.checked: int | None = None
        """The highest id checked (None: nothing yet; the first settled mark only sets the start)."""
        self._marks: deque[Mark] = deque(maxlen=MAX_MARKS)

    def mark(self, sequence: int, at: float) -> None:
        """Record the sequence's value read at ``at``."""
        self._marks.append(Mark(sequence, at))

    def settle(self, oldest_open: float | None) -> int | None:
        """Drop the marks settled now that the oldest open transaction started at ``oldest_open`` (None:
        none is open) and return the newest settled sequence value, or None when none settled."""
        settled: int | None = None
        while self._marks and (oldest_open is None or self._marks[0].at < oldest_open):
            settled = self._marks.popleft().sequence
        return settled

    def next(self, oldest_open: float | None) -> tuple[int, int] | None:
        """The ids ``(low, high]`` to check now, or None (nothing new settled; or the first settled mark,
        which only sets where checking starts: history is ``croupier audit``'s)."""
        settled = self.settle(oldest_open)
        if settled is None:
            return None
        if self.checked is None:
            self.checked = settled
            return None
        if settled <= self.checked:
            return None
        return self.checked, settled

    def advance(self, high: int) -> None:
        """The window up to ``high`` was checked."""
        self.checked = high


class LegSums:
    """The sum of each account's legs up to the last checked id, for at most ``limit`` accounts (the
    least recently moved are forgotten, and summed again from the index when next touched)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._sums: dict[int, int] = {}

    def get(self, account: int) -> int | None:
        return self._sums.get(account)

    def set(self, account: int, total: int) -> None:
        self._sums.pop(account, None)
        self._sums[account] = total
        while len(self._sums) > self._limit:
            del self._sums[next(iter(self._sums))]

    def __len__(self) -> int:
        return len(self._sums)


@dataclass(frozen=True, slots=True)
class TouchedAccount:
    """An account a window's transactions moved, as the pass's snapshot shows it."""

    account: int
    wallet: bool
    balance: int
    window: int
    """The sum of its legs in the window."""
    later: int
    """The sum of its legs above the window (committed, not settled yet)."""
    before: int
    """The sum of its legs up to the window (from :class:`LegSums`, or read)."""


@dataclass(slots=True)
class Findings:
    """What one pass found: offending ids by check (empty: nothing wrong)."""

    checked: int = 0
    problems: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def judge(unbalanced: Iterable[int], touched: Iterable[TouchedAccount], total: int, *, checked: int,
          orphaned: Iterable[int] = ()) -> Findings:  # fmt: skip
    """The findings of a pass from what it read (no I/O): ``unbalanced`` transaction ids, the touched
    accounts, the sum of every balance, and the ids of the window's legs whose transaction or account does
    not exist (``orphaned``)."""
    findings = Findings(checked=checked)
    touched = list(touched)
    problems = {
        "unbalanced_transactions": sorted(unbalanced),
        "orphan_legs": sorted(set(orphaned)),
        "balance_mismatch": [a.account for a in touched if a.balance != a.before + a.window + a.later],
        "negative_wallets": [a.account for a in touched if a.wallet and a.balance < 0],
        "not_conserved": [total] if total != 0 else [],
    }
    findings.problems = {name: ids for name, ids in problems.items() if ids}
    return findings


_MARK = """
SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS sequence, extract(epoch FROM clock_timestamp())::float8 AS at
FROM ledger_txns_id_seq
"""
# Read after the mark, in a statement (so a transaction) of its own: pg_stat_activity is a snapshot per transaction.
_OLDEST_OPEN = """
SELECT extract(epoch FROM min(xact_start))::float8 FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND xact_start IS NOT NULL AND datname = current_database()
"""
_UNBALANCED = """
SELECT t.id FROM ledger_txns t LEFT JOIN ledger_legs l ON l.txn_id = t.id
WHERE t.id > $1 AND t.id <= $2
GROUP BY t.id HAVING coalesce(sum(l.amount), 0) <> 0 OR count(l.txn_id) < 2
"""
_ORPHANED = """
SELECT DISTINCT l.txn_id FROM ledger_legs l
WHERE l.txn_id > $1 AND l.txn_id <= $2
  AND (NOT EXISTS (SELECT FROM ledger_txns t WHERE t.id = l.txn_id)
       OR NOT EXISTS (SELECT FROM accounts a WHERE a.id = l.account_id))
"""
_WINDOW_LEGS = """
SELECT account_id, sum(amount)::bigint AS total FROM ledger_legs WHERE txn_id > $1 AND txn_id <= $2 GROUP BY account_id
"""
_ACCOUNTS = """
SELECT a.id, a.kind = 'wallet' AS wallet, a.balance,
       coalesce((SELECT sum(l.amount) FROM ledger_legs l WHERE l.txn_id > $2 AND l.account_id = a.id), 0)::bigint
         AS later
FROM accounts a WHERE a.id = ANY($1::bigint[])
"""
_SUMS_UPTO = """
SELECT account_id, sum(amount)::bigint AS total FROM ledger_legs
WHERE account_id = ANY($1::bigint[]) AND txn_id <= $2 GROUP BY account_id
"""
_TOTAL = "SELECT coalesce(sum(balance), 0)::bigint FROM accounts"


class IncrementalAudit:
    """One node's audit state: the window and the accounts' leg sums. :meth:`run` is one pass."""

    def __init__(self, *, cached_accounts: int = 100_000) -> None:
        self.window = AuditWindow()
        self.sums = LegSums(cached_accounts)

    async def run(self, conn: Connection) -> Findings | None:
        """Check what settled since the last pass; None when nothing new settled (nothing checked)."""
        mark = await conn.fetchrow(_MARK)
        assert mark is not None
        self.window.mark(mark["sequence"], mark["at"])
        span = self.window.next(await conn.fetchval(_OLDEST_OPEN))
        if span is None:
            return None
        low, high = span
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            unbalanced = [row["id"] for row in await conn.fetch(_UNBALANCED, low, high)]
            orphaned = [row["txn_id"] for row in await conn.fetch(_ORPHANED, low, high)]
            window = {row["account_id"]: row["total"] for row in await conn.fetch(_WINDOW_LEGS, low, high)}
            rows = await conn.fetch(_ACCOUNTS, list(window), high)
            unknown = [account for account in window if self.sums.get(account) is None]
            # Unknown accounts are summed up to ``high`` (their window included): "before" is that minus the window.
            read: Mapping[int, int] = (
                {row["account_id"]: row["total"] for row in await conn.fetch(_SUMS_UPTO, unknown, high)}
                if unknown else {}
            )  # fmt: skip
            total = await conn.fetchval(_TOTAL)
        touched = []
        for row in rows:
            account = row["id"]
            known = self.sums.get(account)
            before = known if known is not None else read.get(account, 0) - window[account]
            touched.append(TouchedAccount(account, row["wallet"], row["balance"], window[account], row["later"],
                                          before))  # fmt: skip
            self.sums.set(account, before + window[account])
        self.window.advance(high)
        return judge(unbalanced, touched, total, checked=high - low, orphaned=orphaned)


class LedgerAuditor:
    """Runs :class:`IncrementalAudit` every ``interval`` seconds while this node holds the audit lock
    (one node of the cluster at a time; the others try again each interval), exporting the results
    (:func:`~.definitions.audit_metrics`).

    The lock is a session advisory lock on a connection of the auditor's own to ``dsn``: the node's session
    DSN (``CROUPIER_DB_SESSION_URL``, else ``DATABASE_URL``; PostgreSQL straight or a session-mode pool, never
    a transaction-mode pooler, where a session lock stays with whichever server connection ran it: see
    :mod:`server.db.pool`). The holder runs its passes on that same connection, so the lock and the audit
    live and die together: if the connection drops, PostgreSQL releases the lock and a standby takes over at
    its next try. A standby opens a connection once an interval to try the lock and closes it when the lock
    is taken (it keeps no idle session). The session is named ``croupier audit <name>`` in
    ``pg_stat_activity``."""

    def __init__(self, dsn: str, *, interval: float, name: str = "") -> None:
        self._dsn = dsn
        self._interval = interval
        self._application_name = f"croupier audit {name}".strip()[:63]
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        """Passes run by this auditor (while it held the lock)."""
        self.holding = False
        """Whether this auditor holds the lock now (it is the one auditing)."""

    def start(self) -> None:
        """Start trying for the lock (and auditing while it is held) in a task of the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-auditor")

    async def close(self) -> None:
        """Stop: the lock's session ends with the task, so another node's auditor may take over."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._turn()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("ledger audit: %s; trying again in %.0f s", exc, self._interval)
            except Exception:  # a bug must not stop the node; the metric's age shows the audit stopped
                log.exception("ledger audit failed; trying again in %.0f s", self._interval)
            await asyncio.sleep(self._interval)

    async def _turn(self) -> None:
        """One try for the lock; when taken, audit on its connection until that fails (or the task stops)."""
        conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT, command_timeout=STATEMENT_TIMEOUT,
                                     server_settings={"application_name": self._application_name})  # fmt: skip
        try:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1, 1)", LOCK_CLASS):
                self.holding = True
                await self._audit(conn)
        finally:
            self.holding = False
            await _end_session(conn)  # the lock, if held, ends with the session

    async def _audit(self, conn: Connection) -> None:
        """Audit on ``conn`` (holding the lock) until it fails; a new holder starts a fresh window."""
        metrics = audit_metrics()
        audit = IncrementalAudit()
        healthy = True  # the latest verdict, exported again while nothing new settles
        log.info("ledger audit: this node audits the ledger every %g s", self._interval)
        while True:
            started = time.perf_counter()
            findings = await audit.run(conn)
            self.passes += 1
            if findings is not None:
                healthy = findings.ok
                _export(metrics, findings)
            metrics.ok.set(1 if healthy else 0)
            metrics.duration.set(time.perf_counter() - started)
            metrics.last_pass.set(time.time())
            await asyncio.sleep(self._interval)


async def _end_session(conn: asyncpg.Connection) -> None:
    """Close ``conn`` politely (PostgreSQL ends the session, and its locks, at once), or drop it."""
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        conn.terminate()
    except asyncio.CancelledError:
        conn.terminate()
        raise


def _export(metrics: AuditMetrics, findings: Findings) -> None:
    metrics.checked.inc(findings.checked)
    for check, ids in findings.problems.items():
        metrics.violations.labels(check).inc(len(ids))
        log.error("ledger audit: %d %s: %s", len(ids), check.replace("_", " "), ", ".join(map(str, ids[:20])))
