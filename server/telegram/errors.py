"""Why the cashier did not take a deposit or handle an update; each maps to a protocol error code."""

from __future__ import annotations

from protocol import ErrorCode

from ..db.transactions import DatabaseUnavailable


class CashierError(Exception):
    """Base of the cashier's failures. ``code`` is the protocol error code to answer with, ``field``
    the request field it is about (or None)."""

    code: ErrorCode = ErrorCode.INTERNAL
    field: str | None = None


class DepositRefused(CashierError):
    """The deposit is not taken (a limit, deposits not enabled): no order was written, or none stays pending."""

    code = ErrorCode.DEPOSIT_REFUSED

    def __init__(self, message: str, field: str | None = "stars") -> None:
        super().__init__(message)
        self.field = field


class BotApiUnavailable(CashierError):
    """The Bot API did not answer, or answered an error: retry later. A deposit's order was cancelled."""

    code = ErrorCode.UNAVAILABLE


class CashierUnavailable(CashierError, DatabaseUnavailable):
    """PostgreSQL did not answer: nothing was committed. The cashier passes it to
    :func:`~server.db.transactions.in_transaction` as the error to raise."""

    code = ErrorCode.UNAVAILABLE
