"""Why the cashier did not take a deposit or handle an update; each maps to a protocol error code."""

from __future__ import annotations

import datetime as dt

from protocol import ErrorCode

from ..db.transactions import DatabaseUnavailable


class CashierError(Exception):
    """Base of the cashier's failures. ``code`` is the protocol error code to answer with, ``field``
    the request field it is about (or None)."""

    code: ErrorCode = ErrorCode.INTERNAL
    field: str | None = None
    resets_at: dt.datetime | None = None
    """When the player may try again (their own limits), if it says."""


class DepositRefused(CashierError):
    """The deposit is not taken (a limit, deposits not enabled): no order was written, or none stays pending."""

    code = ErrorCode.DEPOSIT_REFUSED

    def __init__(self, message: str, field: str | None = "stars") -> None:
        super().__init__(message)
        self.field = field


class DepositOverLimit(CashierError):
    """The player's own deposit limit, cool-off or self-exclusion refuses the deposit (``code``
    ``limit_reached`` or ``excluded``; ``resets_at``: when it may go). No order was written."""

    def __init__(self, code: ErrorCode, message: str, resets_at: dt.datetime | None) -> None:
        super().__init__(message)
        self.code = code
        self.field = "stars"
        self.resets_at = resets_at


class BotApiUnavailable(CashierError):
    """The Bot API did not answer, or answered an error: retry later. A deposit's order was cancelled."""

    code = ErrorCode.UNAVAILABLE


class CashierUnavailable(CashierError, DatabaseUnavailable):
    """PostgreSQL did not answer: nothing was committed. The cashier passes it to
    :func:`~server.db.transactions.in_transaction` as the error to raise."""

    code = ErrorCode.UNAVAILABLE
