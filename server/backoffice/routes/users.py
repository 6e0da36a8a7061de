"""``/admin/api/users``: look players up, page through their bets and wallet movements, block, unblock,
credit or debit them."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from ...players.history import Page
from .. import accounts, money
from ..errors import Invalid
from ..http import Endpoint, cursor, game, limit, path_id, read_body, text
from ..keys import AdminKey, Scope
from ..office import Office


class _Reason(msgspec.Struct):
    reason: str


class _Adjustment(msgspec.Struct):
    amount: int
    reason: str
    idempotency_key: str


def _page(page: Page[Any]) -> dict[str, Any]:
    return {"items": msgspec.to_builtins(page.items), "next": page.next}


async def find(request: Request, office: Office, key: AdminKey) -> Any:
    """``GET /users?username=``: the users with that Telegram username."""
    username = request.query_params.get("username")
    if not username:
        raise Invalid("give ?username=", "username")
    return {"users": await accounts.find(office.pool, text(username, "username", most=64))}


async def profile(request: Request, office: Office, key: AdminKey) -> Any:
    """``GET /users/{id}``: profile, balance, restriction, open risk flags, responsible-gaming limits and exclusion."""
    return await accounts.profile(office.pool, office.responsible, path_id(request, "user_id"))


async def bets(request: Request, office: Office, key: AdminKey) -> Any:
    """``GET /users/{id}/bets?cursor=&limit=&game=``: the user's bets, newest first (the player's own
    ``my_bets`` pages: keyset, stable while bets are placed)."""
    raw_cursor, _ = cursor(request)
    page = await office.players.bets(path_id(request, "user_id"), game(request), raw_cursor, limit(request))
    return _page(page)


async def transactions(request: Request, office: Office, key: AdminKey) -> Any:
    """``GET /users/{id}/transactions?cursor=&limit=``: the user's wallet movements, newest first."""
    raw_cursor, _ = cursor(request)
    return _page(await office.players.transactions(path_id(request, "user_id"), raw_cursor, limit(request)))


async def block(request: Request, office: Office, key: AdminKey) -> Any:
    """``POST /users/{id}/block {reason}``."""
    user_id = path_id(request, "user_id")
    body = await read_body(request, _Reason)
    return await accounts.block(office.pool, office.control, key.name, user_id, text(body.reason, "reason"))


async def unblock(request: Request, office: Office, key: AdminKey) -> Any:
    """``POST /users/{id}/unblock {reason}``."""
    user_id = path_id(request, "user_id")
    body = await read_body(request, _Reason)
    return await accounts.unblock(office.pool, office.control, key.name, user_id, text(body.reason, "reason"))


async def adjust(request: Request, office: Office, key: AdminKey) -> Any:
    """``POST /users/{id}/adjust {amount, reason, idempotency_key}``."""
    user_id = path_id(request, "user_id")
    body = await read_body(request, _Adjustment)
    return await money.adjust(office.ledger, key.name, user_id, body.amount, text(body.reason, "reason"),
                              body.idempotency_key)  # fmt: skip


ENDPOINTS = [
    Endpoint("/users", "GET", Scope.READ, find),
    Endpoint("/users/{user_id}", "GET", Scope.READ, profile),
    Endpoint("/users/{user_id}/bets", "GET", Scope.READ, bets),
    Endpoint("/users/{user_id}/transactions", "GET", Scope.READ, transactions),
    Endpoint("/users/{user_id}/block", "POST", Scope.WRITE, block),
    Endpoint("/users/{user_id}/unblock", "POST", Scope.WRITE, unblock),
    Endpoint("/users/{user_id}/adjust", "POST", Scope.WRITE, adjust),
]
