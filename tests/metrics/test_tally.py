"""The hot-path cells and their flush into ``prometheus_client`` (no I/O)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from server.metrics.flush import CounterLink, GaugeLink, Links, TimingLink
from server.metrics.tally import OTHER, Cell, Family, Timing


def test_a_family_counts_unknown_keys_as_other_and_finds_aliases() -> None:
    family = Family(("bet", "ping"), Cell)
    family.alias(int, "bet")
    family.of("bet").n += 1
    family.of(int).n += 2
    family.of("x-made-up").n += 1
    family.of(None).n += 1
    assert {label: cell.n for label, cell in family.items()} == {"bet": 3, "ping": 0, OTHER: 2}
    closed = Family(("json",), Cell, other=False)
    with pytest.raises(KeyError):
        closed.of("xml")
    assert set(closed.labels) == {"json"}


@pytest.mark.parametrize(
    ("value", "bucket"),
    [(0.0, 0), (0.001, 0), (0.0011, 1), (0.005, 1), (0.0051, 2), (1.0, 2), (1.5, 3)],
)
def test_a_timing_counts_a_value_in_the_first_bucket_whose_bound_is_not_below_it(value: float, bucket: int) -> None:
    timing = Timing((0.001, 0.005, 1.0))
    timing.observe(value)
    assert timing.counts == [int(i == bucket) for i in range(4)]
    assert timing.sum == value and timing.count == 1


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError):
        Timing((1.0, 0.5))


def test_a_flushed_timing_exposes_what_observing_each_value_would() -> None:
    values = [0.0004, 0.003, 0.003, 0.02, 0.7, 3.0, 12.0]
    bounds = (0.001, 0.005, 0.05, 1.0, 5.0)
    direct_registry, flushed_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["type"], registry=direct_registry, buckets=bounds).labels("bet")
    for value in values[:3]:
        direct.observe(value)
    timing = Timing(bounds)
    link = TimingLink(timing, Histogram("h", "h", ["type"], registry=flushed_registry, buckets=bounds).labels("bet"))
    for value in values[:3]:
        timing.observe(value)
    link.flush()
    link.flush()  # nothing new: nothing added twice
    assert generate_latest(flushed_registry) == generate_latest(direct_registry)
    for value in values[3:]:
        direct.observe(value)
        timing.observe(value)
    link.flush()
    assert generate_latest(flushed_registry) == generate_latest(direct_registry)


def test_a_timing_link_refuses_other_buckets() -> None:
    child = Histogram("h", "h", registry=CollectorRegistry(), buckets=(1.0, 2.0))
    with pytest.raises(ValueError):
        TimingLink(Timing((1.0, 3.0)), child)


def test_counter_and_gauge_links_add_increases_and_set_levels() -> None:
    registry = CollectorRegistry()
    counted, level = Cell(), Cell()
    links = Links()
    counter = Counter("c", "c", registry=registry)
    gauge = Gauge("g", "g", registry=registry)
    links.add(CounterLink(counted, counter))
    links.add(GaugeLink(level, gauge))
    counted.n, level.n = 5, 3
    links.flush()
    counted.n += 2
    level.n -= 3
    links.flush()
    links.flush()
    assert registry.get_sample_value("c_total") == 7
    assert registry.get_sample_value("g") == 0
