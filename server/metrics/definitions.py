"""Every metric of a node: its name, help, labels and buckets, and the cells hot paths count into.

Code paths count into :mod:`.tally` cells, made here once for every label value (the hot path
never builds a label set); samplers (:mod:`.samplers`, :mod:`.looplag`, :mod:`.ledgerhealth`)
set ``prometheus_client`` gauges directly, a few times a minute. Everything lives on
:data:`REGISTRY`, this package's own ``CollectorRegistry`` (not the library's global one).

Multiprocess mode (``croupier serve --workers N``, see :mod:`.multiprocess`) is decided by
``prometheus_client`` when it is imported: with ``PROMETHEUS_MULTIPROC_DIR`` set, every value lives
in a memory-mapped file of the worker's, and each gauge below says how the workers' values combine
(``multiprocess_mode``: ``livesum`` for levels, ``livemax``/``livemin`` for samples of shared state).
docs/operations.md lists every metric with its labels and meaning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from . import labels as lb
from .flush import CounterLink, GaugeLink, Links, TimingLink
from .tally import Cell, Family, Timing

MULTIPROCESS: bool = bool(getattr(values.ValueClass, "_multiprocess", False))
"""True when ``prometheus_client`` keeps values in ``PROMETHEUS_MULTIPROC_DIR`` (a worker of ``--workers N``)."""

disable_created_metrics()  # type: ignore[no-untyped-call] # no ``_created`` series beside every counter and histogram: half the exposition
REGISTRY = CollectorRegistry()
"""The node's metrics. In multiprocess mode the exposition reads the workers' files instead."""
LINKS = Links()
"""Every cell and the ``prometheus_client`` child it feeds (:mod:`.flush`)."""

if not MULTIPROCESS:  # in multiprocess mode .process mirrors these per worker
    ProcessCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)

LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: requests, commits, relay lag."""
LAG_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: the event loop's lag."""
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
"""Requests per group-commit batch."""


def _counters(name: str, doc: str, label: str, known: Iterable[str], *, other: bool = True) -> Family[Cell]:
    family = Family(known, Cell, other=other)
    metric = Counter(name, doc, [label], registry=REGISTRY)
    for value, cell in family.items():
        LINKS.add(CounterLink(cell, metric.labels(value)))
    return family


def _counter(name: str, doc: str) -> Cell:
    cell = Cell()
    LINKS.add(CounterLink(cell, Counter(name, doc, registry=REGISTRY)))
    return cell


def _pairs(name: str, doc: str, labels: tuple[str, str],
           known: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], Cell]:  # fmt: skip
    metric = Counter(name, doc, list(labels), registry=REGISTRY)
    cells: dict[tuple[str, str], Cell] = {}
    for first, seconds in known.items():
        for second in seconds:
            cell = cells[first, second] = Cell()
            LINKS.add(CounterLink(cell, metric.labels(first, second)))
    return cells


def _levels(name: str, doc: str, label: str, known: Iterable[str]) -> Family[Cell]:
    family = Family(known, Cell, other=False)
    metric = Gauge(name, doc, [label], registry=REGISTRY, multiprocess_mode="livesum")
    for value, cell in family.items():
        LINKS.add(GaugeLink(cell, metric.labels(value)))
    return family


def _timings(name: str, doc: str, label: str, known: Iterable[str], buckets: Sequence[float]) -> Family[Timing]:
    family = Family(known, lambda: Timing(buckets), other=False)
    metric = Histogram(name, doc, [label], registry=REGISTRY, buckets=buckets)
    for value, timing in family.items():
        LINKS.add(TimingLink(timing, metric.labels(value)))
    return family


# ------------------------------------------------------------------------------------------ edge

SOCKETS_OPEN = _levels("croupier_sockets_open", "WebSocket connections open on this node, by codec.", "codec",
                       lb.CODECS.values())  # fmt: skip
for _subprotocol, _codec in lb.CODECS.items():
    SOCKETS_OPEN.alias(_subprotocol, _codec)
CONNECTIONS = _counters("croupier_connections_total", "WebSocket handshakes accepted, by codec.", "codec",
                        lb.CODECS.values(), other=False)  # fmt: skip
for _subprotocol, _codec in lb.CODECS.items():
    CONNECTIONS.alias(_subprotocol, _codec)
REFUSED = _counters("croupier_connections_refused_total",
                    "Connections refused before they became a session, by reason.", "reason", lb.REFUSALS)  # fmt: skip
AUTH = _counters("croupier_auth_total", "Authentication results, by result (ok, or why it failed).", "result",
                 lb.AUTH_RESULTS)  # fmt: skip
CLOSES = _counters("croupier_closes_total", "Close codes sent to (or, 1006, recorded for) sockets, by code.", "code",
                   lb.CLOSE_CODES)  # fmt: skip
for _code in lb.CLOSE_CODES:
    CLOSES.alias(int(_code), _code)
FRAMES_IN = _counters("croupier_frames_in_total", "Frames received from clients, by message type (other: unknown "
                      "types and frames not read).", "type", lb.FRAME_IN_TYPES)  # fmt: skip
for _cls in lb.REQUEST_CLASSES:
    FRAMES_IN.alias(_cls, lb.tag_of(_cls))
FRAMES_OUT = _counters("croupier_frames_out_total", "Frames queued to sockets, by message type (a broadcast counts "
                       "once per socket).", "type", lb.FRAME_OUT_TYPES)  # fmt: skip
for _cls in lb.REPLY_CLASSES:
    FRAMES_OUT.alias(_cls, lb.tag_of(_cls))
DROPPED = _counters("croupier_frames_dropped_total", "Frames not sent to a socket, by reason.", "reason",
                    lb.DROP_REASONS, other=False)  # fmt: skip
OVERFLOWS = _counter("croupier_send_queue_overflows_total",
                     "Send queues that overflowed: their socket closed with 4503.")  # fmt: skip
REQUEST_SECONDS = _timings("croupier_request_duration_seconds", "Time from a request's frame to its reply, by type.",
                           "type", lb.REQUEST_TYPES, LATENCY_BUCKETS)  # fmt: skip
BET_SECONDS = REQUEST_SECONDS["bet"]
ACTION_SECONDS = REQUEST_SECONDS["action"]
DEPOSIT_SECONDS = REQUEST_SECONDS["deposit"]
READS = _pairs("croupier_reads_total", "Player reads answered, by what was read and what answered it (memory: this "
               "node, without a query; redis; database: PostgreSQL).", ("read", "source"), lb.READS)  # fmt: skip
"""``READS["balance", "memory"].n += 1``: every pair of :data:`.labels.READS`."""

# ---------------------------------------------------------------------------------- ledger, db

BETS = _counter("croupier_bets_committed_total", "Bets committed (accepted; replays of a retried bet not counted).")
LEDGER_ERRORS = _counters("croupier_ledger_errors_total", "Bets the ledger refused, by protocol error code.", "code",
                          lb.ERROR_CODES)  # fmt: skip

_BATCH_SIZE = Histogram("croupier_group_commit_batch_size", "Requests per group-commit batch, by group.", ["name"],
                        registry=REGISTRY, buckets=BATCH_BUCKETS)  # fmt: skip
_COMMIT_SECONDS = Histogram("croupier_group_commit_seconds", "Time a group-commit batch takes to commit (splits "
                            "included), by group.", ["name"], registry=REGISTRY, buckets=LATENCY_BUCKETS)  # fmt: skip


@dataclass(frozen=True, slots=True)
class GroupCommitCells:
    """What one group commit (``server.db.groupcommit.GroupCommit``) counts per batch."""

    size: Timing
    seconds: Timing


@cache
def group_commit(name: str) -> GroupCommitCells:
    """The cells of the group commit called ``name`` (a constant of the code: ``bet-batcher``, ``sign-ins`` ...)."""
    cells = GroupCommitCells(Timing(BATCH_BUCKETS), Timing(LATENCY_BUCKETS))
    LINKS.add(TimingLink(cells.size, _BATCH_SIZE.labels(name)))
    LINKS.add(TimingLink(cells.seconds, _COMMIT_SECONDS.labels(name)))
    return cells


# ------------------------------------------------------------------------------- outbox, broker

RELAY_SECONDS = Timing(LATENCY_BUCKETS)
LINKS.add(TimingLink(RELAY_SECONDS, Histogram(
    "croupier_outbox_relay_lag_seconds", "Time from a commit handing user events to the relay until the broker took "
    "them.", registry=REGISTRY, buckets=LATENCY_BUCKETS)))  # fmt: skip
SWEPT = _counter("croupier_outbox_swept_total", "User events the sweeper relayed (their first relay had failed).")
OUTBOX_BACKLOG = Gauge("croupier_outbox_backlog", "User events committed and not yet relayed (sampled).",
                       registry=REGISTRY, multiprocess_mode="livemax")  # fmt: skip
OUTBOX_OLDEST = Gauge("croupier_outbox_oldest_unrelayed_age_seconds", "Age of the oldest user event not yet relayed "
                      "(0: none; sampled).", registry=REGISTRY, multiprocess_mode="livemax")  # fmt: skip

BROKERS = ("memory", "redis")
PUBLISHED = _counters("croupier_broker_published_total", "Events published on the broker, by backend.", "backend",
                      BROKERS, other=False)  # fmt: skip
PUBLISH_FAILURES = _counters("croupier_broker_publish_failures_total", "Events the broker did not take for the "
                             "other nodes, by backend.", "backend", BROKERS, other=False)  # fmt: skip
RECEIVED = _counter("croupier_broker_received_total", "Events received from other nodes through Redis.")
RECONNECTS = _counter("croupier_broker_reconnects_total", "Times the Redis pub/sub connection came back after a loss.")
DEPENDENCY_UP = Gauge("croupier_dependency_up", "1 when the dependency answers a probe, else 0, by dependency "
                      "(postgres; redis on nodes with REDIS_URL).", ["dependency"], registry=REGISTRY,
                      multiprocess_mode="livemin")  # fmt: skip

# ----------------------------------------------------------------------------------------- rounds

_ROUNDS = Counter("croupier_rounds_total", "Round events this node's drivers announced, by game and phase (voided: "
                  "settled without an outcome, bets refunded).", ["game", "phase"], registry=REGISTRY)  # fmt: skip
_LEASES = Gauge("croupier_driver_leases", "1 while this node drives the game (holds its lock and lease).", ["game"],
                registry=REGISTRY, multiprocess_mode="livesum")  # fmt: skip
_TAKEOVERS = Counter("croupier_driver_takeovers_total", "Leases this node took (a start or a takeover), by game.",
                     ["game"], registry=REGISTRY)  # fmt: skip


@dataclass(frozen=True, slots=True)
class GameCells:
    """What one game's driver counts."""

    phases: Family[Cell]
    leases: Cell
    takeovers: Cell


@cache
def game(name: str) -> GameCells:
    """The cells of game ``name`` (one of the node's games: made when its driver is built)."""
    cells = GameCells(Family(lb.ROUND_PHASES, Cell), Cell(), Cell())
    for phase, cell in cells.phases.items():
        LINKS.add(CounterLink(cell, _ROUNDS.labels(name, phase)))
    LINKS.add(GaugeLink(cells.leases, _LEASES.labels(name)))
    LINKS.add(CounterLink(cells.takeovers, _TAKEOVERS.labels(name)))
    return cells


# --------------------------------------------------------------------------------------- telegram

NOTIFICATIONS = _counters("croupier_notifications_total", "Outcomes of sendMessage for queued notifications "
                          "(throttled_429: Telegram's 429; forbidden_403: blocked).", "outcome",
                          lb.NOTIFICATION_OUTCOMES)  # fmt: skip
FLOOD_WAITS = _counters("croupier_flood_waits_total", "Messages the flood gate held back, by limit (bot: the bot's "
                        "rate or a 429 pause; chat: the chat's).", "scope", ("bot", "chat"), other=False)  # fmt: skip
NOTIFICATIONS_QUEUED = Gauge("croupier_notifications_queued", "Notifications queued or being sent (sampled).",
                             registry=REGISTRY, multiprocess_mode="livemax")  # fmt: skip

# ---------------------------------------------------------------------------------------- runtime

LOOP_LAG = Histogram("croupier_event_loop_lag_seconds", "How late the event loop ran a timer (sampled 4 times a "
                     "second).", registry=REGISTRY, buckets=LAG_BUCKETS)  # fmt: skip
NODE_INFO = Gauge("croupier_node_info", "1 per running node (with --workers, per worker), by node id.", ["node"],
                  registry=REGISTRY, multiprocess_mode="liveall")  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditMetrics:
    """The ledger-health metrics, made by the node that runs the incremental audit (absent elsewhere)."""

    ok: Gauge
    violations: Counter
    last_pass: Gauge
    checked: Counter
    duration: Gauge


@cache
def audit_metrics() -> AuditMetrics:
    """The ledger-health metrics, made on first use (by the node holding the audit lease)."""
    metrics = AuditMetrics(
        ok=Gauge("croupier_ledger_audit_ok", "1 when the latest incremental ledger audit found nothing wrong, else 0.",
                 registry=REGISTRY, multiprocess_mode="livemin"),
        violations=Counter("croupier_ledger_audit_violations_total", "Ledger invariant violations the incremental "
                           "audit found, by check.", ["check"], registry=REGISTRY),
        last_pass=Gauge("croupier_ledger_audit_last_pass_timestamp_seconds", "Unix time of the latest incremental "
                        "audit pass.", registry=REGISTRY, multiprocess_mode="livemax"),
        checked=Counter("croupier_ledger_audit_checked_transactions_total", "Ledger transactions the incremental "
                        "audit checked.", registry=REGISTRY),
        duration=Gauge("croupier_ledger_audit_pass_seconds", "How long the latest incremental audit pass took.",
                       registry=REGISTRY, multiprocess_mode="livemax"),
    )  # fmt: skip
    for check in lb.AUDIT_CHECKS:
        metrics.violations.labels(check)
    return metrics
