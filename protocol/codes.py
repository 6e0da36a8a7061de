"""Error codes and WebSocket close codes of the v1 contract.

Both are part of the wire contract: clients switch on them, so a value never changes
meaning once shipped. New codes may be added (a compatible extension).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` message. A request-level error leaves the socket open."""

    BAD_REQUEST = "bad_request"
    """Malformed frame or wrong field type; the message (and ``field``) name what was wrong."""
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHORIZED = "unauthorized"
    AUTH_REQUIRED = "auth_required"
    UNKNOWN_GAME = "unknown_game"
    NOT_SUBSCRIBED = "not_subscribed"
    BETTING_CLOSED = "betting_closed"
    ROUND_MISMATCH = "round_mismatch"
    INVALID_BET = "invalid_bet"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    RATE_LIMITED = "rate_limited"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    DEPOSIT_REFUSED = "deposit_refused"
    """Extension: a ``deposit`` the cashier will not take (limits, deposits not enabled); the message says why."""
    FORBIDDEN = "forbidden"
    """Extension: the account is blocked by the operator: its ``auth`` is refused, then the socket closes with
    4403."""
    LIMIT_REACHED = "limit_reached"
    """Extension: a bet or deposit over one of the player's own limits (loss, wager, deposit), or a sign-in in
    the break after their session time limit; ``resets_at`` says when it may go again."""
    EXCLUDED = "excluded"
    """Extension: the player is in a cool-off or self-excluded: no bets and no deposits until ``resets_at``
    (null: permanent)."""


class CloseCode(IntEnum):
    """WebSocket close codes the server uses, with what a client should do."""

    NORMAL = 1000
    """Normal closure: stop."""
    MESSAGE_TOO_BIG = 1009
    """A frame exceeded the size limit: fix the client."""
    SERVICE_RESTART = 1012
    """Server draining: reconnect now and resume with ``since``."""
    TRY_AGAIN_LATER = 1013
    """Overloaded: reconnect with backoff."""
    PROTOCOL_ABUSE = 4400
    """Too many malformed messages: fix the client."""
    UNAUTHORIZED = 4401
    """Bad initData or a request before ``auth``: get fresh initData."""
    FORBIDDEN = 4403
    """The account is blocked by the operator (its open sockets are closed with this, on every node, and its
    next ``auth`` is refused with ``forbidden``): stop, do not reconnect."""
    AUTH_TIMEOUT = 4408
    """No ``auth`` within the handshake timeout: reconnect."""
    PLAY_TIME_LIMIT = 4410
    """The player's own session time limit ran out: stop; a sign-in is refused with ``limit_reached`` until
    the break after it ends."""
    REPLACED = 4409
    """Replaced by a newer connection of the same session: stop."""
    RATE_LIMITED = 4429
    """Rate limit exceeded repeatedly: reconnect with backoff."""
    TOO_SLOW = 4503
    """The send queue overflowed: reconnect and resume with ``since``."""
