"""The back office's HTTP plumbing: keys checked before anything else, JSON in and out, refusals as JSON.

Each route is an :class:`Endpoint`: a path under ``/admin/api``, a method, the :class:`~.keys.Scope` it
needs and a handler ``(request, office, key) -> JSON value``. :func:`guard` wraps a handler: no key or an
unknown one answers 401 (``WWW-Authenticate: Bearer``), a ``read`` key on a write route 403, before the
request's body is read; a refusal of an operation answers its status (:func:`~.errors.refusal`) with
``{"error", "message", "field"}``. The key is never logged or echoed; writes are logged with its name.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import Invalid, TooLarge, refusal
from .keys import AdminKey, KeyRing, Scope
from .office import Office

log = logging.getLogger(__name__)

PREFIX = "/admin/api"
MAX_BODY = 64 * 1024
"""Largest request body read (a publish's ``data`` is the largest thing a request carries)."""
MAX_REASON = 500
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
FIRST_PAGE = 2**63 - 1
"""The cursor of the first page: before every id."""

Handler = Callable[[Request, Office, AdminKey], Awaitable[Any]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route of the back office."""

    path: str
    method: str
    scope: Scope
    handler: Handler


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers=headers, media_type="application/json")


def _problem(status: int, code: str, message: str, field: str | None = None, **headers: str) -> Response:
    return json_response({"error": code, "message": message, "field": field}, status, headers or None)


def guard(keys: KeyRing, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of ``endpoint``: keys and scope first, then the handler, its refusals as JSON."""

    async def serve(request: Request) -> Response:
        key = keys.authenticate(request.headers.get("authorization"))
        if key is None:
            return _problem(401, "unauthorized", "send Authorization: Bearer <an admin key of CROUPIER_ADMIN_KEYS>",
                            **{"www-authenticate": 'Bearer realm="croupier-admin"'})  # fmt: skip
        if not key.allows(endpoint.scope):
            return _problem(403, "forbidden", f"the key {key.name!r} may only read")
        office: Office = request.app.state.office
        try:
            result = await endpoint.handler(request, office, key)
        except Exception as exc:
            known = refusal(exc)
            if known is None:
                log.exception("back office: %s %s failed (key %s)", endpoint.method, request.url.path, key.name)
                return _problem(500, "internal", "the request failed and was logged")
            status, code, field = known
            return _problem(status, code, str(exc), field)
        if endpoint.method != "GET":
            log.info("back office: %s %s by key %s", endpoint.method, request.url.path, key.name)
        return json_response(result)

    return serve


async def read_body(request: Request, kind: type[T]) -> T:
    """The request's JSON body as ``kind`` (a msgspec Struct), or :class:`Invalid` naming what is wrong."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise TooLarge(f"the body is over {MAX_BODY} bytes")
    try:
        return msgspec.json.decode(bytes(body), type=kind)
    except msgspec.ValidationError as exc:
        raise Invalid(f"bad body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Invalid(f"the body is not JSON: {exc}") from None


def text(value: str, field: str, *, most: int = MAX_REASON, required: bool = True) -> str:
    """``value`` as text PostgreSQL can store (no U+0000, no lone surrogate), at most ``most`` characters and,
    when ``required``, not blank; else :class:`Invalid` naming ``field``."""
    if required and not value.strip():
        raise Invalid(f"{field} must say something", field)
    if len(value) > most:
        raise Invalid(f"{field} is over {most} characters", field)
    if "\x00" in value:
        raise Invalid(f"{field} may not hold U+0000", field)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise Invalid(f"{field} is not valid Unicode text", field) from None
    return value


def path_id(request: Request, name: str) -> int:
    """A path parameter that is an id (1 .. 2^63-1), or :class:`Invalid`."""
    raw = str(request.path_params[name])
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 0 < int(raw) < 2**63:
        raise Invalid(f"{name} must be an id from 1 to {2**63 - 1}", name)
    return int(raw)


def cursor(request: Request) -> tuple[str | None, int]:
    """The ``cursor`` query parameter (the id a page ended at, as a previous page's ``next`` gave it) as it
    was sent and as an id; (None, the first page's) without one."""
    raw = request.query_params.get("cursor") or None
    if raw is None:
        return None, FIRST_PAGE
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise Invalid("cursor must be what a page's next said", "cursor")
    return raw, min(int(raw), FIRST_PAGE)


def limit(request: Request) -> int:
    """The ``limit`` query parameter: 1 to :data:`MAX_LIMIT` (default :data:`DEFAULT_LIMIT`)."""
    raw = request.query_params.get("limit") or str(DEFAULT_LIMIT)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_LIMIT):
        raise Invalid(f"limit must be from 1 to {MAX_LIMIT}", "limit")
    return int(raw)


def game(request: Request) -> str | None:
    """The ``game`` query parameter (a filter), or None."""
    value = request.query_params.get("game") or None
    return None if value is None else text(value, "game", most=64)


def next_cursor(items: list[dict[str, Any]], size: int) -> str | None:
    """The cursor of the page after ``items`` (None when it was the last: fewer than ``size``)."""
    return str(items[-1]["id"]) if len(items) == size else None
