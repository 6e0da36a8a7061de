"""Why the ledger refused an operation; each maps to a protocol error code."""

from __future__ import annotations

import datetime as dt

from protocol import ErrorCode

from ..db.transactions import DatabaseUnavailable


class LedgerError(Exception):
    """Base of ledger refusals. ``code`` is the protocol error code to answer with."""

    code: ErrorCode = ErrorCode.INTERNAL
    resets_at: dt.datetime | None = None
    """When what refused it lets the player try again (a player's own limit), if it says."""


class InsufficientFunds(LedgerError):
    """The wallet holds less than the operation would take. Nothing was charged."""

    code = ErrorCode.INSUFFICIENT_FUNDS


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used for a different request. Nothing was charged."""

    code = ErrorCode.IDEMPOTENCY_CONFLICT


class BettingClosed(LedgerError):
    """The bet's round stopped taking bets before the bet could commit. Nothing was charged."""

    code = ErrorCode.BETTING_CLOSED


class ExposureCapReached(LedgerError):
    """The bet's round holds as much as its game lets one round pay out. Nothing was charged."""

    code = ErrorCode.INVALID_BET


class LedgerUnavailable(LedgerError, DatabaseUnavailable):
    """PostgreSQL did not answer. The operation was not committed (nothing charged).

    The ledger passes it to :func:`~server.db.transactions.in_transaction` as the error to raise."""

    code = ErrorCode.UNAVAILABLE


class UnknownAccount(LedgerError):
    """No wallet for that user: the user never authenticated."""

    code = ErrorCode.BAD_REQUEST


class UnknownDeposit(LedgerError):
    """No deposit was credited for that ref (a payment charge id): there is nothing to reverse."""

    code = ErrorCode.BAD_REQUEST


class PlayerLimitReached(LedgerError):
    """The bet would pass one of the player's own limits, or they are in a cool-off or self-excluded
    (``code`` ``limit_reached`` or ``excluded``; ``resets_at``: when it may go). Nothing was charged."""

    def __init__(self, code: ErrorCode, message: str, resets_at: dt.datetime | None) -> None:
        super().__init__(message)
        self.code = code
        self.resets_at = resets_at
