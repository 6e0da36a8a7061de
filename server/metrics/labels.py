"""The label values metrics may carry, and how a thing seen on a hot path maps to one (no I/O).

Every label set is closed: message types are the protocol's, close codes and error codes are the
protocol's, games are the node's, outcomes are listed here. Anything else counts as ``other``
(:data:`~.tally.OTHER`): a client sending ``{"t": "x<random>"}`` cannot create a series. No label
ever carries a user id, a round id, an address or free text.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import get_args

import msgspec

from protocol import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, CloseCode, ErrorCode
from protocol import messages as m

from .tally import OTHER

REQUEST_CLASSES: tuple[type[msgspec.Struct], ...] = get_args(m.Request)
"""Every request a client may send (``protocol.messages.Request``): a type added there is labelled at once."""
REPLY_CLASSES: tuple[type[msgspec.Struct], ...] = get_args(m.ServerMessage)
"""Every message the server may send (``protocol.messages.ServerMessage``)."""


def tag_of(cls: type[msgspec.Struct]) -> str:
    """A message class's ``t`` on the wire."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str), cls
    return tag


FRAME_IN_TYPES: tuple[str, ...] = tuple(tag_of(c) for c in REQUEST_CLASSES)
FRAME_OUT_TYPES: tuple[str, ...] = tuple(tag_of(c) for c in REPLY_CLASSES)

CODECS: dict[str, str] = {JSON_SUBPROTOCOL: "json", MSGPACK_SUBPROTOCOL: "msgpack"}
"""Subprotocol -> the ``codec`` label."""

CLOSE_CODES: tuple[str, ...] = (*(str(int(code)) for code in CloseCode), "1002", "1006")
"""Close codes the server sends (the protocol's, 1002 for a refused subprotocol) or records (1006: the peer
went away without a close frame)."""

ERROR_CODES: tuple[str, ...] = tuple(code.value for code in ErrorCode)

AUTH_RESULTS: tuple[str, ...] = (
    "ok", "malformed", "missing_hash", "bad_hash", "missing_signature", "bad_signature", "expired", "no_user",
    "unavailable", "timeout", "required", "blocked", "play_time",
)  # fmt: skip
"""``ok``; an initData refused, by ``server.auth.InitDataErrorKind`` (``tests/metrics`` checks they match);
``no_user`` (initData without a user), ``unavailable`` (the database), ``timeout`` (no auth in time),
``required`` (another request before ``auth``), ``play_time`` (in the break after a session time limit)."""

REFUSALS: tuple[str, ...] = ("handshake_timeout", "unauthenticated_cap", "address_rate", "subprotocol")
"""Why a connection was refused before it became a session."""

REQUEST_TYPES: tuple[str, ...] = ("bet", "action", "deposit")
"""Requests whose latency is measured (each waits on the database or the Bot API)."""

DROP_REASONS: tuple[str, ...] = ("overflow", "closing", "slow")
"""Why a frame for a socket was not sent: its queue overflowed (4503, the queue's frames dropped), the
socket was closing, or a droppable tick skipped a socket over half full."""

AUDIT_CHECKS: tuple[str, ...] = (
    "unbalanced_transactions",
    "orphan_legs",
    "balance_mismatch",
    "negative_wallets",
    "not_conserved",
)
"""The incremental ledger audit's checks (:mod:`.ledgerhealth`)."""

ROUND_PHASES: tuple[str, ...] = ("betting", "running", "settled", "voided")

READS: dict[str, tuple[str, ...]] = {
    "balance": ("memory", "database"),
    "history": ("memory", "database"),
    "leaderboard": ("memory", "redis"),
    "names": ("memory", "database"),
    "my_bets": ("database",),
    "my_transactions": ("database",),
    "limits": ("database",),
}
"""What a player's read request reads (``names``: the players a leaderboard shows) and where each can be
answered from: this node's memory (the balance every change reaches, the rounds it saw settle, names read
before, a lone node's boards), Redis (shared boards) or PostgreSQL."""

NOTIFICATION_OUTCOMES: tuple[str, ...] = (
    "sent", "throttled_429", "forbidden_403", "chat_not_found", "dead", "retry", "stalled",
)  # fmt: skip
"""What became of one ``sendMessage``: sent; Telegram's 429 (every sender pauses); 403 (blocked, the user
marked unreachable); 400 chat not found (also unreachable); dead (another 400, or out of attempts); retry
(5xx, network); stalled (401/404: the bot itself refused)."""

_NOTIFICATION_ACTIONS: dict[tuple[str, str | None], str] = {
    ("sent", None): "sent",
    ("pause", None): "throttled_429",
    ("unreachable", "forbidden"): "forbidden_403",
    ("unreachable", "chat_not_found"): "chat_not_found",
    ("dead", None): "dead",
    ("retry", None): "retry",
    ("stall", None): "stalled",
}


def notification_outcome(action: str, source: str | None = None) -> str:
    """The outcome label of a sender's verdict (``server.telegram.sender.Action`` value, and the
    unreachability ``Source`` value when there is one); ``other`` for anything not listed."""
    return _NOTIFICATION_ACTIONS.get((action, source), OTHER)


def message_type(value: object, known: Iterable[str]) -> str:
    """The ``type`` label of a frame whose ``t`` is ``value``: itself when it is a known type, else ``other``."""
    return value if isinstance(value, str) and value in set(known) else OTHER


def close_code(code: Hashable) -> str:
    """The ``code`` label of a close code (an int or a ``CloseCode``): its number when listed, else ``other``."""
    label = str(int(code)) if isinstance(code, int) else OTHER
    return label if label in CLOSE_CODES else OTHER
