"""The per-connection session: a small state machine from decoded frames to replies.

It knows nothing of sockets: the endpoint feeds it frames and writes out what it
returns (:class:`Outcome`: replies in order, then maybe a close code). States:
``awaiting_auth`` -> ``ready`` -> ``closed``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from protocol import CloseCode, Codec, ErrorCode, ProtocolError
from protocol import messages as m

from ..auth import InitDataError, TelegramUser
from ..db import UNAVAILABLE_ERRORS
from ..node import Node

log = logging.getLogger(__name__)


class State(Enum):
    AWAITING_AUTH = "awaiting_auth"
    READY = "ready"
    CLOSED = "closed"


@dataclass(slots=True)
class Outcome:
    """What the endpoint must do after one frame: send ``replies`` in order, then close if ``close`` is set."""

    replies: list[m.ServerMessage] = field(default_factory=list)
    close: CloseCode | None = None
    reason: str = ""


def _error(request_id: m.RequestId | None, code: ErrorCode, message: str, field: str | None = None) -> m.Error:
    return m.Error(id=request_id, code=code.value, message=message, field=field)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Session:
    """One authenticated (or authenticating) WebSocket client."""

    def __init__(self, node: Node, codec: Codec, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.codec = codec
        self.state = State.AWAITING_AUTH
        self.user: TelegramUser | None = None
        self.session_id = secrets.token_urlsafe(12)
        self._clock = clock
        self._malformed: deque[float] = deque()

    async def receive(self, frame: bytes | str) -> Outcome:
        """Handle one frame and say what to send back."""
        if self.state is State.CLOSED:
            return Outcome()
        try:
            request = self.codec.decode(frame)
        except ProtocolError as exc:
            return self._malformed_frame(exc)
        if self.state is State.AWAITING_AUTH:
            if not isinstance(request, m.Auth):
                return self._close(
                    _error(request.id, ErrorCode.AUTH_REQUIRED, "send auth with your initData first"),
                    CloseCode.UNAUTHORIZED,
                    "auth required",
                )
            return await self._authenticate(request)
        return await self._dispatch(request)

    def auth_timed_out(self) -> Outcome:
        """The handshake timeout passed without a successful ``auth``."""
        self.state = State.CLOSED
        return Outcome(close=CloseCode.AUTH_TIMEOUT, reason="auth timeout")

    def _close(self, reply: m.Error, code: CloseCode, reason: str) -> Outcome:
        self.state = State.CLOSED
        return Outcome([reply], code, reason)

    def _malformed_frame(self, exc: ProtocolError) -> Outcome:
        if self.state is State.AWAITING_AUTH and exc.message_type != "auth":
            return self._close(
                _error(exc.request_id, ErrorCode.AUTH_REQUIRED, f"send auth with your initData first ({exc.message})"),
                CloseCode.UNAUTHORIZED,
                "auth required",
            )
        reply = _error(exc.request_id, exc.code, exc.message, exc.field)
        now = self._clock()
        window = self.node.settings.malformed_window
        self._malformed.append(now)
        while self._malformed and self._malformed[0] < now - window:
            self._malformed.popleft()
        if len(self._malformed) > self.node.settings.malformed_limit:
            return self._close(reply, CloseCode.PROTOCOL_ABUSE, "too many malformed messages")
        return Outcome([reply])

    async def _authenticate(self, request: m.Auth) -> Outcome:
        try:
            init_data = self.node.validator.validate(request.init_data)
        except InitDataError as exc:
            log.info("auth refused: %s", exc.kind.value)
            return self._close(
                _error(request.id, ErrorCode.UNAUTHORIZED, f"{exc.kind.value}: {exc}", "init_data"),
                CloseCode.UNAUTHORIZED,
                "unauthorized",
            )
        user = init_data.user
        if user is None:
            return self._close(
                _error(request.id, ErrorCode.UNAUTHORIZED, "initData carries no user", "init_data"),
                CloseCode.UNAUTHORIZED,
                "unauthorized",
            )
        try:
            await self.node.users.upsert(user)
            balance = await self.node.balance_of(user.id)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("auth of user %d failed: database unavailable (%s)", user.id, type(exc).__name__)
            return Outcome([_error(request.id, ErrorCode.UNAVAILABLE, "database unavailable; retry auth shortly")])
        self.user = user
        self.state = State.READY
        log.info("user %d authenticated (session %s)", user.id, self.session_id)
        welcome = m.Welcome(
            id=request.id,
            user=m.User(
                id=user.id,
                first_name=user.first_name,
                last_name=user.last_name,
                username=user.username,
                language_code=user.language_code,
                is_premium=user.is_premium,
            ),
            balance=balance,
            session=self.session_id,
            server_time=now_ms(),
            games=list(self.node.games),
        )
        return Outcome([welcome])

    async def _dispatch(self, request: m.Request) -> Outcome:
        assert self.user is not None
        match request:
            case m.Ping():
                return Outcome([m.Pong(id=request.id, server_time=now_ms())])
            case m.BalanceRequest():
                return Outcome([m.Balance(id=request.id, balance=await self.node.balance_of(self.user.id))])
            case m.Auth():
                return Outcome([_error(request.id, ErrorCode.BAD_REQUEST, "this socket is already authenticated", "t")])
            case m.Subscribe() | m.Unsubscribe() | m.Bet() | m.Action() | m.History():
                return Outcome([self._unknown_game(request.id, request.game)])
        return Outcome([_error(request.id, ErrorCode.UNKNOWN_TYPE, f"unhandled message type {type(request).__name__}")])

    def _unknown_game(self, request_id: m.RequestId, game: str) -> m.Error:
        games = ", ".join(self.node.games) or "none yet"
        return _error(request_id, ErrorCode.UNKNOWN_GAME, f"no game named {game!r} (games: {games})", "game")
