"""The per-connection session: a small state machine from decoded frames to replies.

It knows nothing of sockets: the endpoint feeds it frames and writes out what it
returns (:class:`Outcome`: replies in order, then maybe a close code). States:
``awaiting_auth`` -> ``ready`` -> ``closed``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from time import perf_counter
from typing import Protocol

import orjson

from protocol import CloseCode, ErrorCode, ProtocolError
from protocol import messages as m

from ..auth import InitDataError
from ..clock import now_ms
from ..db import UNAVAILABLE_ERRORS
from ..leaderboards import SCOPE_ALL, LeaderboardUnavailable
from ..ledger import BetRequest, LedgerError, PlacedBet
from ..ledger.signin import AccountBlocked
from ..logs import bind
from ..metrics import ACTION_SECONDS, AUTH, BET_SECONDS, DEPOSIT_SECONDS, FRAMES_IN, FRAMES_OUT, READS
from ..players import InvalidLimit
from ..players.limits import SESSION_BREAK
from ..rounds.engine import CheckedBet, RoundRefused
from ..rounds.events import game_channel
from ..rounds.handler import InvalidBet
from ..telegram import CashierError
from .audience import Peer
from .frame import Frame
from .ratelimit import RateLimiter
from .services import SessionServices

log = logging.getLogger(__name__)


_STORE_FAILURES: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, LedgerError)


_GAME_REQUESTS = (m.Subscribe, m.Unsubscribe, m.Bet, m.Action, m.History)
"""Requests that name a game."""


class State(Enum):
    AWAITING_AUTH = "awaiting_auth"
    READY = "ready"
    CLOSED = "closed"


@dataclass(slots=True)
class Outcome:
    """What the endpoint must do after one frame: send ``replies`` in order, then close if ``close``
    is set. (Events about money never come from here: the ledger's outbox relay sends them.)"""

    replies: list[m.ServerMessage] = field(default_factory=list)
    close: CloseCode | None = None
    reason: str = ""


def _error(request_id: m.RequestId | None, code: ErrorCode, message: str, field: str | None = None) -> m.Error:
    if log.isEnabledFor(logging.DEBUG):  # every refusal, for debugging a client (off by default: hot path)
        log.debug("request %r refused: %s", request_id, message, extra={"request_id": request_id, "code": code.value})
    return m.Error(id=request_id, code=code.value, message=message, field=field)


def _limited(reply: m.Error, resets_at: dt.datetime | None) -> m.Error:
    """``reply`` with ``resets_at`` when it is a player's own limit (``limit_reached``, ``excluded``)."""
    if reply.code in (ErrorCode.LIMIT_REACHED, ErrorCode.EXCLUDED):
        reply.resets_at = None if resets_at is None else int(resets_at.timestamp() * 1000)
    return reply


def _unavailable(request_id: m.RequestId, retry: str = "retry shortly") -> Outcome:
    """The reply to a request the database could not serve now (the client retries; nothing was done)."""
    return Outcome([_error(request_id, ErrorCode.UNAVAILABLE, f"database unavailable; {retry}")])


class SocketPeer(Peer, Protocol):
    """The session's own socket: a :class:`Peer` that can also be closed (e.g. replaced by a newer one)."""

    def close(self, code: CloseCode, reason: str) -> None:
        """Close the socket after what is queued."""
        ...


class Session:
    """One authenticated (or authenticating) WebSocket client.

    ``services`` is what it uses of its node (:class:`~server.edge.services.SessionServices`; a
    :class:`~server.node.Node` is one); ``clock`` (monotonic seconds) times its rate limits.
    """

    __slots__ = ("_clock", "_limiter", "_malformed", "_play_timer", "_watching", "address", "codec", "peer", "services",
                 "session_id", "state", "subscriptions", "user")  # fmt: skip

    def __init__(self, services: SessionServices, peer: SocketPeer, *,
                 clock: Callable[[], float] = time.monotonic, address: str | None = None) -> None:  # fmt: skip
        self.services = services
        self.address = address
        """The client's address (behind a trusted proxy, the one it forwarded), recorded at sign-in for the
        risk flags (:mod:`server.risk.addresses`)."""
        self.peer = peer
        self.codec = peer.codec
        self.state = State.AWAITING_AUTH
        self.user: m.User | None = None
        self.session_id = secrets.token_urlsafe(12)
        self.subscriptions: tuple[str, ...] = ()  # the games subscribed to (a set would be 216 bytes)
        self._clock = clock
        self._malformed: list[float] = []  # times of recent malformed frames (most sockets send none)
        self._watching = False  # a leaderboard is pushed to this socket
        self._play_timer: asyncio.TimerHandle | None = None  # ends the player's session time limit
        self._limiter = RateLimiter(services.settings.rate_limit, services.settings.rate_burst, clock=clock)

    async def detach(self) -> None:
        """The socket is gone: stop receiving pushes."""
        if self.user is not None:
            await self.services.feeds.leave(self.user.id, self.peer)
            await self.services.user_limits.release(self.user.id, self.session_id)
        for game in self.subscriptions:
            self.services.audience.remove(game_channel(game), self.peer)
        self.subscriptions = ()
        if self._watching:
            self.services.leaderboards.unwatch(self)
        if self._play_timer is not None:
            self._play_timer.cancel()
        self.state = State.CLOSED

    async def receive(self, frame: bytes | str) -> Outcome:
        """Handle one frame and say what to send back."""
        if self.state is State.CLOSED:
            return Outcome()
        if not self._limiter.allow():
            FRAMES_IN.of(None).n += 1  # not read: "other"
            return self._rate_limited(frame)
        try:
            request = self.codec.decode(frame)
        except ProtocolError as exc:
            FRAMES_IN.of(exc.message_type).n += 1
            return self._malformed_frame(exc)
        FRAMES_IN.of(type(request)).n += 1
        try:
            if self.state is State.AWAITING_AUTH:
                if not isinstance(request, m.Auth):
                    AUTH["required"].n += 1
                    return self._close(
                        _error(request.id, ErrorCode.AUTH_REQUIRED, "send auth with your initData first"),
                        CloseCode.UNAUTHORIZED,
                        "auth required",
                    )
                return await self._authenticate(request)
            return await self._dispatch(request)
        except Exception:
            # A fault of the server, not of the client: this request alone fails, the socket stays open.
            log.exception("internal error answering %s request %r (session %s)", type(request).__name__, request.id,
                          self.session_id, extra={"request_id": request.id, "code": "internal"})  # fmt: skip
            message = "internal error: the request failed and was logged; retry (a bet with the same key)"
            return Outcome([_error(request.id, ErrorCode.INTERNAL, message)])

    def _rate_limited(self, frame: bytes | str) -> Outcome:
        """Over the rate: the request is not looked at (nothing charged); ignoring that closes with 4429."""
        request_id = self.codec.request_id(frame)
        reply = _error(request_id, ErrorCode.RATE_LIMITED,
                       f"more than {self.services.settings.rate_limit:g} requests a second; slow down")  # fmt: skip
        if self._limiter.exhausted:
            return self._close(reply, CloseCode.RATE_LIMITED, "rate limit exceeded repeatedly")
        return Outcome([reply])

    def auth_timed_out(self) -> Outcome:
        """The handshake timeout passed without a successful ``auth``."""
        self.state = State.CLOSED
        AUTH["timeout"].n += 1
        return Outcome(close=CloseCode.AUTH_TIMEOUT, reason="auth timeout")

    def _close(self, reply: m.Error, code: CloseCode, reason: str) -> Outcome:
        self.state = State.CLOSED
        return Outcome([reply], code, reason)

    def _malformed_frame(self, exc: ProtocolError) -> Outcome:
        if self.state is State.AWAITING_AUTH and exc.message_type != "auth":
            AUTH["required"].n += 1
            return self._close(
                _error(exc.request_id, ErrorCode.AUTH_REQUIRED, f"send auth with your initData first ({exc.message})"),
                CloseCode.UNAUTHORIZED,
                "auth required",
            )
        reply = _error(exc.request_id, exc.code, exc.message, exc.field)
        now = self._clock()
        window = self.services.settings.malformed_window
        self._malformed = [t for t in self._malformed if t >= now - window]
        self._malformed.append(now)
        if len(self._malformed) > self.services.settings.malformed_limit:
            return self._close(reply, CloseCode.PROTOCOL_ABUSE, "too many malformed messages")
        return Outcome([reply])

    async def _authenticate(self, request: m.Auth) -> Outcome:
        try:
            init_data = self.services.validator.validate(request.init_data)
        except InitDataError as exc:
            AUTH.of(exc.kind.value).n += 1
            log.info("auth refused: %s", exc.kind.value)
            return self._close(
                _error(request.id, ErrorCode.UNAUTHORIZED, f"{exc.kind.value}: {exc}", "init_data"),
                CloseCode.UNAUTHORIZED,
                "unauthorized",
            )
        user = init_data.user
        if user is None:
            AUTH["no_user"].n += 1
            return self._close(
                _error(request.id, ErrorCode.UNAUTHORIZED, "initData carries no user", "init_data"),
                CloseCode.UNAUTHORIZED,
                "unauthorized",
            )
        try:
            wallet = await self.services.ledger.sign_in(user)
        except AccountBlocked:
            AUTH.of("blocked").n += 1
            log.info("auth of user %d refused: the account is blocked", user.id)
            return self._close(
                _error(request.id, ErrorCode.FORBIDDEN, "this account is blocked; write to the operator's support"),
                CloseCode.FORBIDDEN,
                "account blocked",
            )
        except _STORE_FAILURES as exc:
            AUTH["unavailable"].n += 1
            log.warning("auth of user %d failed: database unavailable (%s)", user.id, type(exc).__name__)
            return _unavailable(request.id, "retry auth shortly")
        if wallet.session_limited:
            refused = await self._check_play_time(request.id, user.id)
            if refused is not None:
                return refused
        if self.address is not None:
            self.services.signin_addresses.record(user.id, self.address)
        missed: list[bytes] | None = None
        if request.since is not None and request.since.epoch == self.services.ledger.epoch:
            try:
                missed = await self.services.relay.missed(user.id, request.since.offset, wallet.version)
            except _STORE_FAILURES:
                missed = None  # resume is best effort: the welcome's balance is the truth
        self.user = user
        self.state = State.READY
        AUTH["ok"].n += 1
        await self.services.feeds.join(user.id, self.peer, wallet.version)
        self.services.feeds.confirm_balance(user.id, wallet.balance, wallet.version)  # read by the sign-in
        await self.services.user_limits.admit(user.id, self.session_id, self.peer.close)
        bind(user_id=user.id, session=self.session_id)  # every later line of this socket's task carries them
        log.info("user %d authenticated (session %s)", user.id, self.session_id)
        games = self.services.rounds.games()
        welcome = m.Welcome(
            id=request.id,
            user=user,
            balance=wallet.balance,
            session=self.session_id,
            server_time=now_ms(),
            games=list(games),
            offset=wallet.version,
            epoch=self.services.ledger.epoch,
            limits={game: self.services.rounds.limits(game) for game in games},
            game_info={game: self.services.rounds.game_info(game) for game in games},
        )
        if request.since is not None:
            welcome.recovered = missed is not None
            welcome.missed = [orjson.loads(event) for event in missed or ()]
        return Outcome([welcome])

    async def _check_play_time(self, request_id: m.RequestId, user_id: int) -> Outcome | None:
        """Under a session time limit: refuse the sign-in in the break after a session, or end this socket's
        session when the limit runs out (None: go on)."""
        try:
            check = await self.services.responsible.sign_in(user_id)
        except _STORE_FAILURES:
            AUTH["unavailable"].n += 1
            return _unavailable(request_id, "retry auth shortly")
        if check is None:
            return None
        if check.refusal is not None:
            AUTH.of("play_time").n += 1
            reply = _limited(_error(request_id, check.refusal.code, check.refusal.message), check.refusal.resets_at)
            return self._close(reply, CloseCode.PLAY_TIME_LIMIT, "session time limit")
        if check.ends_at is not None:
            delay = max(0.0, check.ends_at.timestamp() - time.time())
            self._play_timer = asyncio.get_running_loop().call_later(delay, self._play_time_over, check.ends_at)
        return None

    def _play_time_over(self, ended_at: dt.datetime) -> None:
        """The player's session time limit ran out: tell them when they may come back, then close."""
        self._play_timer = None
        if self.state is State.CLOSED:
            return
        reply = _error(None, ErrorCode.LIMIT_REACHED, "your session time limit is used up: take a break")
        self._push(_limited(reply, ended_at + SESSION_BREAK))
        self.state = State.CLOSED
        self.peer.close(CloseCode.PLAY_TIME_LIMIT, "session time limit")

    async def _dispatch(self, request: m.Request) -> Outcome:
        assert self.user is not None
        if not await self.services.user_limits.allow(self.user.id):
            return Outcome([_error(request.id, ErrorCode.RATE_LIMITED,
                                   f"your sockets together send more than {self.services.settings.user_rate_limit:g} "
                                   "requests a second; slow down")])  # fmt: skip
        if isinstance(request, _GAME_REQUESTS) and (self.services.rounds.rules(request.game) is None):
            return Outcome([self._unknown_game(request.id, request.game)])
        match request:
            case m.Ping():
                return Outcome([m.Pong(id=request.id, server_time=now_ms())])
            case m.Bet():
                started = perf_counter()
                outcome = await self._bet(request, self.user.id)
                BET_SECONDS.observe(perf_counter() - started)
                return outcome
            case m.BalanceRequest():
                return await self._balance(request, self.user.id)
            case m.Subscribe():
                return await self._subscribe(request)
            case m.Unsubscribe():
                if request.game not in self.subscriptions:
                    return Outcome([_error(request.id, ErrorCode.NOT_SUBSCRIBED, f"not subscribed to {request.game}")])
                self.subscriptions = tuple(game for game in self.subscriptions if game != request.game)
                self.services.audience.remove(game_channel(request.game), self.peer)
                return Outcome([m.Ok(id=request.id)])
            case m.History():
                return await self._history(request)
            case m.Action():
                started = perf_counter()
                outcome = await self._action(request, self.user.id)
                ACTION_SECONDS.observe(perf_counter() - started)
                return outcome
            case m.Deposit():
                started = perf_counter()
                outcome = await self._deposit(request, self.user.id)
                DEPOSIT_SECONDS.observe(perf_counter() - started)
                return outcome
            case m.MyBets():
                return await self._my_bets(request, self.user.id)
            case m.MyTransactions():
                return await self._my_transactions(request, self.user.id)
            case m.Leaderboard():
                return await self._leaderboard(request, self.user.id)
            case m.Limits() | m.SetLimit() | m.Exclude():
                return await self._limits(request, self.user.id)
            case m.Auth():
                return Outcome([_error(request.id, ErrorCode.BAD_REQUEST, "this socket is already authenticated", "t")])
        return Outcome([_error(request.id, ErrorCode.UNKNOWN_TYPE, f"unhandled message type {type(request).__name__}")])

    async def _balance(self, request: m.BalanceRequest, user_id: int) -> Outcome:
        try:
            balance = await self._wallet_balance(user_id)
        except UNAVAILABLE_ERRORS:
            return _unavailable(request.id)
        return Outcome([m.Balance(id=request.id, balance=balance)])

    async def _wallet_balance(self, user_id: int) -> int:
        """The user's balance: as this node knows it (read at sign-in or carried by an event, nothing missing
        since: :meth:`.feeds.UserFeeds.balance`), else read from the database and remembered."""
        known = self.services.feeds.balance(user_id)
        if known is not None:
            READS["balance", "memory"].n += 1
            return known
        READS["balance", "database"].n += 1
        wallet = await self.services.ledger.balance(user_id)
        self.services.feeds.confirm_balance(user_id, wallet.balance, wallet.version)
        return wallet.balance

    async def _bet(self, request: m.Bet, user_id: int) -> Outcome:
        params = self._checked_params(request)
        if isinstance(params, m.Error):
            if request.key is not None and params.code in (ErrorCode.BETTING_CLOSED, ErrorCode.ROUND_MISMATCH):
                # A retry of a bet placed before its round moved on must still get its first answer.
                return await self._replay_or(request, user_id, params)
            return Outcome([params])
        bet = BetRequest(user_id, request.game, request.round, request.amount, params.params, request.key,
                         exposure=params.exposure, exposure_cap=params.exposure_cap,
                         client_seed=request.client_seed)  # fmt: skip
        try:
            placed = await self.services.ledger.place_bet(bet)
        except LedgerError as exc:
            return Outcome([_limited(_error(request.id, exc.code, str(exc)), exc.resets_at)])
        return self._bet_ok(request, placed)

    async def _replay_or(self, request: m.Bet, user_id: int, refusal: m.Error) -> Outcome:
        params = self.services.rounds.handler_params(request.game, request.params, request.amount)
        bet = BetRequest(user_id, request.game, request.round, request.amount, params, request.key)
        try:
            prior = await self.services.ledger.replay(bet)
        except UNAVAILABLE_ERRORS:
            return _unavailable(request.id)
        if prior is None:
            return Outcome([refusal])
        if isinstance(prior, LedgerError):
            return Outcome([_error(request.id, prior.code, str(prior))])
        return self._bet_ok(request, prior)

    def _bet_ok(self, request: m.Bet, placed: PlacedBet) -> Outcome:
        view = m.BetView(id=placed.bet_id, game=placed.game, round=placed.round_id, amount=placed.amount,
                         params=placed.params, status=placed.status)  # fmt: skip
        reply = m.BetOk(id=request.id, bet=view, balance=placed.balance)
        return Outcome([reply])

    async def _subscribe(self, request: m.Subscribe) -> Outcome:
        missed = None
        if request.since is not None:
            missed = await self.services.rounds.missed_since(request.game, request.since.offset, request.since.epoch)
        # No await from here: the snapshot is at the offset ``missed`` ends at, and every later event reaches
        # this socket (after this reply) with no gap and nothing twice.
        if request.game not in self.subscriptions:
            self.subscriptions += (request.game,)
        self.services.audience.add(game_channel(request.game), self.peer)
        snapshot, offset, epoch = self.services.rounds.snapshot(request.game)
        return Outcome([m.Subscribed(id=request.id, game=request.game, round=snapshot, offset=offset, epoch=epoch,
                                     recovered=missed is not None, missed=missed or [],
                                     limits=self.services.rounds.limits(request.game),
                                     game_info=self.services.rounds.game_info(request.game))])  # fmt: skip

    async def _history(self, request: m.History) -> Outcome:
        try:
            rounds = await self.services.rounds.history(request.game, request.limit)
        except UNAVAILABLE_ERRORS:
            return _unavailable(request.id)
        return Outcome([m.HistoryReply(id=request.id, rounds=rounds)])

    async def _action(self, request: m.Action, user_id: int) -> Outcome:
        try:
            result = await self.services.rounds.action(request.game, request.round, user_id, request.action,
                                                   request.params)  # fmt: skip
            balance = await self._wallet_balance(user_id)
        except RoundRefused as exc:
            return Outcome([_error(request.id, exc.code, str(exc), exc.field)])
        except LedgerError as exc:
            return Outcome([_error(request.id, exc.code, str(exc))])
        except UNAVAILABLE_ERRORS:
            return _unavailable(request.id)
        return Outcome([m.ActionOk(id=request.id, result=result, balance=balance)])

    async def _deposit(self, request: m.Deposit, user_id: int) -> Outcome:
        try:
            invoice = await self.services.cashier.deposit(user_id, request.stars)
        except CashierError as exc:
            return Outcome([_limited(_error(request.id, exc.code, str(exc), exc.field), exc.resets_at)])
        except UNAVAILABLE_ERRORS:
            return _unavailable(request.id)
        return Outcome([m.Invoice(id=request.id, url=invoice.url, order=invoice.order_id, stars=invoice.stars,
                                  chips=invoice.chips)])  # fmt: skip

    async def _my_bets(self, request: m.MyBets, user_id: int) -> Outcome:
        READS["my_bets", "database"].n += 1
        try:
            page = await self.services.players.bets(user_id, request.game, request.cursor, request.limit)
        except UNAVAILABLE_ERRORS:
            return _unavailable(request.id)
        return Outcome([m.MyBetsReply(id=request.id, bets=page.items, next=page.next)])

    async def _my_transactions(self, request: m.MyTransactions, user_id: int) -> Outcome:
        READS["my_transactions", "database"].n += 1
        try:
            page = await self.services.players.transactions(user_id, request.cursor, request.limit)
        except UNAVAILABLE_ERRORS:
            return _unavailable(request.id)
        return Outcome([m.MyTransactionsReply(id=request.id, transactions=page.items, next=page.next)])

    async def _leaderboard(self, request: m.Leaderboard, user_id: int) -> Outcome:
        if request.game != SCOPE_ALL and self.services.rounds.rules(request.game) is None:
            return Outcome([self._unknown_game(request.id, request.game)])
        boards = self.services.leaderboards
        try:
            board = await boards.standings(request.game, request.metric, request.period, request.limit, user_id)
        except LeaderboardUnavailable:
            return Outcome([_error(request.id, ErrorCode.UNAVAILABLE, "leaderboards unavailable; retry shortly")])
        except UNAVAILABLE_ERRORS:
            return _unavailable(request.id)
        if request.watch is not None:
            if request.watch:
                boards.watch(self, user_id, board, request.limit, self._push)
            elif self._watching:
                boards.unwatch(self)
            self._watching = request.watch
        board.id = request.id
        return Outcome([board])

    async def _limits(self, request: m.Limits | m.SetLimit | m.Exclude, user_id: int) -> Outcome:
        limits = self.services.responsible
        READS["limits", "database"].n += 1
        try:
            match request:
                case m.SetLimit():
                    reply = await limits.set_limit(user_id, request.kind, request.period, request.amount, request.id)
                case m.Exclude():
                    reply = await limits.exclude(user_id, request.kind, request.days, request.id)
                case _:
                    reply = await limits.state(user_id, request.id)
        except InvalidLimit as exc:
            return Outcome([_error(request.id, ErrorCode.BAD_REQUEST, str(exc), exc.field)])
        except UNAVAILABLE_ERRORS:
            return _unavailable(request.id)
        return Outcome([reply])

    def _push(self, message: m.ServerMessage) -> None:
        """Queue a push for this socket (a watched leaderboard)."""
        self.peer.put(Frame(self.codec.encode(message), self.codec.binary))
        FRAMES_OUT.of(type(message)).n += 1

    def _unknown_game(self, request_id: m.RequestId, game: str) -> m.Error:
        games = ", ".join(self.services.rounds.games()) or "none"
        return _error(request_id, ErrorCode.UNKNOWN_GAME, f"no game named {game!r} (games: {games})", "game")

    def _checked_params(self, request: m.Bet) -> CheckedBet | m.Error:
        """The bet as the game accepts it (normalised params, exposure), or the error to answer with."""
        rules = self.services.rounds.rules(request.game)
        assert rules is not None
        if request.amount < rules.min_bet:
            return _error(request.id, ErrorCode.INVALID_BET, f"amount is below the minimum bet of {rules.min_bet}",
                          "amount")  # fmt: skip
        if request.amount > rules.max_bet:
            return _error(request.id, ErrorCode.INVALID_BET, f"amount is above the maximum bet of {rules.max_bet}",
                          "amount")  # fmt: skip
        try:
            size = len(orjson.dumps(request.params))
        except TypeError:
            return _error(request.id, ErrorCode.INVALID_BET, "params must hold JSON values only", "params")
        if size > rules.max_params_bytes:
            return _error(request.id, ErrorCode.INVALID_BET,
                          f"params take {size} bytes; the limit is {rules.max_params_bytes}", "params")  # fmt: skip
        try:
            return self.services.rounds.validate_bet(request.game, request.round, request.amount, request.params)
        except RoundRefused as exc:
            return _error(request.id, exc.code, str(exc), exc.field)
        except InvalidBet as exc:
            return _error(request.id, ErrorCode.INVALID_BET, str(exc), exc.field)
