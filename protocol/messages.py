"""Typed messages of the v1 wire contract (see docs/protocol.md).

Every message is a map with a string ``t``. Requests carry ``id`` (an int, or a string
of at most 64 characters) that the reply echoes. Money is always an ``int`` count of the
smallest unit; multipliers are ints in hundredths. Unknown fields are ignored on input,
so clients may send fields a later minor version adds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

MAX_ID_LENGTH = 64
MAX_KEY_LENGTH = 64
MAX_GAME_NAME_LENGTH = 64
MAX_CLIENT_SEED_LENGTH = 64
MAX_AMOUNT = 2**53 - 1
"""Largest amount accepted: every JS client can hold it exactly in a Number."""
MAX_INT64 = 2**63 - 1
"""Largest round id or offset accepted: they are PostgreSQL ``bigint`` and travel between nodes as JSON."""

RequestId = int | Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
GameName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_GAME_NAME_LENGTH)]
Amount = Annotated[int, msgspec.Meta(gt=0, le=MAX_AMOUNT)]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_LENGTH)]
RoundId = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]
ClientSeed = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_CLIENT_SEED_LENGTH,
        description="1 to 64 printable ASCII characters (space to ~) other than ':'",
    ),
]
"""A player's contribution to the salt of a seed chain (docs/fairness.md); its characters are checked by
:mod:`protocol.checks`."""
Offset = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]
ParamInt = Annotated[int, msgspec.Meta(ge=-MAX_INT64 - 1, le=MAX_INT64)]
ParamValue = None | bool | ParamInt | float | str | list[Any] | dict[str, Any]
"""A value in ``params``: JSON only, integers within 64 bits (the decoder refuses MessagePack ``bin``, ``ext``
and timestamps here). Deeper values are checked by :mod:`protocol.checks`, with U+0000 and the depth."""


class _Request(msgspec.Struct, tag_field="t", kw_only=True):
    """Base of every client request: ``t`` is the tag, ``id`` is echoed by the reply."""

    id: RequestId


class _Reply(msgspec.Struct, tag_field="t", kw_only=True, omit_defaults=True):
    """Base of every server message."""


# ---------------------------------------------------------------- client requests


class StreamPosition(msgspec.Struct, frozen=True):
    """Where a client stopped reading a channel: resume from here."""

    offset: Offset
    epoch: str


class Auth(_Request, tag="auth"):
    """First message of a connection: the raw ``Telegram.WebApp.initData`` string."""

    init_data: Annotated[str, msgspec.Meta(min_length=1)]
    since: StreamPosition | None = None
    """Extension: the last ``user`` event the client saw (on an earlier socket): the welcome
    replays what it missed."""


class Subscribe(_Request, tag="subscribe"):
    game: GameName
    since: StreamPosition | None = None


class Unsubscribe(_Request, tag="unsubscribe"):
    game: GameName


class Bet(_Request, tag="bet"):
    """Stake ``amount`` on ``round`` of ``game``. ``key`` makes retries idempotent."""

    game: GameName
    round: RoundId
    amount: Amount
    params: dict[str, ParamValue] = msgspec.field(default_factory=dict)
    key: IdempotencyKey | None = None
    client_seed: ClientSeed | None = None
    """Extension: a seed of the player's choosing. The client seeds of the bets accepted in a seed chain's
    first round make the salt of every round of that chain (docs/fairness.md, "Where the salt comes
    from"); in other rounds it is stored with the bet and changes nothing."""


class Action(_Request, tag="action"):
    """A game action during a round, e.g. ``cashout`` in crash."""

    game: GameName
    round: RoundId
    action: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    params: dict[str, ParamValue] = msgspec.field(default_factory=dict)


class BalanceRequest(_Request, tag="balance"):
    """Ask for the current wallet balance."""


class History(_Request, tag="history"):
    game: GameName
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class Ping(_Request, tag="ping"):
    """Liveness probe; the reply carries the server clock in ms."""


class Deposit(_Request, tag="deposit"):
    """Extension: buy chips with ``stars`` Telegram Stars; the reply is an :class:`Invoice` to open with
    ``Telegram.WebApp.openInvoice``. The chips arrive later, as a ``balance`` push with reason ``deposit``."""

    stars: Amount


Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
"""Where a page of a player's own records ends: the ``next`` of the previous page, passed back as it came."""
PageSize = Annotated[int, msgspec.Meta(ge=1, le=100)]


class MyBets(_Request, tag="my_bets"):
    """Extension: the player's own bets, newest first, a page at a time (``cursor``: the last page's
    ``next``); ``game`` to list one game's only."""

    game: GameName | None = None
    cursor: Cursor | None = None
    limit: PageSize = 20


class MyTransactions(_Request, tag="my_transactions"):
    """Extension: the player's own wallet movements (deposits, stakes, payouts, refunds, adjustments),
    newest first, a page at a time."""

    cursor: Cursor | None = None
    limit: PageSize = 20


LeaderboardMetric = Literal["net", "win"]
"""``net``: net winnings (payouts minus stakes); ``win``: the biggest single win (its payout)."""
LeaderboardPeriod = Literal["day", "week", "all"]
"""A day or an ISO week in the server's leaderboard time zone, or all time."""


class Leaderboard(_Request, tag="leaderboard"):
    """Extension: a leaderboard's first ``limit`` players and the caller's own place. ``game``: a game, or
    ``all`` for every game. ``watch``: true to get the board pushed when its top changes (one board per
    socket: it replaces the one watched before), false to stop; absent: no change."""

    game: GameName
    metric: LeaderboardMetric
    period: LeaderboardPeriod
    limit: PageSize = 10
    watch: bool | None = None


LimitKindName = Literal["deposit", "loss", "wager", "session"]
"""``deposit``: Stars deposited; ``loss``: chips staked less chips paid back; ``wager``: chips staked (each per
day, week or month); ``session``: minutes of one play session (period ``session``)."""
LimitPeriod = Literal["day", "week", "month", "session"]
"""A calendar day, week (from Monday) or month in the server's limits time zone; ``session`` for a session limit."""


class Limits(_Request, tag="limits"):
    """Extension: the player's own responsible-gaming limits, what is used of them, and any exclusion."""


class SetLimit(_Request, tag="set_limit"):
    """Extension: set one of the player's own limits (``amount``: Stars, chips or minutes; null removes it).
    Lowering applies at once; raising or removing waits 24 hours. The reply is ``limits``."""

    kind: LimitKindName
    period: LimitPeriod
    amount: Annotated[int, msgspec.Meta(ge=1)] | None


class Exclude(_Request, tag="exclude"):
    """Extension: a ``cool_off`` (``days`` 1 to 42) or a ``self_exclusion`` (``days`` 183 or more; null:
    permanent): no bets and no deposits until it ends. It cannot be shortened or lifted. The reply is ``limits``."""

    kind: Literal["cool_off", "self_exclusion"]
    days: Annotated[int, msgspec.Meta(ge=1)] | None = None


Request = (
    Auth
    | Subscribe
    | Unsubscribe
    | Bet
    | Action
    | BalanceRequest
    | History
    | Ping
    | Deposit
    | MyBets
    | MyTransactions
    | Leaderboard
    | Limits
    | SetLimit
    | Exclude
)
"""Every message a client may send."""

REQUEST_TYPES: tuple[type[_Request], ...] = (
    Auth, Subscribe, Unsubscribe, Bet, Action, BalanceRequest, History, Ping, Deposit, MyBets, MyTransactions,
    Leaderboard, Limits, SetLimit, Exclude,
)  # fmt: skip


# ---------------------------------------------------------------- server replies


class User(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """The Telegram user of a session, as taken from verified initData: the one type for it, from the
    initData validator (``server.auth``) through the ledger's ``users`` rows to the ``welcome`` reply."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_premium: bool = False
    allows_write_to_pm: bool = False
    """The user allowed the bot to message them (initData's ``allows_write_to_pm``): the bot's
    notifications (receipts, big wins, announcements) may reach them."""


class GameLimits(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Extension: a game's limits, as the operator set them. Amounts in the smallest unit."""

    min_bet: int
    max_bet: int
    max_payout: int
    """The most one bet may pay: a bet that could pay more is refused (crash: cashed out there)."""
    max_exposure: int | None = None
    """The most one round may pay out, every bet counted at its largest payout (dice, roulette)."""


class GameInfo(msgspec.Struct, kw_only=True):
    """Extension: what a client needs to show a game and render its bet form."""

    params: dict[str, Any]
    """The game's params in effect (the operator's table: house edge, payout tables, timings)."""
    params_schema: dict[str, Any]
    """JSON Schema of ``params``."""
    bet_schema: dict[str, Any]
    """JSON Schema of a bet's ``params`` (games with several bet types: one per type, told apart by ``type``)."""


class Welcome(_Reply, tag="welcome"):
    id: RequestId
    user: User
    balance: int
    session: str
    server_time: int
    games: list[str]
    offset: int | None = None
    """Extension: the ``user`` channel's offset (the wallet version) and ``epoch`` right now."""
    epoch: str | None = None
    recovered: bool | None = None
    """Extension, with ``since`` in ``auth`` only: whether ``missed`` holds every ``user`` event
    after ``since`` (else the ``balance`` here is where to start again)."""
    missed: list[dict[str, Any]] | None = None
    limits: dict[str, GameLimits] | None = None
    """Extension: each game's limits (``games`` lists the same names)."""
    game_info: dict[str, GameInfo] | None = None
    """Extension: each game's params and the schemas of its params and bets."""


class Error(_Reply, tag="error", omit_defaults=False):
    """A failed request. ``id`` is the request's id, or null when it could not be read.

    ``field`` (an extension of the contract) names the offending field when there is one.
    """

    id: RequestId | None
    code: str
    message: str
    field: str | None = None
    resets_at: int | msgspec.UnsetType | None = msgspec.UNSET
    """Extension, only with ``limit_reached`` and ``excluded`` (absent otherwise): when the player may try
    again (ms since the epoch; null with ``excluded``: never)."""


class Pong(_Reply, tag="pong"):
    id: RequestId
    server_time: int


class Ok(_Reply, tag="ok"):
    id: RequestId


class Subscribed(_Reply, tag="subscribed"):
    id: RequestId
    game: str
    round: dict[str, Any] | None
    offset: int
    epoch: str
    recovered: bool
    missed: list[dict[str, Any]]
    limits: GameLimits | None = None
    """Extension: the game's limits."""
    game_info: GameInfo | None = None
    """Extension: the game's params and the schemas of its params and bets."""


class BetView(msgspec.Struct, kw_only=True):
    id: int
    game: str
    round: int
    amount: int
    params: dict[str, Any]
    status: str


class BetOk(_Reply, tag="bet_ok"):
    id: RequestId
    bet: BetView
    balance: int


class ActionOk(_Reply, tag="action_ok"):
    id: RequestId
    result: dict[str, Any]
    balance: int


class SeedChain(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """Extension: the seed chain a game's rounds draw from (docs/fairness.md), told with the events of the
    chain's first round and in that round's ``history`` record."""

    id: int
    terminating_hash: str
    """The commitment to every seed of the chain, fixed before its first round opened: the SHA-256 of that
    round's seed (so it is also that round's ``seed_hash``)."""
    length: int
    """How many rounds the chain has."""
    committed_at: int
    """When the chain was generated and its terminating hash stored (ms)."""
    client_seeds: list[str] | None = None
    """From the ``running`` event of the chain's first round on (absent while it takes bets): the
    ``client_seed`` of each bet accepted in that round, in bet id order. The chain's salt, the ``salt``
    of each of its rounds, is ``sha256_hex("<terminating_hash>:" + ":".join(client_seeds))``."""


class RoundRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    round: int
    outcome: dict[str, Any]
    seed: str
    seed_hash: str
    salt: str | None = None
    """The round's salt: with ``seed``, what every draw of the round is recomputed from."""
    chain: SeedChain | None = None
    """Extension, on the record of a chain's first round: the chain, with the client seeds of its salt."""


class HistoryReply(_Reply, tag="history"):
    id: RequestId
    rounds: list[RoundRecord]


class MyBet(msgspec.Struct, kw_only=True):
    """One of the player's bets (``my_bets``)."""

    id: int
    game: str
    round: int
    amount: int
    params: dict[str, Any]
    status: str
    """``accepted`` (its round is not settled yet), ``won``, ``lost`` or ``refunded``."""
    payout: int | None
    """What it paid (0 when lost, the stake when refunded); null while accepted."""
    placed_at: int
    """When it was placed (ms)."""
    settled_at: int | None
    cashout: int | None = None
    """Crash: the multiplier it was cashed out at, in hundredths."""
    result: dict[str, Any] | None = None
    """Its own draw, in games where each bet draws one (plinko)."""
    seed_hash: str
    salt: str | None
    seed: str | None
    """The round's seed, once the round is settled (null before): with ``salt``, the bet can be verified."""


class MyBetsReply(_Reply, tag="my_bets", omit_defaults=False):
    id: RequestId
    bets: list[MyBet]
    next: str | None
    """Pass as ``cursor`` for the next (older) page; null on the last page."""


class Transaction(msgspec.Struct, kw_only=True):
    """One movement of the player's wallet (``my_transactions``)."""

    id: int
    kind: str
    """``deposit``, ``reversal`` (a refunded deposit taken back), ``welcome``, ``bet`` (a stake), ``payout``,
    ``refund`` (a voided bet's stake returned) or ``adjust`` (by the operator)."""
    amount: int
    """The change to the balance: negative for stakes and reversals."""
    ref: str | None
    """The bet id (bet, payout, refund) or the Telegram payment's charge id (deposit, reversal)."""
    reason: str | None
    """Why, for adjustments, reversals and the welcome credit: the operator's words."""
    at: int
    """When (ms)."""


class MyTransactionsReply(_Reply, tag="my_transactions", omit_defaults=False):
    id: RequestId
    transactions: list[Transaction]
    next: str | None
    """Pass as ``cursor`` for the next (older) page; null on the last page."""


class LeaderboardEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One player on a leaderboard."""

    user: int
    name: str
    """The player's first name (or username) as Telegram last gave it."""
    score: int
    """Net winnings, or the biggest win's payout."""
    rank: int
    """From 1; equal scores take consecutive ranks."""
    multiplier: int | None = None
    """``win`` boards: the win's multiplier, payout over stake in hundredths (rounded down)."""
    bet: int | None = None
    """``win`` boards: the winning bet's id."""


class LeaderboardStanding(msgspec.Struct, kw_only=True):
    """The caller's own place on a leaderboard."""

    rank: int
    score: int


class LeaderboardReply(_Reply, tag="leaderboard"):
    """Extension: the reply to ``leaderboard`` (with ``id``), or a push of a watched board (without ``id``; at
    most once a second, when its top changed). A push is not part of a channel's stream: no ``ch``, no offset
    (each is the whole board)."""

    game: str
    metric: LeaderboardMetric
    period: LeaderboardPeriod
    period_key: str
    """Which period: ``2026-12-03`` (day), ``2026-W49`` (ISO week) or ``all``."""
    top: list[LeaderboardEntry]
    me: LeaderboardStanding | None
    """The caller's place (also when outside the top); null when they have none on this board."""
    id: RequestId | None = None


class Balance(_Reply, tag="balance"):
    """The reply to a ``balance`` request (with ``id``), or a push on ``user`` (with ``ch``)."""

    balance: int
    id: RequestId | None = None
    ch: str | None = None
    offset: int | None = None
    epoch: str | None = None
    delta: int | None = None
    reason: str | None = None
    ref: int | str | None = None


class Invoice(_Reply, tag="invoice"):
    """Extension: the reply to ``deposit``: a Telegram Stars invoice link for a new order."""

    id: RequestId
    url: str
    """The invoice link (``https://t.me/$…``): pass it to ``Telegram.WebApp.openInvoice``."""
    order: int
    """The order's id (the invoice's payload)."""
    stars: int
    chips: int
    """What the order costs in Stars and credits in chips once paid."""


class BetSettled(_Reply, tag="bet_settled"):
    """Push on ``user``: a bet of this user was settled."""

    ch: str
    offset: int
    epoch: str
    bet: int
    payout: int
    balance: int
    result: dict[str, Any] | None = None
    """Extension: the bet's own draw, in games where each bet draws one (plinko: its path and slot)."""


class RoundEvent(_Reply, tag="round", kw_only=True):
    """Push on ``game:<name>``: a round changed phase (betting, running, settled)."""

    ch: str
    offset: int
    epoch: str
    ts: int | None = None
    game: str | None = None
    round: int
    phase: str
    seed_hash: str
    salt: str | None = None
    """What every draw of the round uses with its seed: its chain's salt. Null in the ``betting`` event of a
    chain's first round (the salt is fixed when that round's betting closes)."""
    closes_at: int | None = None
    started_at: int | None = None
    """In the ``running`` event: when the round started running (ms)."""
    info: dict[str, Any] | None = None
    """In the ``running`` event of some games: the game's own fields (wheel: the ``segment`` it stops at)."""
    outcome: dict[str, Any] | None = None
    """In the ``settled`` event: the game's public outcome."""
    seed: str | None = None
    """In the ``settled`` event: the revealed seed."""
    voided: bool | None = None
    """In the ``settled`` event of a round settled without an outcome: every bet refunded."""
    chain: SeedChain | None = None
    """Extension, in the events of a seed chain's first round only: the chain it opens (from the
    ``running`` event on, with the client seeds its salt was computed from)."""


class Tick(_Reply, tag="tick", kw_only=True):
    """Push on ``game:<name>``: game progress while a round runs, the game's own fields beside these
    (crash: ``multiplier`` in hundredths, and ``crashed`` on the last). May be dropped for slow clients."""

    ch: str
    offset: int
    epoch: str
    ts: int | None = None
    game: str | None = None
    round: int
    multiplier: int | None = None
    """Crash: the multiplier now, in hundredths."""
    crashed: bool | None = None
    """Crash: set on the last tick, whose ``multiplier`` is the crash point."""


class Announcement(_Reply, tag="announcement", kw_only=True):
    """Extension: a push from the operator (the back office's ``POST /admin/api/publish``), to every socket,
    to one user's sockets or to a game's subscribers. Not part of a channel's stream: no ``ch``, no offset,
    not replayed on resume; a client may show it or ignore it."""

    to: str
    """Who it was sent to: ``all``, ``user`` (this user's sockets) or ``game:<name>`` (that game's subscribers)."""
    text: str | None = None
    """A text for people, as the operator wrote it."""
    data: dict[str, Any] | None = None
    """The operator's own fields, for the app."""
    ts: int
    """When it was sent (ms)."""


class PlayerLimit(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One of the player's own limits: ``amount`` in force, ``used`` of it in the current period (until
    ``resets_at``, ms), and a raise or removal waiting (``pending_amount``, null: removal) from ``pending_from``."""

    kind: LimitKindName
    period: LimitPeriod
    amount: int
    used: int | None = None
    resets_at: int | None = None
    pending_amount: int | None = None
    pending_from: int | None = None


class Exclusion(msgspec.Struct, kw_only=True):
    """An active cool-off or self-exclusion, until ``until`` (ms; null: permanent)."""

    kind: Literal["cool_off", "self_exclusion"]
    until: int | None


class LimitsReply(_Reply, tag="limits", omit_defaults=False):
    """Extension: the reply to ``limits``, ``set_limit`` and ``exclude``: every limit of the player and any
    active exclusion (null: none)."""

    id: RequestId
    limits: list[PlayerLimit]
    exclusion: Exclusion | None


ServerMessage = (
    Welcome
    | Error
    | Pong
    | Ok
    | Subscribed
    | BetOk
    | ActionOk
    | HistoryReply
    | MyBetsReply
    | MyTransactionsReply
    | LeaderboardReply
    | LimitsReply
    | Balance
    | Invoice
    | BetSettled
    | RoundEvent
    | Tick
    | Announcement
)
"""Every message the server may send."""
