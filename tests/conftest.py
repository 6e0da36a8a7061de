"""Suite-wide fixtures: real PostgreSQL and Redis, a fresh database per run, running nodes."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import pytest
import uvicorn

from server.app import create_app
from server.db.migrations import migrate
from server.ledger import Ledger
from server.serving import uvicorn_config
from server.settings import Settings
from tests.services import EmbeddedRedis, free_port, migrated_pool, postgres_server, redis_server, scratch_database

TEST_BOT_TOKEN = "123456789:TEST-token-for-the-croupier-suite_x"
INTEGRATION_FIXTURES = {
    "pg_server_url",
    "database_url",
    "empty_database",
    "redis_url",
    "redis",
    "node_server",
    "start_node",
    "db",
    "bank",
    "pool",
    "ledger",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that talks to PostgreSQL or Redis as ``integration`` (CI runs those twice)."""
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A migrated database created for this run and dropped after it, so runs never see each other's rows."""
    async with scratch_database(pg_server_url, "croupier_test") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url


@pytest.fixture
async def empty_database(pg_server_url: str) -> AsyncIterator[str]:
    """A database of this test's own, not migrated: no other test's rows or rounds live in it."""
    async with scratch_database(pg_server_url, "croupier_scratch") as url:
        yield url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the run's database (ledger and rounds tests)."""
    async with migrated_pool(database_url, max_size=10) as pool:
        yield pool


@pytest.fixture
async def ledger(pool: asyncpg.Pool) -> AsyncIterator[Ledger]:
    """A ledger on :func:`pool`, started and closed around the test."""
    ledger = Ledger(pool)
    await ledger.start()
    yield ledger
    await ledger.close()


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Ledger]:
    """A ledger beside the nodes', used by tests to fund wallets (only the ledger writes money)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    ledger = Ledger(pool)
    await ledger.start()
    yield ledger
    await ledger.close()
    await pool.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server(os.environ.get("TEST_REDIS_URL")) as url:
        yield url


@pytest.fixture
def redis() -> Iterator[EmbeddedRedis]:
    """A Redis of the test's own (an embedded Valkey), for tests that stop it or need it to themselves."""
    server = EmbeddedRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


def make_settings(database_url: str | None, tmp_path: Path, **overrides: object) -> Settings:
    settings = Settings.from_env(
        {
            "CROUPIER_BOT_TOKEN": TEST_BOT_TOKEN,
            "CROUPIER_DATA_DIR": str(tmp_path / "state"),
            "CROUPIER_NODE_ID": "test-node",
            "CROUPIER_SEED_CHAIN_LENGTH": "500",
            "CROUPIER_BETTING_MS": "60000",
            "CROUPIER_ROUND_PAUSE_MS": "0",
            "CROUPIER_GAMES": "crash,dice,roulette",
            # No test node may reach Telegram: Bot API calls go to loopback unless a test names its server.
            "CROUPIER_TELEGRAM_API_URL": "http://127.0.0.1:9",
            **({"DATABASE_URL": database_url} if database_url else {}),
        }
    )
    return replace(settings, **overrides)  # type: ignore[arg-type]


@dataclass
class RunningNode:
    """A node served by a real uvicorn on a free loopback port."""

    url: str
    settings: Settings

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[RunningNode]:
    port = free_port()
    # The configuration croupier serve runs (server/serving.py): the same HTTP and WebSocket protocols.
    config = uvicorn_config(create_app(settings), settings, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn exited at start")
        await asyncio.sleep(0.01)
    try:
        yield RunningNode(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


StartNode = Callable[..., contextlib.AbstractAsyncContextManager[RunningNode]]


@pytest.fixture
def start_node(database_url: str, tmp_path: Path) -> StartNode:
    """Start a node on the suite's database with settings overridden by keyword."""

    def start(**overrides: object) -> contextlib.AbstractAsyncContextManager[RunningNode]:
        return serve(make_settings(database_url, tmp_path, **overrides))

    return start


@pytest.fixture
async def node_server(start_node: StartNode) -> AsyncIterator[RunningNode]:
    async with start_node() as node:
        yield node


@pytest.fixture
def game_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process-wide game registry as a copy for this test: games it registers (``@register``, an
    imported game module) are forgotten after it, so no other test sees them."""
    from server.games import registry

    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
