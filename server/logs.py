"""Structured logs: one JSON line per event (or a readable line in development), secrets scrubbed.

Every module logs with the standard library (``logging.getLogger(__name__)``); :func:`configure`
routes the root logger, uvicorn's loggers among them, through structlog's ``ProcessorFormatter``:

- ``CROUPIER_LOG_FORMAT=json`` (the default outside ``CROUPIER_DEV``): one JSON object per line with
  ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (the message), ``node`` (the node id), the
  context bound where the line was logged (a socket's ``session``, ``user_id`` and the ``request_id``
  of the request being answered: :func:`bind`), the ``code`` of an error answered, and ``exception``
  (the traceback) for an unexpected error, which is logged once where it is caught.
- ``console`` (the default with ``CROUPIER_DEV=1``): the same fields, aligned for a person.

Secrets never reach a line: every rendered line passes :class:`Redactor`, which replaces the bot token,
the webhook secret, the admin keys and anything shaped like a bot token, an initData ``hash`` or
``signature``, or a ``Bearer`` credential with ``[redacted]``. Code must still not log initData or
tokens (tests grep a full run's log for them); the redactor is the second line of defence.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console"]
REDACTED = "[redacted]"

_SHAPES = re.compile(
    r"\b\d{5,}:[A-Za-z0-9_-]{30,}\b"  # a bot token: <bot id>:<35 characters>
    r"|(?<=hash=)[0-9a-f]{64}"  # initData's HMAC
    r"|(?<=signature=)[A-Za-z0-9_-]{40,}"  # initData's Ed25519 signature
    r"|(?<=Bearer )\S+",  # an Authorization header's credential
    re.IGNORECASE,
)


class Redactor:
    """Replaces the configured secrets, and strings shaped like secrets, in rendered log lines."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        known = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)
        self._known = re.compile("|".join(re.escape(s) for s in known)) if known else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced by ``[redacted]``."""
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        return _SHAPES.sub(REDACTED, text)


def bind(**context: object) -> None:
    """Add ``context`` to every line logged from here in this task (a socket's session, user, request)."""
    structlog.contextvars.bind_contextvars(**context)


@contextlib.contextmanager
def bound(**context: object) -> Iterator[None]:
    """:func:`bind` ``context`` for the ``with`` block only (a request's id while it is answered)."""
    tokens = structlog.contextvars.bind_contextvars(**context)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def configure(level: str, log_format: LogFormat, *, node_id: str, secrets: Iterable[str | None] = (),
              stream: TextIO | None = None) -> None:  # fmt: skip
    """Send every log record of the process (uvicorn's too) to ``stream`` (stderr) in ``log_format`` at
    ``level``, with ``secrets`` (the bot token, the webhook secret, admin keys) redacted."""
    redact = Redactor(secrets)

    def add_node(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("node", node_id)
        event.pop("color_message", None)  # uvicorn's copy of the message with terminal colours
        return event

    chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        add_node,
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        chain.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer, _redacting(redact)],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # theirs go through the root's handler
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*chain, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def _redacting(redact: Redactor) -> Processor:
    def processor(_: WrappedLogger, __: str, rendered: Any) -> Any:
        return redact(rendered) if isinstance(rendered, str) else rendered

    return processor
