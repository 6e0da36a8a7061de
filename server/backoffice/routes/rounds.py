"""``/admin/api/rounds``: list rounds, inspect one, void one."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from .. import rounds
from ..http import Endpoint, cursor, game, limit, next_cursor, path_id, read_body, text
from ..keys import AdminKey, Scope
from ..office import Office


class _Reason(msgspec.Struct):
    reason: str


async def listing(request: Request, office: Office, key: AdminKey) -> Any:
    """``GET /rounds?game=&cursor=&limit=``: rounds, newest first."""
    size = limit(request)
    items = await rounds.page(office.pool, game(request), cursor(request)[1], size)
    return {"items": items, "next": next_cursor(items, size)}


async def inspect(request: Request, office: Office, key: AdminKey) -> Any:
    """``GET /rounds/{id}``."""
    return await rounds.inspect(office.pool, path_id(request, "round_id"))


async def void(request: Request, office: Office, key: AdminKey) -> Any:
    """``POST /rounds/{id}/void {reason}``."""
    round_id = path_id(request, "round_id")
    body = await read_body(request, _Reason)
    return await rounds.void(office.pool, office.rounds, key.name, round_id, text(body.reason, "reason"))


ENDPOINTS = [
    Endpoint("/rounds", "GET", Scope.READ, listing),
    Endpoint("/rounds/{round_id}", "GET", Scope.READ, inspect),
    Endpoint("/rounds/{round_id}/void", "POST", Scope.WRITE, void),
]
