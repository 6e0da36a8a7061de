"""The Starlette application: routes, and a lifespan that owns the node's resources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from .edge.ws import websocket_endpoint
from .node import Node
from .settings import Settings


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


def create_app(settings: Settings, *, on_ready: Callable[[Node], None] | None = None) -> Starlette:
    """Build the app for ``settings``. Resources open at lifespan start; ``on_ready`` runs after."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Node.open(settings) as node:
            app.state.node = node
            if on_ready is not None:
                on_ready(node)
            yield

    routes = [
        WebSocketRoute("/ws", websocket_endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
