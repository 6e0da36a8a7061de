"""The wall clock as the wire and the rounds count it: milliseconds since the Unix epoch.

One definition for every package (sessions stamp ``server_time`` with it, the round engine
times rounds with it and hands it to games as ``RoundContext.now_ms``), so they never disagree
on units or rounding. Tests that need another clock inject a callable of the same shape.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch, truncated (``time.time_ns() // 1_000_000``)."""
    return time.time_ns() // 1_000_000
