"""``/admin/api/risk/flags``: the risk flags ``croupier risk report`` wrote, and their reviews."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from .. import risk
from ..http import Endpoint, cursor, limit, next_cursor, path_id, read_body, text
from ..keys import AdminKey, Scope
from ..office import Office


class _Reason(msgspec.Struct):
    reason: str


async def flags(request: Request, office: Office, key: AdminKey) -> Any:
    """``GET /risk/flags?open=&kind=&user=&cursor=&limit=``: flags, newest first (``open=true``: nobody
    reviewed them yet; ``false``: reviewed)."""
    params = request.query_params
    state, kind, user_id = risk.check_filters(params.get("open") or None, params.get("kind") or None,
                                              params.get("user") or None)  # fmt: skip
    size = limit(request)
    items = await risk.page(office.pool, cursor(request)[1], size, open_=state, kind=kind, user_id=user_id)
    return {"items": items, "next": next_cursor(items, size)}


async def review(request: Request, office: Office, key: AdminKey) -> Any:
    """``POST /risk/flags/{id}/review {reason}``: reviewed by the key's name (once)."""
    flag_id = path_id(request, "flag_id")
    body = await read_body(request, _Reason)
    return await risk.review(office.pool, key.name, flag_id, text(body.reason, "reason"))


ENDPOINTS = [
    Endpoint("/risk/flags", "GET", Scope.READ, flags),
    Endpoint("/risk/flags/{flag_id}/review", "POST", Scope.WRITE, review),
]
