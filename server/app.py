"""The Starlette application: routes, and a lifespan that owns the node's resources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .backoffice import admin_routes, back_office
from .devapp import webapp_routes
from .edge.ws import serve_socket
from .metrics import metrics_routes, node_metrics
from .node import Node
from .settings import Settings
from .telegram import WEBHOOK_PATH


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process is up and serving HTTP."""
    return JSONResponse({"status": "ok", "node": request.app.state.node.settings.node_id})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when PostgreSQL and the broker answer, else 503 naming what failed; 503
    ``draining`` once the node is stopping."""
    node: Node = request.app.state.node
    if node.draining:
        return JSONResponse({"status": "draining", "checks": {}}, 503)
    checks = await node.check_ready()
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503)


async def telegram_webhook(request: Request) -> Response:
    """The bot's webhook (``server.telegram.webhook``); 404 on a node without ``CROUPIER_WEBHOOK_SECRET``
    (or without a bot token of its own): it takes no updates."""
    node: Node = request.app.state.node
    if node.webhook is None:
        return JSONResponse({"error": "no webhook on this node (CROUPIER_WEBHOOK_SECRET is not set)"}, 404)
    return await node.webhook.handle(request)


WS_PATH = "/ws"


class CroupierApp(Starlette):
    """The Starlette app, with ``/ws`` sockets handed straight to :func:`serve_socket`.

    A socket lives for hours: every coroutine between the server and the endpoint stays
    suspended for as long as it does. Starlette's middleware stack and router are seven of
    them, about 3 KiB per idle socket, and do nothing for a WebSocket that the endpoint does
    not do itself. HTTP (health, readiness) and the lifespan take the usual routes.
    """

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        # Not a coroutine function itself: it returns the endpoint's coroutine, so that a socket's task does not
        # keep one more suspended frame (about 430 bytes) for its whole life. uvicorn is told the interface
        # (asgi3, server/serving.py) since it cannot tell it from this signature.
        if scope["type"] == "websocket" and scope["path"] == WS_PATH:
            node: Node = self.state.node  # typed: mypy checks that a Node provides every SessionServices member
            return serve_socket(scope, receive, send, node)
        return super().__call__(scope, receive, send)


def create_app(settings: Settings, *, on_ready: Callable[[Node], None] | None = None) -> Starlette:
    """Build the app for ``settings``. Resources open at lifespan start; ``on_ready`` runs after."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Node.open(settings) as node, node_metrics(settings, node.pool, node.broker.ping), \
                back_office(node) as office:  # fmt: skip
            app.state.node = node
            app.state.office = office  # every node obeys the back office's control channel, API or not
            if on_ready is not None:
                on_ready(node)
            yield

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route(WEBHOOK_PATH, telegram_webhook, methods=["POST"]),
        *webapp_routes(settings),  # the demo Mini App at /app, on CROUPIER_DEV nodes only
        *metrics_routes(settings),  # GET /metrics, unless CROUPIER_METRICS=0 or CROUPIER_METRICS_PORT is set
        *admin_routes(settings.admin_keys),  # /admin/api/..., when CROUPIER_ADMIN_KEYS is set (else 404)
    ]
    return CroupierApp(routes=routes, lifespan=lifespan)
