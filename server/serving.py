"""The uvicorn configuration of a node, in one place: ``croupier serve`` and the tests' in-process
server both build it here, so both run the same protocol classes (admission, the lean WebSocket)."""

from __future__ import annotations

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
        http=admitting_protocol(admission),  # uvicorn's httptools protocol, admitting connections
        ws=LeanWebSocketProtocol,
        ws_max_size=settings.max_frame_bytes,
        # Frames here are small JSON/MessagePack maps: permessage-deflate costs more CPU than it saves
        # bandwidth (16% of the server's CPU in the bet benchmark's profile, see docs/performance.md).
        ws_per_message_deflate=False,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
