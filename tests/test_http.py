"""GET /healthz and /readyz on a running node."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import RunningNode, StartNode
from tests.services import EmbeddedRedis


async def test_healthz_and_readyz(node_server: RunningNode) -> None:
    async with httpx.AsyncClient(base_url=node_server.url) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"postgres": "ok", "broker": "ok"}}


async def test_readyz_reports_a_broker_that_stops_answering(start_node: StartNode, tmp_path: object) -> None:
    redis = EmbeddedRedis()
    redis.start()
    try:
        async with start_node(redis_url=redis.url) as node, httpx.AsyncClient(base_url=node.url) as client:
            assert (await client.get("/readyz")).status_code == 200
            redis.stop()
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert body["checks"]["postgres"] == "ok"
            assert body["checks"]["broker"].startswith("unavailable")
            assert (await client.get("/healthz")).status_code == 200
            redis.start()
            for _ in range(50):  # the client reconnects by itself; a stale pooled connection may fail once
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/readyz")).status_code == 200
    finally:
        redis.stop()
