"""Admission: who may open a connection to this node, and for how long one may take to say who it is.

A connection costs the node a file descriptor and a protocol object from the moment it is
accepted, long before it proves anything. Without limits, silent or dribbling connections
(slowloris) and connect floods hold those until the process runs out. Three rules apply from
TCP accept on:

- **Handshake timeout** (``CROUPIER_HANDSHAKE_TIMEOUT``): a connection must complete its
  WebSocket upgrade (the server's ``websocket.accept``), or receive one plain HTTP request in
  full, within that many seconds of being accepted; else it is closed. Each further request
  on a keep-alive HTTP connection must arrive in full within the same time of its first byte
  (between requests, uvicorn's keep-alive timeout closes an idle connection).
- **Unauthenticated cap** (``CROUPIER_MAX_UNAUTHENTICATED``): a connection counts from accept
  until its session's ``auth`` succeeds (or it closes; a plain HTTP connection until its first
  request has arrived in full). Over the cap a new connection gets ``503`` and is closed at
  once, before its request is read.
- **Per-address rate** (``CROUPIER_IP_CONNECT_RATE`` / ``_BURST``): a token bucket per client
  address (an IPv6 client by its /64); over it a new connection gets ``429`` and is closed.
  The client address is the TCP peer, unless the peer is one of ``CROUPIER_TRUSTED_PROXIES``:
  then it is the right-most address of ``X-Forwarded-For`` that is not a trusted proxy, and
  the bucket is charged when the upgrade request's headers are in. Clients in
  ``CROUPIER_IP_CONNECT_EXEMPT`` (loopback by default) are not limited.

:class:`Admission` is the per-node bookkeeping, pure logic with an injectable clock;
:func:`admitting_protocol` makes the uvicorn HTTP protocol that applies it to every
connection; :class:`Ticket` is one connection's place among the unauthenticated ones, handed to
the WebSocket endpoint in ``scope["extensions"][ADMISSION]``. Per connection this costs a few
attribute updates, one small object and one ``call_later`` timer: no task.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.types import Message, Receive
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..metrics import REFUSED
from .wsprotocol import LeanWebSocketProtocol

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

ADMISSION = "croupier.admission"
"""The ASGI extension (in a WebSocket's ``scope["extensions"]``) holding its :class:`Ticket`."""

REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log lines about refused connections of one kind (a flood logs little)."""

_MAX_HOST_KEY = 64  # longest non-address client name kept as a bucket key (a misconfigured proxy's junk)


def _refusal(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nretry-after: 1\r\nconnection: close\r\n\r\n" + body)  # fmt: skip


BUSY_RESPONSE = _refusal(b"503 Service Unavailable", b"too many connections waiting to authenticate; retry\n")
"""What a connection over ``CROUPIER_MAX_UNAUTHENTICATED`` is sent before it is closed."""
RATE_LIMITED_RESPONSE = _refusal(b"429 Too Many Requests", b"too many new connections from your address; retry\n")
"""What a connection over its address's ``CROUPIER_IP_CONNECT_RATE`` is sent before it is closed."""


class Ticket:
    """One connection's place among the node's unauthenticated connections.

    It counts from :meth:`Admission.enter` until :meth:`authenticated` or :meth:`release`,
    whichever comes first (both are idempotent). Once its handshake is done, the WebSocket
    endpoint calls :meth:`claim` (which stops the handshake timer) and reads frames through
    :meth:`watch` (to learn when the session has authenticated), and calls :meth:`release` when
    the socket is done.
    """

    __slots__ = ("_admission", "_is_authenticated", "_receive", "_timer")

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission
        self._timer: asyncio.TimerHandle | None = None
        self._receive: Receive | None = None
        self._is_authenticated: Callable[[], bool] | None = None

    @property
    def counted(self) -> bool:
        """True while this connection counts as unauthenticated."""
        return self._admission is not None

    def hold(self, timer: asyncio.TimerHandle | None) -> None:
        """Keep the connection's handshake timer, for :meth:`claim` to stop."""
        self._timer = timer

    def claim(self) -> None:
        """The endpoint has the connection and its handshake is done: no handshake timeout any more
        (the session's auth timeout applies from here)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def authenticated(self) -> None:
        """The session authenticated: the connection no longer counts."""
        admission = self._admission
        if admission is not None:
            self._admission = None
            admission._unauthenticated -= 1
        self._is_authenticated = None

    def release(self) -> None:
        """The connection is done (closed, refused or handed over): it no longer counts."""
        self.claim()
        self.authenticated()

    def watch(self, receive: Receive, is_authenticated: Callable[[], bool]) -> Receive:
        """``receive`` that, each time it is called, first reports :meth:`authenticated` once
        ``is_authenticated()`` says so. Adds no coroutine: it returns ``receive()``'s awaitable."""
        self._receive = receive
        self._is_authenticated = is_authenticated
        return self._watched_receive

    def _watched_receive(self) -> Awaitable[Message]:
        check = self._is_authenticated
        if check is not None and check():
            self.authenticated()
        assert self._receive is not None, "watch() sets it"
        return self._receive()


class Admission:
    """A node's admission state: the unauthenticated count and the per-address token buckets.

    Pure bookkeeping (no I/O); ``clock`` is injectable so the buckets can be tested with a fake
    clock. Each bucket is kept as the single time at which it would be full again (GCRA). An
    address is tracked only while its bucket is not full (it connected within the last
    ``burst / rate`` seconds); once full again, it is forgotten at the next sweep (every
    ``max(1, burst / rate)`` seconds), so the map holds only addresses seen recently.
    """

    def __init__(
        self,
        *,
        max_unauthenticated: int,
        handshake_timeout: float,
        rate: float = 0.0,
        burst: int = 1,
        trusted_proxies: Iterable[str] = (),
        exempt: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_unauthenticated < 1 or handshake_timeout <= 0 or rate < 0 or burst < 1:
            raise ValueError("max_unauthenticated, handshake_timeout and burst must be positive, rate zero or more")
        self.max_unauthenticated = max_unauthenticated
        self.handshake_timeout = handshake_timeout
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._unauthenticated = 0
        self._interval = 1.0 / rate if rate > 0 else 0.0
        # Allowed while the bucket's "full again" time is at most this far ahead (a tiny margin: float sums).
        self._slack = (burst - 1) * self._interval + self._interval * 1e-6
        self._full_at: dict[str, float] = {}
        self._sweep_every = max(1.0, burst * self._interval)
        self._next_sweep = clock() + self._sweep_every
        self._proxies = tuple(ipaddress.ip_network(net, strict=False) for net in trusted_proxies)
        self._exempt = tuple(ipaddress.ip_network(net, strict=False) for net in exempt)
        self._key = functools.lru_cache(maxsize=4096)(self._compute_key)
        self._trusted = functools.lru_cache(maxsize=1024)(self._compute_trusted)
        self._refusals: dict[str, tuple[float, int]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> Admission:
        """The admission rules a node's ``settings`` configure."""
        return cls(
            max_unauthenticated=settings.max_unauthenticated,
            handshake_timeout=settings.handshake_timeout,
            rate=settings.ip_connect_rate,
            burst=settings.ip_connect_burst,
            trusted_proxies=settings.trusted_proxies,
            exempt=settings.ip_connect_exempt,
            clock=clock,
        )

    @property
    def unauthenticated(self) -> int:
        """Connections held now that have not authenticated yet."""
        return self._unauthenticated

    @property
    def tracked_addresses(self) -> int:
        """Client addresses whose bucket is not full (the others are not kept)."""
        return len(self._full_at)

    def enter(self) -> Ticket | None:
        """Count a new connection as unauthenticated; None (and nothing counted) when the node
        already holds ``max_unauthenticated`` of them."""
        if self._unauthenticated >= self.max_unauthenticated:
            return None
        self._unauthenticated += 1
        return Ticket(self)

    def allow(self, host: str) -> bool:
        """Take a token from the bucket of client ``host`` (an address); False if it has none.
        Always True with no rate configured or for an exempt client."""
        if not self._interval:
            return True
        key = self._key(host)
        if key is None:
            return True
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        full_at = self._full_at.get(key, now)
        if full_at < now:
            full_at = now
        if full_at - now > self._slack:
            return False
        self._full_at[key] = full_at + self._interval
        return True

    def is_trusted_proxy(self, host: str) -> bool:
        """True if the TCP peer ``host`` is one of the trusted proxies (its X-Forwarded-For counts)."""
        return bool(self._proxies) and self._trusted(host)

    def forwarded_client(self, peer: str, forwarded_for: Iterable[bytes | str]) -> str:
        """The client address of a request from ``peer`` with these ``X-Forwarded-For`` values (in
        header order): the right-most entry that is not a trusted proxy (every proxy appends the
        address it was connected from, so entries left of it may be forged by the client); the
        left-most if all are trusted; ``peer`` itself if ``peer`` is not a trusted proxy or no entry
        is given."""
        if not self.is_trusted_proxy(peer):
            return peer
        hosts: list[str] = []
        for value in forwarded_for:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            hosts.extend(host for host in (_host_of(item) for item in text.split(",")) if host)
        if not hosts:
            return peer
        for host in reversed(hosts):
            if not self.is_trusted_proxy(host):
                return host
        return hosts[0]

    def refused(self, reason: str) -> int:
        """Note one refused connection; return how many were refused for ``reason`` since the last
        time this returned non-zero, when a log line about them is due (at most every
        :data:`REFUSAL_LOG_INTERVAL` seconds), else 0."""
        now = self._clock()
        since, count = self._refusals.get(reason, (float("-inf"), 0))
        count += 1
        if now - since >= REFUSAL_LOG_INTERVAL:
            self._refusals[reason] = (now, 0)
            return count
        self._refusals[reason] = (since, count)
        return 0

    def _sweep(self, now: float) -> None:
        """Forget the buckets that are full again: they are the same as a new one."""
        full = [key for key, full_at in self._full_at.items() if full_at <= now]
        for key in full:
            del self._full_at[key]
        self._next_sweep = now + self._sweep_every

    def _compute_key(self, host: str) -> str | None:
        """The bucket of client ``host``: its address (an IPv6 one's /64 network: one host usually has
        a whole /64), or None if it is exempt."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host[:_MAX_HOST_KEY]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self._exempt):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)

    def _compute_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._proxies)


def _host_of(entry: str) -> str:
    """The address of one ``X-Forwarded-For`` entry, without a port: ``1.2.3.4:5``, ``[::1]:5``."""
    entry = entry.strip()
    if entry.startswith("["):
        end = entry.find("]")
        return entry[1:end] if end > 0 else entry
    if entry.count(":") == 1:
        return entry.split(":", 1)[0]
    return entry


class AdmittingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP protocol applying a node's :class:`Admission` to every connection.

    On accept: over the unauthenticated cap, ``503`` and close; over the peer's connection rate
    (unless the peer is a trusted proxy), ``429`` and close; neither reads the request. Otherwise a
    :class:`Ticket` counts the connection and a timer closes it if it has not, by the handshake
    timeout, either received one plain HTTP request in full (the ticket is released then) or
    been upgraded and accepted as a WebSocket (the endpoint claims the ticket). A request from a
    trusted proxy is charged to the ``X-Forwarded-For`` client's bucket when it asks to upgrade.

    Make one bound to a node's admission with :func:`admitting_protocol`.
    """

    admission: ClassVar[Admission]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ticket: Ticket | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._upgrading: bool | None = None  # the request's answer to _should_upgrade, once its headers are in

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        admission = self.admission
        ticket = admission.enter()
        if ticket is None:
            self._refuse(BUSY_RESPONSE, "over CROUPIER_MAX_UNAUTHENTICATED")
            return
        host = self.client[0] if self.client else None
        if host is not None and not admission.is_trusted_proxy(host) and not admission.allow(host):
            ticket.release()
            self._refuse(RATE_LIMITED_RESPONSE, "over CROUPIER_IP_CONNECT_RATE")
            return
        self._ticket = ticket
        self._deadline = self.loop.call_later(admission.handshake_timeout, self._handshake_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_deadline()
        if self._ticket is not None:
            self._ticket.release()
            self._ticket = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._upgrading = None
        # A further request on a keep-alive connection: it too has the handshake timeout to arrive.
        if self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.admission.handshake_timeout, self._handshake_expired)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            return  # a WebSocket upgrade: handle_websocket_upgrade takes it from here
        # A plain HTTP request arrived in full: it is the app's now (and uvicorn's keep-alive timeout after).
        self._stop_deadline()
        if self._ticket is not None:
            self._ticket.release()
            self._ticket = None

    def _should_upgrade(self) -> bool:
        """uvicorn's answer (the headers ask for a WebSocket), worked out once per request: uvicorn asks three
        times or more per upgrade request (headers complete, message complete, the parser's upgrade), each a
        walk of the headers in Python (about 6% of a connect storm's serving time, py-spy). It is first asked
        when the headers are complete, and they do not change after."""
        upgrading = self._upgrading
        if upgrading is None:
            upgrading = self._upgrading = super()._should_upgrade()
        return upgrading

    def handle_websocket_upgrade(self) -> None:
        admission = self.admission
        peer = self.client[0] if self.client else None
        if peer is not None and admission.is_trusted_proxy(peer):
            forwarded = [value for name, value in self.headers if name == b"x-forwarded-for"]
            if not admission.allow(admission.forwarded_client(peer, forwarded)):
                self._stop_deadline()
                if self._ticket is not None:
                    self._ticket.release()
                    self._ticket = None
                self._refuse(RATE_LIMITED_RESPONSE, "over CROUPIER_IP_CONNECT_RATE (X-Forwarded-For)")
                return
        if self._ticket is None:  # a keep-alive connection upgrading after plain requests: it counts again
            self._ticket = admission.enter()
            if self._ticket is None:
                self._stop_deadline()
                self._refuse(BUSY_RESPONSE, "over CROUPIER_MAX_UNAUTHENTICATED")
                return
        ticket = self._ticket
        self._upgrade()
        # From here the WebSocket protocol has the transport: this one gets no more callbacks but
        # the handshake timer's.
        scope = getattr(self.transport.get_protocol(), "scope", None)
        if not isinstance(scope, dict) or self.transport.is_closing():
            # The WebSocket protocol refused the handshake (and closes): nothing will claim the ticket.
            self._stop_deadline()
            ticket.release()
            self._ticket = None
            return
        scope.setdefault("extensions", {})[ADMISSION] = ticket
        # The timer keeps running until the endpoint accepts the socket and claims the ticket; if
        # nothing does (another path, a refused subprotocol), it closes the connection and releases it.
        ticket.hold(self._deadline)

    def _upgrade(self) -> None:
        """Hand the connection to the WebSocket protocol: with the request as parsed here when it can take it that
        way (:meth:`LeanWebSocketProtocol.handshake_parsed`), else uvicorn's way (the request written out again
        for the WebSocket protocol to parse)."""
        cls = self.ws_protocol_class
        method, headers = self.scope["method"], self.headers  # the scope's headers: this list
        lean = cls if isinstance(cls, type) and issubclass(cls, LeanWebSocketProtocol) else None
        key = None if lean is None else lean.parsed_handshake_key(self.config, method, self.url, headers)
        if lean is None or key is None:
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        protocol = lean(config=self.config, server_state=self.server_state, app_state=self.app_state, parsed=True)
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.handshake_parsed(self.url, headers, key)

    def _handshake_expired(self) -> None:
        self._deadline = None
        REFUSED["handshake_timeout"].n += 1
        if not self.transport.is_closing():
            self.transport.close()
        if self._ticket is not None:
            self._ticket.release()
            self._ticket = None

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, response: bytes, reason: str) -> None:
        """Answer ``response`` and close, without reading the request."""
        self.transport.write(response)
        self.transport.close()
        REFUSED["unauthenticated_cap" if response is BUSY_RESPONSE else "address_rate"].n += 1
        count = self.admission.refused(reason)
        if count:
            log.warning("refused %d connection(s) %s in the last %gs at most", count, reason, REFUSAL_LOG_INTERVAL)


def admitting_protocol(admission: Admission) -> type[AdmittingHttpToolsProtocol]:
    """An :class:`AdmittingHttpToolsProtocol` class bound to ``admission`` (uvicorn's ``http=``)."""
    return type("AdmittingHttpToolsProtocol", (AdmittingHttpToolsProtocol,), {"admission": admission})
