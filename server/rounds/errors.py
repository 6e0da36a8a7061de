"""What the round engine answers when it cannot serve a request about a round."""

from __future__ import annotations

from protocol import ErrorCode


class RoundRefused(Exception):
    """A request about a round cannot be served; ``code`` and ``field`` go into the error reply."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
