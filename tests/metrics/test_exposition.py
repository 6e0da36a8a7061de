"""The metrics listener of ``CROUPIER_METRICS_PORT``, in process: the exposition on /metrics, nothing else."""

from __future__ import annotations

import httpx

from server.metrics import FRAMES_IN
from server.metrics.exposition import MetricsListener, render
from tests.metrics.scrape import Scrape


async def test_the_listener_serves_the_exposition_and_refuses_the_rest() -> None:
    listener = MetricsListener("127.0.0.1", 0)
    await listener.start()
    try:
        before = Scrape.parse(render().decode()).value("croupier_frames_in_total", type="ping")
        FRAMES_IN.of("ping").n += 2
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as client:
            response = await client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=")
            assert Scrape.parse(response.text).value("croupier_frames_in_total", type="ping") == before + 2
            assert (await client.head("/metrics")).status_code == 200
            assert (await client.get("/")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405
    finally:
        await listener.close()
