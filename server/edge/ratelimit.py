"""Per-socket request rate limit: a token bucket, and a strike count for clients that ignore it."""

from __future__ import annotations

from collections.abc import Callable


class RateLimiter:
    """Allows ``rate`` requests a second with bursts of ``burst``.

    :meth:`allow` spends a token or says no; a refused request is a strike, and more than
    ``max_strikes`` refusals within ``window`` seconds mean the client ignores ``rate_limited``
    (:attr:`exhausted`): the socket is then closed with 4429.
    """

    __slots__ = ("_burst", "_clock", "_last", "_max_strikes", "_rate", "_strikes", "_tokens", "_window")

    def __init__(self, rate: float, burst: int, *, max_strikes: int = 20, window: float = 10.0,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._max_strikes = max_strikes
        self._window = window
        self._strikes: list[float] = []

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self._strikes = [t for t in self._strikes if t > now - self._window]
        self._strikes.append(now)
        return False

    @property
    def exhausted(self) -> bool:
        return len(self._strikes) > self._max_strikes
