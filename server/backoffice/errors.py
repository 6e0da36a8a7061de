"""Why the back office refused an operation, and what each refusal is over HTTP.

The operations (shared by ``/admin/api`` and the ``croupier`` command) raise :class:`OfficeError`, or let
the ledger's and the round engine's own refusals through; :func:`refusal` says what status and code each
is, so a route answers and a command prints the same thing.
"""

from __future__ import annotations

from protocol import ErrorCode

from ..db import UNAVAILABLE_ERRORS
from ..db.transactions import DatabaseUnavailable
from ..ledger import IdempotencyConflict, InsufficientFunds, LedgerError, UnknownAccount
from ..rounds.errors import RoundRefused


class OfficeError(Exception):
    """A refusal of the back office: ``status`` (HTTP), ``code`` (a word for programs), ``field`` (what was
    wrong in the request, if one thing was)."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Invalid(OfficeError):
    """The request is malformed or out of range: nothing was done."""


class NotFound(OfficeError):
    """No such user, round or route target."""

    status = 404
    code = "not_found"


class Conflict(OfficeError):
    """The request cannot be applied to the state it found (a round already settled, a key reused)."""

    status = 409
    code = "conflict"


class TooLarge(OfficeError):
    """The request's body is over the limit."""

    status = 413
    code = "too_large"


def refusal(exc: Exception) -> tuple[int, str, str | None] | None:
    """(status, code, field) of an error an operation may raise, or None for a fault of the server."""
    if isinstance(exc, OfficeError):
        return exc.status, exc.code, exc.field
    if isinstance(exc, (DatabaseUnavailable, *UNAVAILABLE_ERRORS)):  # LedgerUnavailable too
        return 503, "unavailable", None
    if isinstance(exc, UnknownAccount):
        return 404, "not_found", None
    if isinstance(exc, IdempotencyConflict):
        return 409, "idempotency_conflict", "idempotency_key"
    if isinstance(exc, InsufficientFunds):
        return 409, "insufficient_funds", "amount"
    if isinstance(exc, LedgerError):
        return 409, exc.code.value, None
    if isinstance(exc, RoundRefused):
        if exc.code is ErrorCode.UNAVAILABLE:
            return 503, "unavailable", None
        return 409, "conflict", exc.field
    return None
