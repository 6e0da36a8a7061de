"""Hot-path counting cells: a plain integer (or a few) per label set, read by the exposition.

A ``prometheus_client`` counter takes a lock per increment: 0.54 µs a ``Counter.inc`` and 1.2 µs
a ``Histogram.observe`` on the team's 2-core box (3.5x that in multiprocess mode, where each
write goes to a memory-mapped file). A bet costs the node about 55 µs of CPU and touches five
metrics (a frame in, a frame out, its latency, its push, its batch): 5-6% of the node's CPU with
``prometheus_client`` on the hot path, against a budget of 3%. So hot paths add to these cells
instead (``cell.n += 1``: 0.04 µs, or 0.15 µs for an observation) and :mod:`.flush` moves what
they gathered into the ``prometheus_client`` metrics before each scrape (and every second in
multiprocess mode). Only the event loop's thread writes them; the flush reads them.

Cells are made once, at import or when their owner is built (one per known label value):
nothing is allocated per frame, and a label value no one listed is counted under ``other``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

OTHER = "other"
"""The label value of everything a family does not list (unknown message types, codes ...)."""


class Cell:
    """One counter or level: hot paths do ``cell.n += k`` (a gauge may go down: ``cell.n -= 1``)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __repr__(self) -> str:
        return f"Cell({self.n})"


class Timing:
    """The observations of a histogram: a count per bucket (``le`` each of ``bounds``, then +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(bounds) or not bounds:
            raise ValueError("histogram bounds must be given in increasing order")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is ``>=`` it (Prometheus's ``le``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


C = TypeVar("C", Cell, Timing)


class Family(Generic[C]):
    """The cells of one metric, one per known label value, plus :data:`OTHER` for anything else.

    ``of(key)`` is the hot path's lookup: a key may be the label value itself or any alias given
    to :meth:`alias` (a message class, a close code as an int ...); an unknown key gets the
    ``other`` cell, so a client cannot make a label value up.
    """

    __slots__ = ("_by_key", "_cells", "_other")

    def __init__(self, labels: Iterable[str], make: Callable[[], C], *, other: bool = True) -> None:
        self._cells: dict[str, C] = {label: make() for label in labels}
        if other:
            self._cells.setdefault(OTHER, make())
        self._other: C | None = self._cells.get(OTHER)
        self._by_key: dict[Hashable, C] = dict(self._cells.items())

    def alias(self, key: Hashable, label: str) -> None:
        """Let ``of(key)`` find the cell of ``label`` (which must be one of the family's labels)."""
        self._by_key[key] = self._cells[label]

    def of(self, key: Hashable) -> C:
        """The cell of ``key`` (a label value or an alias); ``other`` when unknown. Raises ``KeyError``
        for an unknown key only in a family made with ``other=False``."""
        cell: C | None = self._by_key.get(key, self._other)
        if cell is None:
            raise KeyError(key)
        return cell

    def __getitem__(self, label: str) -> C:
        return self._cells[label]

    def items(self) -> Iterator[tuple[str, C]]:
        return iter(self._cells.items())

    @property
    def labels(self) -> Mapping[str, C]:
        return self._cells
