"""The routes of ``/admin/api``, one module per resource: users, rounds, risk flags, and the cluster (nodes,
publish, the audit log)."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.routing import BaseRoute, Mount, Route

from ..http import PREFIX, Endpoint, guard
from ..keys import KeyRing
from . import cluster, risk, rounds, users

ENDPOINTS: tuple[Endpoint, ...] = (*users.ENDPOINTS, *rounds.ENDPOINTS, *risk.ENDPOINTS, *cluster.ENDPOINTS)


def admin_routes(admin_keys: Iterable[tuple[str, str, str]]) -> list[BaseRoute]:
    """``/admin/api/...`` for the keys of ``CROUPIER_ADMIN_KEYS`` (``Settings.admin_keys``); none without a
    key (the API is off: its paths answer 404)."""
    keys = KeyRing(admin_keys)
    if not keys:
        return []
    return [Mount(PREFIX, routes=[Route(e.path, guard(keys, e), methods=[e.method]) for e in ENDPOINTS])]
