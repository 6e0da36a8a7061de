"""Multiprocess mode for ``croupier serve --workers N``: the workers' metrics in one directory.

The supervisor (``server/workers.py``) gives every worker ``PROMETHEUS_MULTIPROC_DIR``: the
operator's, when set, else a fresh temporary directory it removes at the end. Each worker's
``prometheus_client`` then keeps its values in memory-mapped files there, and whichever worker
answers ``/metrics`` (the kernel spreads requests over them, as it does sockets) reads every
worker's files and reports the node: counters and histograms summed over the workers (a worker
that exited still counts, so they never go back), gauges as each says (:mod:`.definitions`). When
a worker exits, the supervisor marks it dead: its gauges leave the sums.

Chosen over one metrics port per worker: a node stays one scrape target (one port per pod in
Kubernetes, no per-worker relabelling) and its counters are the node's. The cost is in the
exposition (reading N files per scrape), not on the hot paths, which count into plain cells
(:mod:`.tally`) flushed every second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "croupier-metrics-"
"""Temporary directories are named ``croupier-metrics-<supervisor pid>-<random>``."""


def metrics_enabled(env: Mapping[str, str]) -> bool:
    """``CROUPIER_METRICS`` is not ``0``/``off``/``false``/``no`` (the settings check its value)."""
    return env.get("CROUPIER_METRICS", "").strip().lower() not in ("0", "off", "false", "no")


class MultiprocessDir:
    """The directory the workers of one supervisor write their metrics to, and its upkeep."""

    def __init__(self, env: Mapping[str, str]) -> None:
        given = env.get(ENV) or None
        self._owned = given is None
        if given is None:
            _remove_orphans()
        self.path = Path(given) if given is not None else Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob("*.db"):  # a previous run's workers: their pids mean nothing now
            stale.unlink()

    def env(self) -> dict[str, str]:
        """What to add to a worker's environment."""
        return {ENV: str(self.path)}

    def worker_exited(self, pid: int) -> None:
        """A worker is gone: its live gauges leave the node's figures (its counters stay)."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Remove the directory if this supervisor made it."""
        if self._owned:
            shutil.rmtree(self.path, ignore_errors=True)


def _remove_orphans() -> None:
    """Remove the directories of supervisors that died without removing theirs (killed)."""
    for path in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        pid = path.name.removeprefix(PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_metrics_dir(env: Mapping[str, str], workers: int) -> MultiprocessDir | None:
    """The directory for ``workers`` worker processes started with ``env``; None with one worker or
    with metrics off."""
    if workers < 2 or not metrics_enabled(env):
        return None
    return MultiprocessDir(env)


__all__ = ["ENV", "MultiprocessDir", "metrics_enabled", "worker_metrics_dir"]
