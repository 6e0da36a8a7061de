"""The demo Mini App's routes (``server/devapp.py``) in the app ``croupier serve`` builds: ``/app`` and the
development sign-in exist on a ``CROUPIER_DEV`` node only, and the sign-in signs only with a generated token.

In process, through httpx's ASGI transport, without the lifespan (these routes need no node); the browser
tests (``tests/browser/``) drive the same routes on a real ``croupier serve``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server import devapp
from server.app import create_app
from server.auth import HmacVerifier, InitDataValidator
from server.settings import Settings
from tests.conftest import TEST_BOT_TOKEN


def client_for(tmp_path: Path, **env: str) -> httpx.AsyncClient:
    """A client of the app ``croupier serve`` builds with these settings (its lifespan not run)."""
    settings = Settings.from_env({"CROUPIER_DATA_DIR": str(tmp_path / "state"), **env})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://node")


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A ``CROUPIER_DEV`` node's app, with its generated development token."""
    async with client_for(tmp_path, CROUPIER_DEV="1") as client:
        yield client


def dev_token(tmp_path: Path) -> str:
    return (tmp_path / "state" / "dev-bot-token").read_text().strip()


async def test_without_croupier_dev_there_is_no_app_and_no_sign_in(tmp_path: Path) -> None:
    async with client_for(tmp_path, CROUPIER_BOT_TOKEN=TEST_BOT_TOKEN) as client:
        for path in ("/app", "/app/", "/app/index.html", "/app/app.js", "/app/client/index.js"):
            assert (await client.get(path, follow_redirects=False)).status_code == 404, path
        assert (await client.post("/app/dev-signin", json={"user_id": 42})).status_code == 404


async def test_a_dev_node_serves_the_page_and_its_modules(dev: httpx.AsyncClient) -> None:
    redirect = await dev.get("/app", follow_redirects=False)
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/app/")
    page = await dev.get("/app/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '"@croupier/client": "./client/index.js"' in page.text and page.headers["cache-control"] == "no-cache"
    for name in ("app.js", "fairness.js"):
        module = await dev.get(f"/app/{name}")
        assert module.status_code == 200 and module.headers["content-type"].startswith("text/javascript"), name
    assert (await dev.get("/app/style.css")).headers["content-type"].startswith("text/css")
    assert (await dev.get("/app/%2e%2e/server/settings.py")).status_code == 404


async def test_a_missing_client_build_is_a_404_naming_the_build_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devapp, "CLIENT_DIST", tmp_path / "no-dist")
    async with client_for(tmp_path, CROUPIER_DEV="1") as client:
        response = await client.get("/app/client/index.js")
    assert response.status_code == 404 and "npm run build --prefix clients/js" in response.text


@pytest.mark.skipif(not devapp.CLIENT_DIST.is_dir(), reason="clients/js is not built (npm run build)")
async def test_the_built_client_and_msgpack_are_served_beside_the_page(dev: httpx.AsyncClient) -> None:
    assert (await dev.get("/app/client/index.js")).headers["content-type"].startswith("text/javascript")
    assert (await dev.get("/app/vendor/msgpack/index.mjs")).headers["content-type"].startswith("text/javascript")


async def test_the_dev_sign_in_mints_initdata_the_node_accepts(
    dev: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await dev.post("/app/dev-signin", json={"user_id": 4242, "first_name": "Ada"})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    init_data = response.json()["init_data"]
    verified = InitDataValidator(HmacVerifier(dev_token(tmp_path))).validate(init_data)
    assert verified.user is not None and (verified.user.id, verified.user.first_name) == (4242, "Ada")
    assert all(init_data not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"user_id": 0}, "user_id"), ({"user_id": 2**53}, "user_id"), ({}, "user_id"), ({"user_id": "42"}, "user_id"),
     ({"user_id": 1, "first_name": "a\nb"}, "first_name"), ({"user_id": 1, "extra": 1}, "extra")],
)  # fmt: skip
async def test_the_dev_sign_in_refuses_a_bad_body_naming_the_field(
    dev: httpx.AsyncClient, body: object, field: str
) -> None:
    response = await dev.post("/app/dev-signin", json=body)
    assert response.status_code == 400 and field in response.json()["error"]


async def test_the_dev_sign_in_takes_json_only(dev: httpx.AsyncClient) -> None:
    form = await dev.post("/app/dev-signin", content="user_id=42", headers={"content-type": "text/plain"})
    assert form.status_code == 415
    broken = await dev.post("/app/dev-signin", content="{", headers={"content-type": "application/json"})
    assert broken.status_code == 400
    assert "init_data" not in (await dev.get("/app/dev-signin")).text  # GET is the static mount's: 404


async def test_a_dev_node_with_a_real_bot_token_serves_the_app_but_signs_for_nobody(tmp_path: Path) -> None:
    async with client_for(tmp_path, CROUPIER_DEV="1", CROUPIER_BOT_TOKEN=TEST_BOT_TOKEN) as client:
        assert (await client.get("/app/")).status_code == 200
        refused = await client.post("/app/dev-signin", json={"user_id": 42})
    assert refused.status_code == 404 and "real bot" in refused.json()["error"]
