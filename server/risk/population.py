""" "Far above the population": the rule the velocity detectors share.

A user's count (their busiest minute's bets, their busiest hour's deposits) is compared with the *other*
users' counts (so a bot cannot raise the bar it is measured against), and is far above them when all three
hold:

- it is above the others' 99th percentile (nearest rank): at most about 1% of users can ever be flagged, so
  a habit many players share (an auto-bet feature used by 5% of them) is not flagged, only the extremes
  beyond it. Below 100 users the 99th percentile is the others' largest count: the user must beat everyone;
- it is at least ``multiple`` times the others' median;
- it is at least ``floor``: in a small or quiet population (ten users, each betting a few times) the
  percentile and the median are tiny, and without a floor the busiest honest player would stand out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FarAbove:
    """The thresholds of the rule (see the module)."""

    floor: int
    multiple: float = 10.0
    percentile: float = 0.99


@dataclass(frozen=True, slots=True)
class Outlier:
    """A user's count beside the population's figures it was compared with."""

    user_id: int
    count: int
    percentile_of_others: int
    median_of_others: float
    users: int
    """Users in the population, this one included."""


def nearest_rank(ordered: list[int], fraction: float) -> int:
    """The nearest-rank percentile of ``ordered`` (ascending, not empty): its ``ceil(fraction * n)``-th value."""
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


def median(ordered: list[int]) -> float:
    """The median of ``ordered`` (ascending, not empty)."""
    middle = len(ordered) // 2
    return float(ordered[middle]) if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def far_above(counts: Mapping[int, int], rule: FarAbove) -> list[Outlier]:
    """The users whose count is far above the others' (see the module), highest first."""
    if len(counts) < 2:
        return []  # no population to be far above
    ordered = sorted(counts.values())
    found: list[Outlier] = []
    for user_id, count in counts.items():
        if count < rule.floor or count <= ordered[0]:
            continue  # most users: below the floor, or the least busy
        others = list(ordered)
        others.remove(count)  # one copy of theirs: the others
        of_others, others_median = nearest_rank(others, rule.percentile), median(others)
        if count > of_others and count >= rule.multiple * others_median:
            found.append(Outlier(user_id, count, of_others, others_median, len(counts)))
    return sorted(found, key=lambda outlier: (-outlier.count, outlier.user_id))
