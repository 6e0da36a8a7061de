"""``GET /metrics``: the node's metrics in Prometheus's text format, on the main port or on its own.

:func:`render` flushes the cells the hot paths counted (:mod:`.flush`) and serializes: the
node's registry, or in multiprocess mode every worker's files (:mod:`.multiprocess`).
:func:`metrics_endpoint` serves it as a Starlette route; :class:`MetricsListener` on
``CROUPIER_METRICS_PORT``, a port of its own (bound with ``SO_REUSEPORT``, so the workers of
``--workers N`` share it as they share the main port). Both run on the event loop, like the hot
paths: nothing counts while a scrape reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .definitions import LINKS, MULTIPROCESS, REGISTRY
from .process import process_mirror

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


def flush() -> None:
    """Bring the ``prometheus_client`` metrics up to date with this process's cells (and, in multiprocess
    mode, its process figures)."""
    LINKS.flush()
    if MULTIPROCESS:
        process_mirror().flush()


def render() -> bytes:
    """The node's metrics now, in the text exposition format (``CONTENT_TYPE_LATEST``)."""
    flush()
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, os.environ["PROMETHEUS_MULTIPROC_DIR"])  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics_endpoint(request: Request) -> Response:
    """The Starlette route of ``GET /metrics``."""
    return Response(render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class RouteSettings(Protocol):
    @property
    def metrics(self) -> bool: ...

    @property
    def metrics_port(self) -> int | None: ...


def metrics_routes(settings: RouteSettings) -> list[Route]:
    """``GET /metrics`` for the main port: none with ``CROUPIER_METRICS=0`` or a ``CROUPIER_METRICS_PORT``."""
    if not settings.metrics or settings.metrics_port is not None:
        return []
    return [Route(METRICS_PATH, metrics_endpoint)]


class MetricsListener:
    """``GET /metrics`` on a port of its own: a minimal HTTP/1.1 responder (one request per connection)."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port, reuse_port=True)
        log.info("metrics on http://%s:%d%s", self._host, self.port, METRICS_PATH)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, body, kind = b"405 Method Not Allowed", b"GET only\n", b"text/plain"
            elif path != METRICS_PATH.encode():
                status, body, kind = b"404 Not Found", b"metrics are at /metrics\n", b"text/plain"
            else:
                status, body, kind = b"200 OK", render(), CONTENT_TYPE_LATEST.encode()
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                         + (body if method != b"HEAD" else b""))  # fmt: skip
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
