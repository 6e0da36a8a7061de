"""The node's metrics (Prometheus): definitions, hot-path cells, exposition, samplers, ledger health.

Instrumented modules import this package and count into its cells (``metrics.BETS.n += 1``);
it imports nothing of theirs (``tests/test_layering.py``). docs/operations.md lists every metric.

- :mod:`.tally`: the cells hot paths count into; :mod:`.labels`: the closed label sets;
- :mod:`.definitions`: every metric and its cells; :mod:`.flush`: cells into ``prometheus_client``;
- :mod:`.exposition`: ``GET /metrics``; :mod:`.multiprocess`: ``--workers N``; :mod:`.process`: their CPU and memory;
- :mod:`.looplag`, :mod:`.samplers`, :mod:`.ledgerhealth`: the event loop, shared state, the incremental audit;
- :mod:`.runtime`: what starts and stops with the node.
"""

from __future__ import annotations

from .definitions import (
    ACTION_SECONDS,
    AUTH,
    BET_SECONDS,
    BETS,
    CLOSES,
    CONNECTIONS,
    DEPOSIT_SECONDS,
    DROPPED,
    FLOOD_WAITS,
    FRAMES_IN,
    FRAMES_OUT,
    LEDGER_ERRORS,
    NOTIFICATIONS,
    OVERFLOWS,
    PUBLISH_FAILURES,
    PUBLISHED,
    READS,
    RECEIVED,
    RECONNECTS,
    REFUSED,
    REGISTRY,
    RELAY_SECONDS,
    SOCKETS_OPEN,
    SWEPT,
    game,
    group_commit,
)
from .exposition import METRICS_PATH, metrics_endpoint, metrics_routes, render
from .labels import notification_outcome
from .runtime import node_metrics

__all__ = [
    "ACTION_SECONDS",
    "AUTH",
    "BETS",
    "BET_SECONDS",
    "CLOSES",
    "CONNECTIONS",
    "DEPOSIT_SECONDS",
    "DROPPED",
    "FLOOD_WAITS",
    "FRAMES_IN",
    "FRAMES_OUT",
    "LEDGER_ERRORS",
    "METRICS_PATH",
    "NOTIFICATIONS",
    "OVERFLOWS",
    "PUBLISHED",
    "PUBLISH_FAILURES",
    "READS",
    "RECEIVED",
    "RECONNECTS",
    "REFUSED",
    "REGISTRY",
    "RELAY_SECONDS",
    "SOCKETS_OPEN",
    "SWEPT",
    "game",
    "group_commit",
    "metrics_endpoint",
    "metrics_routes",
    "node_metrics",
    "notification_outcome",
    "render",
]
