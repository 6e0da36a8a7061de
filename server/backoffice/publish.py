"""An operator's announcement (``POST /admin/api/publish``): an ``announcement`` push to a game's
subscribers, one user's sockets, or every socket of every node.

The push goes through the control channel (:class:`~server.backoffice.control.ClusterControl`): each
node hands it to its own sockets of that audience. It is not an event of a channel's stream (no offset,
no history): a socket that is not connected when it is sent never gets it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import asyncpg
import msgspec
import orjson

from protocol import messages as m

from ..clock import now_ms
from . import audit
from .control import ClusterControl
from .errors import Invalid

MAX_TEXT = 4096
MAX_DATA_BYTES = 8192
"""Largest ``data``, encoded as JSON: an announcement must fit in any socket's send queue."""
_USER = re.compile(r"user:([1-9][0-9]{0,18})")


def audience(channel: str, games: Collection[str]) -> tuple[str, str]:
    """The audience of ``channel`` (``all``, ``user:<id>``, ``game:<name>``: a game this node serves) on each
    node, and the announcement's ``to``; :class:`Invalid` for anything else."""
    if channel == "all":
        return "all", "all"
    user = _USER.fullmatch(channel)
    if user is not None and int(user.group(1)) < 2**63:
        return channel, "user"
    if channel.startswith("game:") and channel.removeprefix("game:") in games:
        return channel, channel
    served = ", ".join(f"game:{game}" for game in games)
    raise Invalid(f'channel must be "all", "user:<id>" or one of {served}', "channel")


def announcement(to: str, text: str | None, data: dict[str, Any] | None) -> bytes:
    """The ``announcement`` as JSON (the wire's bytes for JSON sockets), or :class:`Invalid`."""
    if text is None and data is None:
        raise Invalid("an announcement needs text, data or both", "text")
    if data is not None:
        encoded = orjson.dumps(data)
        if len(encoded) > MAX_DATA_BYTES:
            raise Invalid(f"data takes {len(encoded)} bytes as JSON; the most is {MAX_DATA_BYTES}", "data")
        if b"\\u0000" in encoded:  # PostgreSQL's jsonb (the audit log) cannot hold U+0000
            raise Invalid("data may not hold U+0000", "data")
    return msgspec.json.encode(m.Announcement(to=to, text=text, data=data, ts=now_ms()))


async def publish(pool: asyncpg.Pool, control: ClusterControl, actor: str, games: Collection[str], channel: str,
                  text: str | None, data: dict[str, Any] | None, reason: str) -> dict[str, Any]:  # fmt: skip
    """Audit, then push the announcement to ``channel``'s audience on every node; what was sent."""
    target, to = audience(channel, games)
    message = announcement(to, text, data)
    sent = {"channel": channel, "text": text, "data": data}
    await audit.record(pool, actor, "publish", target, reason, after=sent)
    await control.announce(target, message)
    return sent
