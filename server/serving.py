"""The uvicorn configuration of a node, in one place: ``croupier serve`` and the tests' in-process
server both build it here, so both run the same protocol classes (admission, the lean WebSocket)."""

from __future__ import annotations

import errno
import socket

import uvicorn
from starlette.types import ASGIApp

from .edge.admission import Admission, admitting_protocol
from .edge.wsprotocol import LeanWebSocketProtocol
from .settings import Settings


def uvicorn_config(
    app: ASGIApp,
    settings: Settings,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    admission: Admission | None = None,
) -> uvicorn.Config:
    """The uvicorn ``Config`` serving ``app`` for a node with ``settings`` on ``host``:``port``.

    HTTP is httptools behind :class:`server.edge.admission.AdmittingHttpToolsProtocol` (the
    handshake timeout, the unauthenticated cap, the per-address connection rate), bound to
    ``admission`` (default: a new one from ``settings``); WebSockets use
    :class:`server.edge.wsprotocol.LeanWebSocketProtocol`. ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are believed only from ``CROUPIER_TRUSTED_PROXIES`` (uvicorn's own
    default would trust loopback).
    """
    if admission is None:
        admission = Admission.from_settings(settings)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",  # both come with uvicorn[standard]; named so that a missing one fails loudly
        interface="asgi3",  # CroupierApp.__call__ returns a coroutine rather than being one: uvicorn cannot tell
        http=admitting_protocol(admission),  # uvicorn's httptools protocol, admitting connections
        ws=LeanWebSocketProtocol,
        ws_max_size=settings.max_frame_bytes,
        # permessage-deflate (CROUPIER_WS_COMPRESSION=deflate) cuts a crash player's bytes to 17.5% but costs the
        # node 1.85x the CPU per frame and 1.8x the memory per socket: off unless the operator turns it on
        # (docs/performance.md, "WebSocket compression"; its parameters are LeanWebSocketProtocol's).
        ws_per_message_deflate=settings.ws_compression == "deflate",
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        lifespan="on",
        log_level=log_level,
        log_config=None,  # uvicorn's own lines go through the root logger: server/logs.py formats them
        access_log=False,
        timeout_graceful_shutdown=10,
    )


LISTEN_BACKLOG = 2048
"""uvicorn's default backlog (it listens again with its own when it starts serving)."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (port 0: a free one), for ``croupier serve`` to bind
    before it starts anything: a taken port then stops the command before the node starts, rather than
    after it said it serves. ``SO_REUSEADDR`` as uvicorn sets it (a restart need not wait for
    ``TIME_WAIT``); never ``SO_REUSEPORT``, so a second node on the port is refused.

    Raises ``OSError`` whose ``strerror`` is one line naming the address and what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.EADDRINUSE:
            reason += " (another process listens there: stop it, or choose another port: --port, or make run PORT=)"
        raise OSError(exc.errno, f"cannot listen on {address}: {reason}") from None
    return sock
