"""Fixtures for Telegram tests: a Bot API test server process (tests/telegram/botapi.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.conftest import TEST_BOT_TOKEN
from tests.telegram.botapi import BotApiServer


@pytest.fixture(scope="session")
def botapi_server() -> Iterator[BotApiServer]:
    """One Bot API test server for the run, with Telegram's defaults, for the suite's bot token."""
    with BotApiServer.start(TEST_BOT_TOKEN) as server:
        yield server


@pytest.fixture
async def botapi(botapi_server: BotApiServer) -> AsyncIterator[BotApiServer]:
    """The run's Bot API test server, reset for this test (no calls, invoices, webhook, updates...)."""
    await botapi_server.reset()
    yield botapi_server
