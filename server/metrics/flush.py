"""Moving what the hot paths counted (:mod:`.tally`) into the ``prometheus_client`` metrics.

A :class:`Link` pairs a cell with the ``prometheus_client`` child it feeds. :meth:`Links.flush`
adds each counter's and histogram's increase since the last flush, and sets each gauge: the
exposition calls it before every scrape, and in multiprocess mode a task calls it every second as
well (the other workers' scrapes read this worker's memory-mapped files, not its cells). It runs on
the event loop's thread, like the hot paths, so a cell never changes under it.
"""

from __future__ import annotations

from typing import Any, Protocol

from .tally import Cell, Timing


class Link(Protocol):
    def flush(self) -> None:
        """Bring the ``prometheus_client`` child up to date with the cell."""
        ...


class CounterLink:
    """A :class:`Cell` counting up, feeding a ``Counter`` child."""

    __slots__ = ("_cell", "_child", "_flushed")

    def __init__(self, cell: Cell, child: Any) -> None:
        self._cell, self._child, self._flushed = cell, child, 0

    def flush(self) -> None:
        value = self._cell.n
        if value > self._flushed:
            self._child.inc(value - self._flushed)
        self._flushed = value


class GaugeLink:
    """A :class:`Cell` holding a level, feeding a ``Gauge`` child."""

    __slots__ = ("_cell", "_child")

    def __init__(self, cell: Cell, child: Any) -> None:
        self._cell, self._child = cell, child

    def flush(self) -> None:
        self._child.set(self._cell.n)


class TimingLink:
    """A :class:`Timing` feeding a ``Histogram`` child with the same bounds.

    ``prometheus_client`` observes one value at a time; a flush adds whole bucket counts, so it
    writes the child's bucket and sum values (``_buckets``, ``_sum``: the same attributes for
    years; ``tests/metrics/test_tally.py`` checks the exposition equals what ``observe`` gives).
    """

    __slots__ = ("_child", "_counts", "_sum", "_timing")

    def __init__(self, timing: Timing, child: Any) -> None:
        bounds = [float(b) for b in child._upper_bounds[:-1]]
        if bounds != list(timing.bounds):
            raise ValueError(f"the histogram's buckets {bounds} are not the timing's {list(timing.bounds)}")
        self._timing, self._child = timing, child
        self._counts = [0] * len(timing.counts)
        self._sum = 0.0

    def flush(self) -> None:
        timing, buckets = self._timing, self._child._buckets
        for i, count in enumerate(timing.counts):
            if count != self._counts[i]:
                buckets[i].inc(count - self._counts[i])
                self._counts[i] = count
        if timing.sum != self._sum:
            self._child._sum.inc(timing.sum - self._sum)
            self._sum = timing.sum


class Links:
    """Every link of the process, flushed together."""

    def __init__(self) -> None:
        self._links: list[Link] = []

    def add(self, link: Link) -> None:
        self._links.append(link)

    def flush(self) -> None:
        """Bring every ``prometheus_client`` metric up to date with its cells."""
        for link in self._links:
            link.flush()
