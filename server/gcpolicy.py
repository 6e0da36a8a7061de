"""Garbage-collector settings for a node holding thousands of long-lived sockets.

CPython's cyclic collector runs a young-generation pass every 700 net allocations and, every
ten of those, an older one; a full pass walks every tracked object. A node with 5,000 sockets
holds millions of long-lived objects (protocols, sessions, queues, parsers), and a connect
storm allocates fast: the collector walked that whole heap again and again. With these
settings a 5,000-socket storm took 2.5 s instead of 3.0 s, for the same memory per idle socket
(``loadtest/bench_connect.py``, docs/performance.md). Reference counting still frees almost
everything at once; only cycles wait longer.

:func:`freeze_startup` moves what exists once the node is up (imported modules, settings, pools)
out of the collector's sight for good (``gc.freeze``): those objects live until exit anyway.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""Net allocations between young-generation passes (CPython's default: 700)."""
OLDER_THRESHOLDS = (20, 10)
"""Young passes per middle-generation pass, and middle passes per full pass (defaults: 10, 10)."""


def tune_for_many_connections() -> None:
    """Make collections rarer (call once, before the server starts accepting)."""
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


def freeze_startup() -> None:
    """Exclude every object that exists now from future collections (call once the node is ready)."""
    gc.collect()
    gc.freeze()
