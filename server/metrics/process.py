"""Process CPU, memory and garbage-collector metrics of every worker, in multiprocess mode.

``prometheus_client``'s process and GC collectors read the process that answers the scrape: with
``--workers N`` that is one worker, chosen by the kernel. So in multiprocess mode each worker copies
its own figures into metrics of the same names every second (:class:`ProcessMirror`), and the
workers' files add up: ``process_cpu_seconds_total`` is the node's CPU (counters of a worker that
exited are kept, so it never goes back), ``process_resident_memory_bytes`` the memory of the
workers alive. In single-process mode the library's collectors serve these names directly.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Gauge
from prometheus_client.process_collector import ProcessCollector

from .definitions import REGISTRY


@dataclass(frozen=True, slots=True)
class _Mirror:
    cpu: Counter
    memory: Gauge
    virtual: Gauge
    fds: Gauge
    collections: Counter
    collected: Counter
    uncollectable: Counter


_GAUGES = {"process_resident_memory_bytes": "memory", "process_virtual_memory_bytes": "virtual",
           "process_open_fds": "fds"}  # fmt: skip


class ProcessMirror:
    """Copies this process's CPU, memory, descriptors and GC counts into multiprocess metrics."""

    def __init__(self) -> None:
        self._source = ProcessCollector(registry=None)
        self._metrics = _Mirror(
            cpu=Counter("process_cpu_seconds", "Total user and system CPU time spent in seconds (every worker).",
                        registry=REGISTRY),
            memory=Gauge("process_resident_memory_bytes", "Resident memory size in bytes (every worker alive).",
                         registry=REGISTRY, multiprocess_mode="livesum"),
            virtual=Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes (every worker alive).",
                          registry=REGISTRY, multiprocess_mode="livesum"),
            fds=Gauge("process_open_fds", "Number of open file descriptors (every worker alive).", registry=REGISTRY,
                      multiprocess_mode="livesum"),
            collections=Counter("python_gc_collections", "Number of times this generation was collected.",
                                ["generation"], registry=REGISTRY),
            collected=Counter("python_gc_objects_collected", "Objects collected during gc.", ["generation"],
                              registry=REGISTRY),
            uncollectable=Counter("python_gc_objects_uncollectable", "Uncollectable objects found during GC.",
                                  ["generation"], registry=REGISTRY),
        )  # fmt: skip
        self._cpu = 0.0
        self._gc = [(0, 0, 0)] * len(gc.get_stats())

    def flush(self) -> None:
        """Add what this process used since the last call; set its memory and descriptors."""
        for family in self._source.collect():
            for sample in family.samples:
                if sample.name == "process_cpu_seconds_total":
                    if sample.value > self._cpu:
                        self._metrics.cpu.inc(sample.value - self._cpu)
                        self._cpu = sample.value
                elif sample.name in _GAUGES:
                    getattr(self._metrics, _GAUGES[sample.name]).set(sample.value)
        for generation, stats in enumerate(gc.get_stats()):
            now = (stats["collections"], stats["collected"], stats["uncollectable"])
            before = self._gc[generation]
            label = str(generation)
            for counter, value, old in zip((self._metrics.collections, self._metrics.collected,
                                            self._metrics.uncollectable), now, before, strict=True):  # fmt: skip
                if value > old:
                    counter.labels(label).inc(value - old)
            self._gc[generation] = now


@cache
def process_mirror() -> ProcessMirror:
    """This process's mirror (multiprocess mode only: its metrics would clash with the library's collectors)."""
    return ProcessMirror()
