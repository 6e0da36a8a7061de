"""The demo Mini App on a development node: ``/app`` and a development sign-in.

With ``CROUPIER_DEV=1``, ``croupier serve`` serves the demo Mini App (``webapp/``, docs/fairness.md for
what it checks) at ``/app/``, with the JavaScript client it imports: ``clients/js/dist`` (``npm run build
--prefix clients/js``) at ``/app/client/`` and its one dependency, ``@msgpack/msgpack`` from
``clients/js/node_modules``, at ``/app/vendor/msgpack/``. The page's import map names those two paths, so
production serves the same tree from nginx (``make webapp``, ``deploy/nginx.conf``).

``POST /app/dev-signin`` with ``{"user_id": 42}`` answers ``{"init_data": "..."}``: an initData for that
user signed with the node's generated development bot token, what Telegram would hand the Mini App. It
exists only when that token is the one ``CROUPIER_DEV`` generated (no real bot behind it, no deposits): a
node with a real bot token never signs for anyone. The initData travels in the response body only, never
in a URL, and is never logged.

On a node without ``CROUPIER_DEV`` none of these routes exist: ``/app`` and ``/app/dev-signin`` are 404.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .auth import sign_init_data
from .settings import Settings

REPOSITORY = Path(__file__).resolve().parents[1]
WEBAPP_DIR = REPOSITORY / "webapp"
CLIENT_DIST = REPOSITORY / "clients" / "js" / "dist"
MSGPACK_DIST = REPOSITORY / "clients" / "js" / "node_modules" / "@msgpack" / "msgpack" / "dist.esm"
BUILD_HINT = "run `npm ci --prefix clients/js && npm run build --prefix clients/js` (make test does)"
MAX_USER_ID = 2**53 - 1
"""Largest user id the sign-in takes: the page sends it as a JSON number, exact in JavaScript up to here."""


class SignInRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /app/dev-signin``."""

    user_id: Annotated[int, msgspec.Meta(ge=1, le=MAX_USER_ID)]
    """The Telegram user id to sign for."""
    first_name: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")] = "Player"
    """The user's first name, as Telegram would send it."""


class DevSignIn:
    """Mints initData with a development bot token (see the module docstring)."""

    def __init__(self, dev_bot_token: str | None) -> None:
        self._token = dev_bot_token

    async def sign_in(self, request: Request) -> Response:
        """``POST /app/dev-signin``: 200 ``{"init_data"}``; 400 naming the bad field; 404 on a node whose token
        is a real bot's; 415 unless the body is JSON (a form posted from another site is not)."""
        if self._token is None:
            return JSONResponse({"error": "no development sign-in: this node checks initData with a real bot's "
                                          "token; open the Mini App from Telegram"}, 404)  # fmt: skip
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send the body as application/json"}, 415)
        try:
            body = msgspec.json.decode(await request.body(), type=SignInRequest)
        except msgspec.ValidationError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except msgspec.DecodeError:
            return JSONResponse({"error": 'the body must be JSON: {"user_id": 42}'}, 400)
        init_data = sign_init_data(self._token, user_id=body.user_id, first_name=body.first_name)
        return JSONResponse({"init_data": init_data}, headers={"cache-control": "no-store"})


class BuiltFiles(StaticFiles):
    """Static files from a folder a build step makes: while it is missing, 404 naming the step (not a 500).
    Every file is revalidated (``no-cache``), so an edit or a rebuild shows at the next reload."""

    def __init__(self, directory: Path, *, missing: str, html: bool = False) -> None:
        super().__init__(directory=directory, html=html, check_dir=False)
        self._directory, self._missing = directory, missing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._directory.is_dir():
            await PlainTextResponse(f"{self._directory} is missing: {self._missing}\n", 404)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = "no-cache"
        return response


def webapp_routes(settings: Settings) -> list[BaseRoute]:
    """The demo's routes on a ``CROUPIER_DEV`` node (the sign-in and the deeper mounts first: ``/app`` is a
    mount over the rest); none otherwise."""
    if not settings.dev:
        return []
    return [
        Route(
            "/app/dev-signin", DevSignIn(settings.bot_token if settings.dev_token else None).sign_in, methods=["POST"]
        ),
        Mount("/app/client", BuiltFiles(CLIENT_DIST, missing=BUILD_HINT)),
        Mount("/app/vendor/msgpack", BuiltFiles(MSGPACK_DIST, missing=BUILD_HINT)),
        Mount("/app", BuiltFiles(WEBAPP_DIR, missing="the demo Mini App is not in this installation", html=True)),
    ]
