"""The per-user record of which event offsets a node has delivered (exactly once, gaps noticed)."""

from __future__ import annotations

from server.edge.feeds import MAX_PENDING, _Seen


def seen(floor: int = 0) -> _Seen:
    return _Seen(floor, 100, 0.0)


def test_in_order_offsets_are_new_once_and_keep_no_set() -> None:
    record = seen(5)
    assert [record.first_time(offset) for offset in (6, 7, 7, 5, 8)] == [True, True, False, False, True]
    assert record.floor == 8 and record.above is None and not record.gap


def test_a_gap_is_noticed_until_it_fills_and_nothing_is_new_twice() -> None:
    record = seen(0)
    assert record.first_time(1) and record.first_time(3) and record.first_time(4)
    assert record.gap and record.floor == 1
    assert not record.first_time(3)
    assert record.first_time(2)  # the gap fills: the floor moves past everything seen
    assert record.floor == 4 and not record.gap and record.above is None
    assert not record.first_time(2) and record.first_time(5)


def test_a_gap_that_never_fills_is_given_up_after_max_pending_offsets() -> None:
    record = seen(0)
    for offset in range(2, MAX_PENDING + 3):  # offset 1 never comes
        assert record.first_time(offset)
    assert record.floor == 2 and record.gap  # the oldest seen becomes the floor, the rest stay above it
    assert not record.first_time(1)
