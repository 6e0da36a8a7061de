"""The relay's notices: which boards a cycle changed, on the broker channel :data:`NOTICES`.

The relay publishes one after each cycle that changed boards; every node's watchers (:mod:`.watch`) re-read
the boards named that its sockets watch. A notice is only a hint (a lost one delays a push until the
watchers' periodic refresh): the boards themselves are in the store.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

NOTICES = "leaderboards"
"""The broker channel of the notices: a JSON list of :attr:`~.boards.Board.name` (``dice:net:day``)."""


def notice(names: Iterable[str]) -> bytes:
    """The payload of a notice naming the boards changed."""
    return orjson.dumps(sorted(names))


def read_notice(payload: bytes) -> list[str] | None:
    """The board names of a notice; None when it is not one."""
    try:
        names = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(names, list):
        return None
    return [str(name) for name in names]
