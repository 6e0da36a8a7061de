"""The session state machine alone: fakes of the services it uses, a fake clock; no server, no database.

The fakes stand in at the :class:`~server.edge.services.SessionServices` boundary only; the same
requests run for real (uvicorn, PostgreSQL, Redis) in ``test_ws.py``, ``test_bets.py`` and the
integration tests. initData is checked by the real validator (pure code).
"""

from __future__ import annotations

import inspect
import logging
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import msgspec
import orjson
import pytest

from protocol import JSON, MSGPACK, CloseCode, Codec, ErrorCode
from protocol import messages as m
from server.auth import HmacVerifier, InitData, InitDataValidator, TelegramUser, sign_init_data
from server.edge.audience import Peer
from server.edge.frame import Frame
from server.edge.services import SessionServices
from server.edge.session import Outcome, Session, State
from server.edge.userlimits import CloseSocket
from server.ledger import BetRequest, InsufficientFunds, LedgerError, PlacedBet, WalletState
from server.rounds import GameRules
from server.rounds.engine import CheckedBet, RoundRefused
from server.rounds.handler import InvalidBet

TOKEN = "42:session-unit-tests"
EPOCH = "epoch-1"


# ---------------------------------------------------------------------------------------------- fakes


@dataclass
class FakeSettings:
    rate_limit: float = 200.0
    rate_burst: int = 400
    user_rate_limit: float = 400.0
    malformed_limit: int = 5
    malformed_window: float = 10.0
    auth_timeout: float = 10.0
    max_frame_bytes: int = 16 * 1024
    send_queue_frames: int = 256


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeLedger:
    epoch: str = EPOCH
    wallets: dict[int, WalletState] = field(default_factory=dict)
    signed_in: list[TelegramUser] = field(default_factory=list)
    placed: list[BetRequest] = field(default_factory=list)
    fail: BaseException | None = None
    """Raised by every call while set (a database outage, a ledger refusal)."""
    prior: PlacedBet | LedgerError | None = None
    """What :meth:`replay` finds for a key."""
    balance_reads: int = 0

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def sign_in(self, user: TelegramUser, /) -> WalletState:
        self._check()
        self.signed_in.append(user)
        return self.wallets.setdefault(user.id, WalletState(1000, 3))

    async def balance(self, user_id: int, /) -> WalletState:
        self._check()
        self.balance_reads += 1
        return self.wallets.get(user_id, WalletState(0, 0))

    async def place_bet(self, request: BetRequest, /) -> PlacedBet:
        self._check()
        self.placed.append(request)
        wallet = self.wallets[request.user_id]
        wallet = self.wallets[request.user_id] = WalletState(wallet.balance - request.amount, wallet.version + 1)
        return PlacedBet(len(self.placed), request.user_id, request.game, request.round_id, request.amount,
                         request.params, "accepted", wallet.balance, wallet.version)  # fmt: skip

    async def replay(self, request: BetRequest, /) -> PlacedBet | LedgerError | None:
        self._check()
        return self.prior


@dataclass
class FakeRelay:
    events: list[bytes] = field(default_factory=list)
    asked: list[tuple[int, int, int]] = field(default_factory=list)

    async def missed(self, user_id: int, after: int, upto: int, /) -> list[bytes] | None:
        self.asked.append((user_id, after, upto))
        return self.events


@dataclass
class FakeFeeds:
    joined: list[tuple[int, Peer, int]] = field(default_factory=list)
    left: list[tuple[int, Peer]] = field(default_factory=list)
    cached: dict[int, int] = field(default_factory=dict)
    confirmed: list[tuple[int, int, int]] = field(default_factory=list)

    async def join(self, user_id: int, peer: Peer, offset: int, /) -> None:
        self.joined.append((user_id, peer, offset))

    async def leave(self, user_id: int, peer: Peer, /) -> None:
        self.left.append((user_id, peer))

    def balance(self, user_id: int, /) -> int | None:
        return self.cached.get(user_id)

    def confirm_balance(self, user_id: int, balance: int, version: int, /) -> None:
        self.confirmed.append((user_id, balance, version))


@dataclass
class FakeUserLimits:
    allowed: bool = True
    admitted: list[tuple[int, str, CloseSocket]] = field(default_factory=list)
    released: list[tuple[int, str]] = field(default_factory=list)

    async def admit(self, user_id: int, session_id: str, close: CloseSocket, /) -> None:
        self.admitted.append((user_id, session_id, close))

    async def release(self, user_id: int, session_id: str, /) -> None:
        self.released.append((user_id, session_id))

    async def allow(self, user_id: int, /) -> bool:
        return self.allowed


@dataclass
class FakeRounds:
    rules_by_game: dict[str, GameRules] = field(
        default_factory=lambda: {"dice": GameRules("dice", min_bet=1, max_bet=1000, max_payout=100_000)}
    )
    refuse: Exception | None = None
    """Raised by :meth:`validate_bet` and :meth:`action` while set."""
    view: dict[str, Any] | None = field(default_factory=lambda: {"round": 7, "phase": "betting"})
    offset: int = 12
    epoch: str = "game-epoch"
    missed: list[dict[str, Any]] | None = None
    rounds: list[m.RoundRecord] = field(default_factory=list)
    history_error: Exception | None = None

    def games(self) -> tuple[str, ...]:
        return tuple(self.rules_by_game)

    def rules(self, game: str, /) -> GameRules | None:
        return self.rules_by_game.get(game)

    def limits(self, game: str, /) -> m.GameLimits:
        rules = self.rules_by_game[game]
        return m.GameLimits(min_bet=rules.min_bet, max_bet=rules.max_bet, max_payout=rules.max_payout)

    def game_info(self, game: str, /) -> m.GameInfo:
        return m.GameInfo(params={"running_ms": 1}, params_schema={"type": "object"}, bet_schema={"type": "object"})

    def validate_bet(self, game: str, round_id: int, amount: int, params: Mapping[str, Any], /) -> CheckedBet:
        if self.refuse is not None:
            raise self.refuse
        return CheckedBet({**params, "normalised": True}, amount * 2, 50_000)

    def handler_params(self, game: str, params: Mapping[str, Any], amount: int, /) -> dict[str, Any]:
        return {**params, "normalised": True}

    def snapshot(self, game: str, /) -> tuple[dict[str, Any] | None, int, str]:
        return self.view, self.offset, self.epoch

    async def missed_since(self, game: str, offset: int, epoch: str, /) -> list[dict[str, Any]] | None:
        return self.missed

    async def action(self, game: str, round_id: int, user_id: int, action: str,
                     params: Mapping[str, Any], /) -> dict[str, Any]:  # fmt: skip
        if self.refuse is not None:
            raise self.refuse
        return {"action": action, "payout": 25}

    async def history(self, game: str, limit: int, /) -> list[m.RoundRecord]:
        if self.history_error is not None:
            raise self.history_error
        return self.rounds[:limit]


@dataclass
class FakeAudience:
    channels: dict[str, set[int]] = field(default_factory=dict)

    def add(self, channel: str, peer: Peer, /) -> None:
        self.channels.setdefault(channel, set()).add(id(peer))

    def remove(self, channel: str, peer: Peer, /) -> None:
        self.channels.get(channel, set()).discard(id(peer))


@dataclass
class Services:
    """A :class:`SessionServices` made of the fakes above."""

    settings: FakeSettings = field(default_factory=FakeSettings)
    validator: InitDataValidator = field(default_factory=lambda: InitDataValidator(HmacVerifier(TOKEN)))
    ledger: FakeLedger = field(default_factory=FakeLedger)
    relay: FakeRelay = field(default_factory=FakeRelay)
    feeds: FakeFeeds = field(default_factory=FakeFeeds)
    user_limits: FakeUserLimits = field(default_factory=FakeUserLimits)
    rounds: FakeRounds = field(default_factory=FakeRounds)
    audience: FakeAudience = field(default_factory=FakeAudience)


class FakePeer:
    def __init__(self, codec: Codec = JSON) -> None:
        self.codec = codec
        self.closed: tuple[CloseCode, str] | None = None

    def put(self, frame: Frame) -> bool:
        return True

    def backlog(self) -> float:
        return 0.0

    def close(self, code: CloseCode, reason: str) -> None:
        self.closed = (code, reason)


def make_session(services: Services | None = None, clock: FakeClock | None = None,
                 codec: Codec = JSON) -> tuple[Session, Services, FakePeer]:  # fmt: skip
    services = services or Services()
    peer = FakePeer(codec)
    session = Session(typing.cast(SessionServices, services), peer, clock=clock or FakeClock())
    return session, services, peer


def frame(message: dict[str, Any]) -> str:
    """A text frame, as a JSON session receives it."""
    return orjson.dumps(message).decode()


def auth_frame(user_id: int = 5, request_id: int = 1, **fields: Any) -> str:
    return frame({"t": "auth", "id": request_id, "init_data": sign_init_data(TOKEN, user_id=user_id), **fields})


async def ready_session(services: Services | None = None, clock: FakeClock | None = None,
                        user_id: int = 5) -> tuple[Session, Services, FakePeer]:  # fmt: skip
    session, services, peer = make_session(services, clock)
    outcome = await session.receive(auth_frame(user_id))
    assert isinstance(outcome.replies[0], m.Welcome), outcome
    return session, services, peer


def only(outcome: Outcome) -> m.ServerMessage:
    assert len(outcome.replies) == 1, outcome
    return outcome.replies[0]


def error_of(outcome: Outcome) -> m.Error:
    reply = only(outcome)
    assert isinstance(reply, m.Error), reply
    return reply


def bet(**fields: Any) -> str:
    return frame({"t": "bet", "id": 9, "game": "dice", "round": 7, "amount": 10, "params": {"target": 50}, **fields})


# ---------------------------------------------------------------------------------------------- auth


async def test_auth_welcomes_the_user_with_balance_games_and_limits_and_joins_the_feed() -> None:
    session, services, peer = make_session()
    outcome = await session.receive(auth_frame(user_id=5))
    welcome = only(outcome)
    assert isinstance(welcome, m.Welcome)
    assert welcome.id == 1 and welcome.user == m.User(id=5, first_name="Player")
    assert (welcome.balance, welcome.offset, welcome.epoch) == (1000, 3, EPOCH)
    assert welcome.games == ["dice"] and welcome.session == session.session_id
    assert welcome.limits == {"dice": m.GameLimits(min_bet=1, max_bet=1000, max_payout=100_000)}
    assert welcome.recovered is None and welcome.missed is None  # no `since`: no resume fields
    assert outcome.close is None and session.state is State.READY
    assert services.ledger.signed_in == [m.User(id=5, first_name="Player")]  # the validator's user, as is
    assert services.feeds.joined == [(5, peer, 3)]
    assert services.feeds.confirmed == [(5, 1000, 3)]  # the sign-in read the wallet: the node knows it
    assert [(user, sid) for user, sid, _ in services.user_limits.admitted] == [(5, session.session_id)]
    services.user_limits.admitted[0][2](CloseCode.REPLACED, "replaced")  # a newer socket closes this one
    assert peer.closed == (CloseCode.REPLACED, "replaced")


async def test_auth_with_since_in_the_current_epoch_replays_what_the_user_missed() -> None:
    services = Services()
    services.relay.events = [b'{"t":"balance","ch":"user","offset":3,"balance":1000}']
    session, _, _ = make_session(services)
    welcome = only(await session.receive(auth_frame(since={"offset": 2, "epoch": EPOCH})))
    assert isinstance(welcome, m.Welcome)
    assert welcome.recovered is True and welcome.missed == [{"t": "balance", "ch": "user", "offset": 3,
                                                             "balance": 1000}]  # fmt: skip
    assert services.relay.asked == [(5, 2, 3)]
    other_epoch = make_session()[0]
    welcome = only(await other_epoch.receive(auth_frame(since={"offset": 2, "epoch": "old"})))
    assert isinstance(welcome, m.Welcome) and welcome.recovered is False and welcome.missed == []


@pytest.mark.parametrize(
    ("init_data", "expected"),
    [
        (sign_init_data("42:another-bot", user_id=5), "bad_hash"),
        ("user=%7B%7D&hash=00", "bad_hash"),
        (f"{sign_init_data(TOKEN, user_id=5)}&x=1", "bad_hash"),  # altered after signing
        (sign_init_data(TOKEN, user_id=5, auth_date=1_600_000_000), "expired"),
        ("not a query string", "malformed"),
    ],
)
async def test_refused_init_data_is_unauthorized_and_closes_4401(init_data: str, expected: str) -> None:
    session, services, _ = make_session()
    outcome = await session.receive(frame({"t": "auth", "id": 1, "init_data": init_data}))
    error = error_of(outcome)
    assert (error.code, error.field) == (ErrorCode.UNAUTHORIZED, "init_data")
    assert error.message.startswith(expected) and init_data not in error.message  # never quotes the credential
    assert outcome.close == CloseCode.UNAUTHORIZED and session.state is State.CLOSED
    assert services.ledger.signed_in == []
    assert await session.receive(frame({"t": "ping", "id": 2})) == Outcome()  # closed: nothing more


async def test_init_data_without_a_user_is_unauthorized() -> None:
    fields = {"auth_date": str(int(time.time())), "query_id": "q"}
    fields["hash"] = HmacVerifier(TOKEN).sign(fields)
    session, _, _ = make_session()
    outcome = await session.receive(frame({"t": "auth", "id": 1, "init_data": urlencode(fields)}))
    assert error_of(outcome).message == "initData carries no user"
    assert outcome.close == CloseCode.UNAUTHORIZED


async def test_a_request_before_auth_closes_4401_asking_for_auth() -> None:
    session, _, _ = make_session()
    outcome = await session.receive(frame({"t": "ping", "id": 1}))
    assert (error_of(outcome).code, outcome.close) == (ErrorCode.AUTH_REQUIRED, CloseCode.UNAUTHORIZED)


async def test_a_malformed_frame_before_auth_closes_4401_too() -> None:
    session, _, _ = make_session()
    outcome = await session.receive("{not json")
    assert (error_of(outcome).code, outcome.close) == (ErrorCode.AUTH_REQUIRED, CloseCode.UNAUTHORIZED)


async def test_auth_while_the_database_is_down_answers_unavailable_and_may_be_retried() -> None:
    services = Services()
    services.ledger.fail = ConnectionRefusedError("no PostgreSQL")
    session, _, _ = make_session(services)
    outcome = await session.receive(auth_frame())
    error = error_of(outcome)
    assert (error.id, error.code) == (1, ErrorCode.UNAVAILABLE)
    assert error.message == "database unavailable; retry auth shortly"
    assert outcome.close is None and session.state is State.AWAITING_AUTH
    services.ledger.fail = None
    assert isinstance(only(await session.receive(auth_frame(request_id=2))), m.Welcome)


async def test_a_second_auth_is_a_bad_request() -> None:
    session, _, _ = await ready_session()
    error = error_of(await session.receive(auth_frame(request_id=2)))
    assert (error.code, error.field) == (ErrorCode.BAD_REQUEST, "t")


async def test_the_auth_timeout_closes_4408() -> None:
    session, _, _ = make_session()
    outcome = session.auth_timed_out()
    assert (outcome.replies, outcome.close) == ([], CloseCode.AUTH_TIMEOUT) and session.state is State.CLOSED


# ---------------------------------------------------------------------------------------------- limits


async def test_over_the_socket_rate_a_request_is_refused_unread_and_the_bucket_refills_with_time() -> None:
    clock = FakeClock()
    services = Services(settings=FakeSettings(rate_limit=2.0, rate_burst=2))
    session, _, _ = make_session(services, clock)
    assert isinstance(only(await session.receive(auth_frame())), m.Welcome)
    assert isinstance(only(await session.receive(frame({"t": "ping", "id": 2}))), m.Pong)
    refused = await session.receive(frame({"t": "ping", "id": "third"}))
    error = error_of(refused)
    assert (error.id, error.code, refused.close) == ("third", ErrorCode.RATE_LIMITED, None)
    assert "more than 2 requests a second" in error.message
    clock.now += 0.5  # one token back
    assert isinstance(only(await session.receive(frame({"t": "ping", "id": 4}))), m.Pong)


async def test_ignoring_rate_limited_closes_4429() -> None:
    clock = FakeClock()
    session, _, _ = make_session(Services(settings=FakeSettings(rate_limit=1.0, rate_burst=1)), clock)
    await session.receive(auth_frame())
    outcomes = [await session.receive(frame({"t": "ping", "id": i})) for i in range(25)]
    closing = [o for o in outcomes if o.close is not None]
    assert closing and closing[0].close == CloseCode.RATE_LIMITED
    assert error_of(closing[0]).code == ErrorCode.RATE_LIMITED and session.state is State.CLOSED


async def test_over_the_user_rate_of_all_their_sockets_a_request_is_refused() -> None:
    session, services, _ = await ready_session()
    services.user_limits.allowed = False
    outcome = await session.receive(frame({"t": "ping", "id": 2}))
    error = error_of(outcome)
    assert (error.id, error.code, outcome.close) == (2, ErrorCode.RATE_LIMITED, None)
    assert "your sockets together send more than 400 requests a second" in error.message


async def test_malformed_frames_are_answered_naming_the_field_and_too_many_close_4400() -> None:
    clock = FakeClock()
    session, _, _ = await ready_session(Services(settings=FakeSettings(malformed_limit=2, malformed_window=10)), clock)
    error = error_of(await session.receive(frame({"t": "bet", "id": 3, "game": "dice", "round": 7})))
    assert (error.id, error.code, error.field) == (3, ErrorCode.BAD_REQUEST, "amount")
    clock.now += 11  # the first one falls out of the window
    assert error_of(await session.receive("{not json")).id is None
    assert error_of(await session.receive(frame({"t": "nope", "id": 5}))).code == ErrorCode.UNKNOWN_TYPE
    outcome = await session.receive(frame({"t": "ping"}))  # the third within 10 s
    assert outcome.close == CloseCode.PROTOCOL_ABUSE and session.state is State.CLOSED
    assert error_of(outcome).code == ErrorCode.BAD_REQUEST


# ---------------------------------------------------------------------------------------------- bets


async def test_a_bet_the_game_accepts_is_placed_with_its_normalised_params_and_exposure() -> None:
    session, services, _ = await ready_session()
    reply = only(await session.receive(bet(key="k1")))
    assert isinstance(reply, m.BetOk)
    assert reply.id == 9 and reply.balance == 990
    assert reply.bet == m.BetView(id=1, game="dice", round=7, amount=10, params={"target": 50, "normalised": True},
                                  status="accepted")  # fmt: skip
    assert services.ledger.placed == [BetRequest(5, "dice", 7, 10, {"target": 50, "normalised": True}, "k1",
                                                 exposure=20, exposure_cap=50_000)]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "code", "field_name", "message"),
    [
        ({"amount": 1001}, ErrorCode.INVALID_BET, "amount", "amount is above the maximum bet of 1000"),
        ({"game": "poker"}, ErrorCode.UNKNOWN_GAME, "game", "no game named 'poker' (games: dice)"),
        ({"params": {"pad": "x" * 600}}, ErrorCode.INVALID_BET, "params", "params take 610 bytes; the limit is 512"),
    ],
)
async def test_a_bet_outside_the_rules_is_refused_naming_the_field(
    fields: dict[str, Any], code: ErrorCode, field_name: str, message: str
) -> None:
    session, services, _ = await ready_session()
    error = error_of(await session.receive(bet(**fields)))
    assert (error.id, error.code, error.field, error.message) == (9, code, field_name, message)
    assert services.ledger.placed == []


async def test_a_bet_below_the_minimum_is_refused() -> None:
    services = Services()
    services.rounds.rules_by_game["dice"] = GameRules("dice", min_bet=50, max_bet=1000, max_payout=100_000)
    session, _, _ = await ready_session(services)
    error = error_of(await session.receive(bet()))
    assert (error.code, error.field, error.message) == (ErrorCode.INVALID_BET, "amount",
                                                        "amount is below the minimum bet of 50")  # fmt: skip


@pytest.mark.parametrize(
    ("refusal", "code", "field_name"),
    [
        (InvalidBet("target must be 1..99", "params.target"), ErrorCode.INVALID_BET, "params.target"),
        (RoundRefused(ErrorCode.BETTING_CLOSED, "betting on dice is closed", "round"), ErrorCode.BETTING_CLOSED,
         "round"),
    ],
)  # fmt: skip
async def test_a_bet_the_round_or_the_game_refuses_is_not_placed(
    refusal: Exception, code: ErrorCode, field_name: str
) -> None:
    session, services, _ = await ready_session()
    services.rounds.refuse = refusal
    error = error_of(await session.receive(bet()))
    assert (error.code, error.field, error.message) == (code, field_name, str(refusal))
    assert services.ledger.placed == []


async def test_a_retried_bet_whose_round_moved_on_gets_its_first_answer_or_the_refusal() -> None:
    session, services, _ = await ready_session()
    services.rounds.refuse = RoundRefused(ErrorCode.ROUND_MISMATCH, "round 7 is not taking bets; round 8 is", "round")
    assert error_of(await session.receive(bet(key="k1"))).code == ErrorCode.ROUND_MISMATCH  # never placed
    services.ledger.prior = PlacedBet(41, 5, "dice", 7, 10, {"target": 50}, "won", 1500, 9, replayed=True)
    reply = only(await session.receive(bet(key="k1")))
    assert isinstance(reply, m.BetOk) and (reply.bet.id, reply.bet.status, reply.balance) == (41, "won", 1500)
    services.ledger.prior = InsufficientFunds("not enough")
    assert error_of(await session.receive(bet(key="k1"))).code == ErrorCode.INSUFFICIENT_FUNDS
    services.ledger.fail = ConnectionResetError()
    assert error_of(await session.receive(bet(key="k1"))).message == "database unavailable; retry shortly"


async def test_a_bet_the_ledger_refuses_answers_the_ledger_code() -> None:
    session, services, _ = await ready_session()
    services.ledger.fail = InsufficientFunds("the wallet holds 5")
    error = error_of(await session.receive(bet()))
    assert (error.code, error.message) == (ErrorCode.INSUFFICIENT_FUNDS, "the wallet holds 5")


# ---------------------------------------------------------------------------------------------- other requests


async def test_an_unexpected_error_answers_internal_with_the_request_id_logs_once_and_the_socket_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session, services, _ = await ready_session()
    services.rounds.history_error = RuntimeError("a bug")
    with caplog.at_level(logging.ERROR, logger="server.edge.session"):
        outcome = await session.receive(frame({"t": "history", "id": "h1", "game": "dice"}))
    error = error_of(outcome)
    assert (error.id, error.code, outcome.close) == ("h1", ErrorCode.INTERNAL, None)
    assert "a bug" not in error.message  # the client learns nothing of the server's insides
    records = [r for r in caplog.records if r.name == "server.edge.session"]
    assert len(records) == 1 and records[0].exc_info is not None and "'h1'" in records[0].getMessage()
    assert session.state is State.READY
    assert isinstance(only(await session.receive(frame({"t": "ping", "id": 2}))), m.Pong)


async def test_balance_comes_from_the_feed_while_confirmed_else_from_the_database() -> None:
    session, services, _ = await ready_session()
    services.feeds.cached[5] = 777
    assert only(await session.receive(frame({"t": "balance", "id": 2}))) == m.Balance(id=2, balance=777)
    assert services.ledger.balance_reads == 0
    del services.feeds.cached[5]
    assert only(await session.receive(frame({"t": "balance", "id": 3}))) == m.Balance(id=3, balance=1000)
    assert services.ledger.balance_reads == 1 and services.feeds.confirmed == [(5, 1000, 3)] * 2  # sign-in, read
    services.ledger.fail = TimeoutError()
    error = error_of(await session.receive(frame({"t": "balance", "id": 4})))
    assert (error.id, error.code, error.message) == (4, ErrorCode.UNAVAILABLE, "database unavailable; retry shortly")


async def test_subscribe_sends_the_snapshot_and_adds_the_socket_unsubscribe_removes_it() -> None:
    session, services, peer = await ready_session()
    reply = only(await session.receive(frame({"t": "subscribe", "id": 2, "game": "dice"})))
    assert reply == m.Subscribed(id=2, game="dice", round={"round": 7, "phase": "betting"}, offset=12,
                                 epoch="game-epoch", recovered=False, missed=[],
                                 limits=m.GameLimits(min_bet=1, max_bet=1000, max_payout=100_000),
                                 game_info=services.rounds.game_info("dice"))  # fmt: skip
    assert services.audience.channels["game:dice"] == {id(peer)} and session.subscriptions == ("dice",)
    assert only(await session.receive(frame({"t": "unsubscribe", "id": 3, "game": "dice"}))) == m.Ok(id=3)
    assert services.audience.channels["game:dice"] == set() and session.subscriptions == ()
    error = error_of(await session.receive(frame({"t": "unsubscribe", "id": 4, "game": "dice"})))
    assert error.code == ErrorCode.NOT_SUBSCRIBED


async def test_subscribe_with_since_replays_the_missed_events() -> None:
    services = Services()
    services.rounds.missed = [{"t": "round", "offset": 12}]
    session, _, _ = await ready_session(services)
    reply = only(await session.receive(frame({"t": "subscribe", "id": 2, "game": "dice",
                                              "since": {"offset": 11, "epoch": "game-epoch"}})))  # fmt: skip
    assert isinstance(reply, m.Subscribed) and reply.recovered and reply.missed == [{"t": "round", "offset": 12}]


async def test_detach_leaves_the_feed_the_user_limits_and_every_channel() -> None:
    session, services, peer = await ready_session()
    await session.receive(frame({"t": "subscribe", "id": 2, "game": "dice"}))
    await session.detach()
    assert services.feeds.left == [(5, peer)] and services.user_limits.released == [(5, session.session_id)]
    assert services.audience.channels["game:dice"] == set() and session.state is State.CLOSED


async def test_history_and_its_outage() -> None:
    services = Services()
    services.rounds.rounds = [m.RoundRecord(round=6, outcome={"roll": 12}, seed="s", seed_hash="h")]
    session, _, _ = await ready_session(services)
    reply = only(await session.receive(frame({"t": "history", "id": 2, "game": "dice", "limit": 5})))
    assert reply == m.HistoryReply(id=2, rounds=services.rounds.rounds)
    services.rounds.history_error = OSError("connection reset")
    assert error_of(await session.receive(frame({"t": "history", "id": 3, "game": "dice"}))).code == "unavailable"


async def test_an_action_answers_its_result_and_the_balance_or_the_refusal() -> None:
    session, services, _ = await ready_session()
    reply = only(await session.receive(frame({"t": "action", "id": 2, "game": "dice", "round": 7,
                                              "action": "cashout"})))  # fmt: skip
    assert reply == m.ActionOk(id=2, result={"action": "cashout", "payout": 25}, balance=1000)
    services.rounds.refuse = RoundRefused(ErrorCode.BAD_REQUEST, "no bet of yours is in round 7", "round")
    error = error_of(await session.receive(frame({"t": "action", "id": 3, "game": "dice", "round": 7,
                                                  "action": "cashout"})))  # fmt: skip
    assert (error.code, error.field) == (ErrorCode.BAD_REQUEST, "round")


async def test_ping_answers_the_server_clock_in_ms_and_msgpack_sessions_decode_msgpack() -> None:
    session, _, _ = make_session(codec=MSGPACK)
    raw = sign_init_data(TOKEN, user_id=8)
    assert isinstance(only(await session.receive(msgspec.msgpack.encode({"t": "auth", "id": 1, "init_data": raw}))),
                      m.Welcome)  # fmt: skip
    pong = only(await session.receive(msgspec.msgpack.encode({"t": "ping", "id": 2})))
    assert isinstance(pong, m.Pong) and abs(pong.server_time - time.time() * 1000) < 60_000


# ---------------------------------------------------------------------------------------------- the boundary


def test_a_node_offers_every_service_a_session_uses() -> None:
    """``Node`` satisfies :class:`SessionServices`: each service it holds has every method the session
    calls, async where awaited, taking the arguments the session passes."""
    from server.node import Node

    node_types = typing.get_type_hints(Node)
    for name, member in inspect.getmembers(SessionServices, lambda v: isinstance(v, property)):
        assert name in node_types, f"Node has no {name!r}, which sessions use"
        wanted = typing.get_type_hints(member.fget)["return"]
        offered = node_types[name]
        for method, spec in inspect.getmembers(wanted, inspect.isfunction):
            if method.startswith("_"):
                continue
            impl = getattr(offered, method, None)
            assert impl is not None, f"Node.{name} ({offered.__qualname__}) has no {method}()"
            assert inspect.iscoroutinefunction(impl) == inspect.iscoroutinefunction(spec), f"{name}.{method}"
            positional = len(inspect.signature(spec).parameters) - 1
            inspect.signature(impl).bind(None, *range(positional))  # takes as many positional arguments
        for prop, _ in inspect.getmembers(wanted, lambda v: isinstance(v, property)):
            # a class attribute, an annotated one, or one its __init__ sets
            found = hasattr(offered, prop) or prop in typing.get_type_hints(offered)
            assert found or prop in offered.__init__.__code__.co_names, f"Node.{name} has no {prop}"


def test_init_data_users_are_the_protocol_user() -> None:
    data = InitDataValidator(HmacVerifier(TOKEN)).validate(sign_init_data(TOKEN, user_id=3, first_name="Ann"))
    assert isinstance(data, InitData) and type(data.user) is m.User and TelegramUser is m.User
