"""``/admin/api/cluster``, ``/admin/api/publish`` and ``/admin/api/actions``: the nodes, announcements to
their sockets, and the audit log."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from .. import audit, publish
from ..cluster import cluster
from ..errors import Invalid
from ..http import Endpoint, cursor, limit, next_cursor, read_body, text
from ..keys import AdminKey, Scope
from ..office import Office


class _Announcement(msgspec.Struct):
    channel: str
    text: str | None = None
    data: dict[str, Any] | None = None
    reason: str = ""


async def nodes(request: Request, office: Office, key: AdminKey) -> Any:
    """``GET /cluster``: nodes, drivers per game, the outbox backlog."""
    return await cluster(office.pool, office.control, office.node_id)


async def announce(request: Request, office: Office, key: AdminKey) -> Any:
    """``POST /publish {channel, text?, data?, reason?}``."""
    body = await read_body(request, _Announcement)
    message = None if body.text is None else text(body.text, "text", most=publish.MAX_TEXT)
    return await publish.publish(office.pool, office.control, key.name, office.rounds.games(), body.channel,
                                 message, body.data, text(body.reason, "reason", required=False))  # fmt: skip


async def actions(request: Request, office: Office, key: AdminKey) -> Any:
    """``GET /actions?target=&cursor=&limit=``: the audit log, newest first (of ``user:<id>``, ``round:<id>``,
    ``game:<name>`` or ``all`` with ``target``)."""
    target = request.query_params.get("target") or None
    if target is not None and len(target) > 100:
        raise Invalid("target is too long", "target")
    size = limit(request)
    items = [action.as_json() for action in await audit.page(office.pool, target, cursor(request)[1], size)]
    return {"items": items, "next": next_cursor(items, size)}


ENDPOINTS = [
    Endpoint("/cluster", "GET", Scope.READ, nodes),
    Endpoint("/publish", "POST", Scope.WRITE, announce),
    Endpoint("/actions", "GET", Scope.READ, actions),
]
