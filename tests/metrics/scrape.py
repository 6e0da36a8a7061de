"""Reading a node's ``/metrics`` in tests: samples by name and labels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample, by name, as (labels, value)."""

    samples: dict[str, list[tuple[dict[str, str], float]]]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return cls(samples)

    def value(self, metric: str, /, **labels: str) -> float:
        """The sum of ``metric``'s samples carrying ``labels`` (0 when there is none)."""
        return sum(v for have, v in self.samples.get(metric, []) if all(have.get(k) == w for k, w in labels.items()))

    def label_values(self, name: str, label: str) -> set[str]:
        return {have[label] for have, _ in self.samples.get(name, []) if label in have}


async def scrape(port: int, path: str = "/metrics") -> Scrape:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape.parse(response.text)


async def scrape_until(port: int, ready: Callable[[Scrape], bool], *, timeout: float = 15.0) -> Scrape:
    """Scrape until ``ready`` holds (the last scrape is returned either way: assert on it)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await scrape(port)
        if ready(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)
