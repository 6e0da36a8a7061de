"""``POST /telegram/webhook``: the Bot API's updates, authenticated by the webhook's secret token.

Telegram sends the secret given to ``setWebhook`` in ``X-Telegram-Bot-Api-Secret-Token`` with every
update. A request without it, or with another value (compared in constant time), is answered 401 and
nothing in it is read. Then the update is parsed with aiogram (``Update.model_validate``) and handled
inside the request, never behind a queue, by the :class:`~.router.UpdateRouter` (which long polling
uses too): a ``pre_checkout_query`` is answered at once (Telegram cancels the checkout after 10 s), a
``message.successful_payment`` is credited and committed, a refund reversed, a command answered, and
only then is 200 answered. An update of a kind nothing handles is answered 200. Telegram delivers an
update again when the answer is not a 2xx: 503 when PostgreSQL or the Bot API did not answer (nothing
committed: the re-delivery is handled as new), 400 for a body that is not an update; a re-delivered
update that was handled is answered 200 and changes nothing (:mod:`.updates`).
"""

from __future__ import annotations

import hmac
import logging

import orjson
from aiogram import Bot
from aiogram.types import Update
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..db.transactions import DatabaseUnavailable
from .errors import BotApiUnavailable
from .router import UpdateRouter

log = logging.getLogger(__name__)

PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret
MAX_BODY_BYTES = 1 << 20
"""Largest update body read (Telegram's are a few KiB; a message with every field stays far below)."""


def secret_matches(given: str | None, secret: str) -> bool:
    """Whether the header's value is the secret, compared in constant time (False when absent)."""
    return given is not None and hmac.compare_digest(given.encode(), secret.encode())


class TelegramWebhook:
    """The endpoint for one bot: its secret, its bot (to parse updates), where updates go (its router)."""

    def __init__(self, secret: str, bot: Bot, router: UpdateRouter) -> None:
        self._secret = secret
        self._bot = bot
        self._router = router

    async def handle(self, request: Request) -> Response:
        """Answer one webhook request: 401, 413, 400, 503 or (handled, or nothing to do) 200."""
        if not secret_matches(request.headers.get(SECRET_HEADER), self._secret):
            log.info("webhook request refused: missing or wrong secret token")
            return JSONResponse({"error": "unauthorized"}, 401)
        body = await _read(request)
        if body is None:
            return JSONResponse({"error": f"the body exceeds {MAX_BODY_BYTES} bytes"}, 413)
        try:
            update = Update.model_validate(orjson.loads(body), context={"bot": self._bot})
        except ValueError as exc:  # not JSON (orjson.JSONDecodeError), or not an update (pydantic's ValidationError)
            log.warning("webhook request is not an update: %s", type(exc).__name__)
            return JSONResponse({"error": "the body is not a Telegram update"}, 400)
        try:
            await self._router.handle(update)
        except (DatabaseUnavailable, BotApiUnavailable) as exc:
            log.warning("update %d not handled now (Telegram delivers it again): %s", update.update_id, exc)
            return JSONResponse({"error": "unavailable; deliver again"}, 503)
        return Response(status_code=200)


async def _read(request: Request) -> bytes | None:
    """The body, or None past :data:`MAX_BODY_BYTES` (read no further)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
    except ClientDisconnect:
        return b""
    return b"".join(chunks)
