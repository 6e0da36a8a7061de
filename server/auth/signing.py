"""Minting first-party initData with a bot token, as Telegram does.

For ``croupier dev-initdata``, load tests and the test suite: anyone holding the bot
token can mint initData for any user, which is why the token is a secret.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

import orjson

from .initdata import HmacVerifier


def sign_init_data(
    bot_token: str,
    *,
    user_id: int,
    first_name: str = "Player",
    username: str | None = None,
    auth_date: int | None = None,
    extra: dict[str, str] | None = None,
    allows_write_to_pm: bool = False,
) -> str:
    """Return a URL-encoded initData string for ``user_id`` with a valid ``hash`` (its user saying
    ``allows_write_to_pm`` when asked)."""
    user: dict[str, object] = {"id": user_id, "first_name": first_name}
    if username:
        user["username"] = username
    if allows_write_to_pm:
        user["allows_write_to_pm"] = True
    fields = {
        "auth_date": str(int(time.time()) if auth_date is None else auth_date),
        "query_id": f"dev{user_id}",
        "user": orjson.dumps(user).decode(),
        **(extra or {}),
    }
    fields["hash"] = HmacVerifier(bot_token).sign(fields)
    return urlencode(fields)
