"""Limits per user, over all their sockets and every node: how many sockets, how many requests.

- Sockets: a user holds at most ``max_sockets`` (one initData could otherwise open thousands, and
  every push would go to each). The newest socket wins: when one more authenticates, the oldest
  is closed with 4409 (replaced), on whichever node it is: the node holding it is told on its
  own channel ``sockets:<node id>``.
- Requests: a token bucket per user (``rate`` a second, bursts of ``burst``) shared by all of the
  user's sockets on all nodes, on top of each socket's own limit. A node takes tokens from the
  shared bucket a handful at a time (a lease, valid for :data:`LEASE_SECONDS`), so a user costs
  one Redis round trip per :attr:`UserLimits.lease_size` requests (or per lease, when slower), and
  an idle lease expires instead of hoarding tokens.

When the shared backend does not answer, both limits fall back to what this node sees alone:
an honest player never loses a request because Redis is away.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson

from protocol import CloseCode

from ..broker import Broker, Subscription
from ..broker.quota import UserQuota

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
"""How long tokens taken from the shared bucket may be spent on this node. Long enough that a player making
a request or two a round costs one Redis round trip per ``lease_size`` requests too, not one per request
(the capacity check found this script two thirds of Redis's time with a 1 s lease: docs/capacity.md);
short enough that tokens a node took and did not spend go back. Leases taken and not yet spent let a user
exceed the rate by at most ``lease_size`` per node holding one of their sockets (at most ``max_sockets``
nodes, each lease taken from the bucket: 5 x 40 tokens against a burst of 400 with the defaults)."""

CloseSocket = Callable[[CloseCode, str], None]
"""Closes one socket with a code and reason."""


class UserLimits:
    """This node's side of the per-user limits. Open with :meth:`start`, stop with :meth:`close`."""

    def __init__(
        self,
        quota: UserQuota,
        broker: Broker,
        node_id: str,
        *,
        max_sockets: int,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quota = quota
        self._broker = broker
        self._node_id = node_id
        self._max_sockets = max_sockets
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self.lease_size = max(1, min(burst, int(rate / 10)))
        """Tokens taken from the shared bucket at once."""
        self._sockets: dict[int, OrderedDict[str, CloseSocket]] = {}
        self._leases: dict[int, tuple[int, float]] = {}  # user -> (tokens left, expiry)
        self._subscription: Subscription | None = None
        self._degraded_since = 0.0
        self._barred: dict[int, tuple[float, CloseCode, str]] = {}  # user -> (until, code, reason): see close_user

    async def start(self) -> None:
        """Take requests from other nodes to close sockets held here."""
        self._subscription = await self._broker.subscribe(f"sockets:{self._node_id}", self._on_replace)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
        await self._quota.close()

    # ------------------------------------------------------------------ sockets

    async def admit(self, user_id: int, session_id: str, close: CloseSocket) -> None:
        """A socket of the user authenticated: record it and close the oldest sockets past the cap."""
        barred = self._barred.get(user_id)
        if barred is not None:
            if barred[0] > self._clock():
                close(barred[1], barred[2])
                return
            del self._barred[user_id]
        here = self._sockets.setdefault(user_id, OrderedDict())
        here[session_id] = close
        try:
            evicted = await self._quota.add_socket(user_id, f"{self._node_id}|{session_id}", self._max_sockets)
        except Exception as exc:
            self._degraded("socket count", exc)
            evicted = [f"{self._node_id}|{sid}" for sid in list(here)[: max(0, len(here) - self._max_sockets)]]
        for member in evicted:
            node, _, sid = member.partition("|")
            if node == self._node_id:
                self._replace(user_id, sid)
            else:
                payload = orjson.dumps({"user": user_id, "session": sid})
                try:
                    await self._broker.publish(f"sockets:{node}", payload)
                except Exception as exc:  # that node closes it when it hears, or it stays until it closes
                    log.warning("could not ask node %s to close an old socket of user %d: %s", node, user_id, exc)

    async def release(self, user_id: int, session_id: str) -> None:
        """A socket of the user closed."""
        here = self._sockets.get(user_id)
        if here is not None:
            here.pop(session_id, None)
            if not here:
                del self._sockets[user_id]
                self._leases.pop(user_id, None)
        try:
            await self._quota.remove_socket(user_id, f"{self._node_id}|{session_id}")
        except Exception as exc:
            self._degraded("socket count", exc)

    def close_user(self, user_id: int, code: CloseCode, reason: str, *, hold: float = 0.0) -> int:
        """Close every socket ``user_id`` holds on this node with ``code`` (a blocked account: 4403); for
        ``hold`` seconds after, a socket of the user admitted here is closed the same way at once: one whose
        ``auth`` passed its checks just before the caller's decision. Returns how many sockets it closed."""
        if hold > 0:
            self._barred = {user: bar for user, bar in self._barred.items() if bar[0] > self._clock()}
            self._barred[user_id] = (self._clock() + hold, code, reason)
        here = self._sockets.get(user_id)
        closes = [] if here is None else list(here.values())
        for close in closes:
            close(code, reason)
        return len(closes)

    def lift(self, user_id: int) -> None:
        """End a ``hold`` of :meth:`close_user` at once: the user's sockets are admitted again."""
        self._barred.pop(user_id, None)

    def counts(self) -> tuple[int, int]:
        """Users with a socket on this node, and their sockets."""
        return len(self._sockets), sum(len(here) for here in self._sockets.values())

    def _on_replace(self, channel: str, payload: bytes) -> None:
        request = orjson.loads(payload)
        self._replace(int(request["user"]), str(request["session"]))

    def _replace(self, user_id: int, session_id: str) -> None:
        here = self._sockets.get(user_id)
        close = None if here is None else here.pop(session_id, None)
        if close is not None:
            log.info("closing socket %s of user %d: more than %d sockets", session_id, user_id, self._max_sockets)
            close(CloseCode.REPLACED, "replaced by a newer connection of this user")

    # ------------------------------------------------------------------ requests

    async def allow(self, user_id: int) -> bool:
        """Spend one of the user's request tokens; False when the user is over the rate."""
        now = self._clock()
        tokens, expiry = self._leases.get(user_id, (0, 0.0))
        if tokens > 0 and expiry > now:
            self._leases[user_id] = (tokens - 1, expiry)
            return True
        try:
            granted = await self._quota.take_tokens(user_id, self.lease_size, self._rate, self._burst)
        except Exception as exc:
            self._degraded("request rate", exc)
            return True  # the socket's own limit still holds
        if granted == 0:
            return False
        self._leases[user_id] = (granted - 1, now + LEASE_SECONDS)
        return True

    def _degraded(self, what: str, exc: Exception) -> None:
        now = self._clock()
        if now - self._degraded_since > 10.0:  # one line per 10 s, not one per request
            self._degraded_since = now
            log.warning("per-user %s not shared with other nodes (quota store unavailable: %s)", what, exc)
