"""What a :class:`~server.edge.session.Session` needs from the node it runs on, and nothing more.

:class:`SessionServices` is a ``typing.Protocol``, one small protocol per collaborator: the
session (and the endpoint feeding it) is written against these, not against
:class:`server.node.Node`, so it is tested with fakes (``tests/edge/test_session.py``) and the
edge does not import the module that builds it. ``Node`` satisfies it structurally
(``tests/edge/test_session.py`` checks that it offers every member).

Every member is read-only here (the session never replaces a service) and every method takes
its arguments positionally, as the session passes them: an implementation may name its
parameters as it likes. Costs nothing at run time: the session reaches each service with an
attribute access, as it did on the node.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

from protocol import messages as m

from ..auth import InitData, TelegramUser
from ..ledger import BetRequest, LedgerError, PlacedBet, WalletState
from ..players.history import Page
from ..players.limitstore import SessionCheck
from ..rounds import GameRules
from ..rounds.engine import CheckedBet
from ..telegram import DepositInvoice
from .audience import Peer
from .userlimits import CloseSocket


class EdgeSettings(Protocol):
    """The settings the endpoint and the session read (see :class:`server.settings.Settings`)."""

    @property
    def rate_limit(self) -> float:
        """Requests a second one socket may send (``CROUPIER_RATE_LIMIT``)."""
        ...

    @property
    def rate_burst(self) -> int:
        """Requests one socket may send at once above the rate (``CROUPIER_RATE_BURST``)."""
        ...

    @property
    def user_rate_limit(self) -> float:
        """Requests a second all of one user's sockets may send together (``CROUPIER_USER_RATE_LIMIT``)."""
        ...

    @property
    def malformed_limit(self) -> int:
        """Malformed frames tolerated within ``malformed_window`` before closing with 4400."""
        ...

    @property
    def malformed_window(self) -> float:
        """Seconds over which malformed frames are counted."""
        ...

    @property
    def auth_timeout(self) -> float:
        """Seconds a socket has, after its handshake, to authenticate."""
        ...

    @property
    def max_frame_bytes(self) -> int:
        """Largest frame a client may send; a larger one closes the socket with 1009."""
        ...

    @property
    def send_queue_frames(self) -> int:
        """Frames a socket's send queue holds before it is closed with 4503."""
        ...


class InitDataCheck(Protocol):
    """Verifies initData (:class:`server.auth.InitDataValidator`)."""

    def validate(self, raw: str, /) -> InitData:
        """The verified initData, or :class:`~server.auth.InitDataError` saying why not (nothing else)."""
        ...


class Wallets(Protocol):
    """The ledger as a session uses it (:class:`server.ledger.Ledger`)."""

    @property
    def epoch(self) -> str:
        """The epoch of every user's balance stream (offsets are wallet versions)."""
        ...

    async def sign_in(self, user: TelegramUser, /) -> WalletState:
        """Record ``user`` and open their wallet unless it exists; the wallet's committed state."""
        ...

    async def balance(self, user_id: int, /) -> WalletState:
        """The wallet's committed balance and version."""
        ...

    async def place_bet(self, request: BetRequest, /) -> PlacedBet:
        """Take the stake once committed, or raise :class:`~server.ledger.LedgerError`."""
        ...

    async def replay(self, request: BetRequest, /) -> PlacedBet | LedgerError | None:
        """The first result of a bet already placed with the request's key, or None."""
        ...


class UserHistory(Protocol):
    """The user channel's history (the ledger's outbox): what ``auth`` with ``since`` replays."""

    async def missed(self, user_id: int, after: int, upto: int, /) -> list[bytes] | None:
        """The user's events with offsets ``after`` < offset <= ``upto``, oldest first, encoded; None
        when the history no longer holds all of them."""
        ...


class UserFeed(Protocol):
    """Delivery of the user channel to this node's sockets (:class:`server.edge.feeds.UserFeeds`)."""

    async def join(self, user_id: int, peer: Peer, offset: int, /) -> None:
        """Deliver ``user_id``'s events after ``offset`` to ``peer`` from now on."""
        ...

    async def leave(self, user_id: int, peer: Peer, /) -> None:
        """Stop delivering to ``peer``."""
        ...

    def balance(self, user_id: int, /) -> int | None:
        """The user's balance when confirmed recently with every change since applied, else None."""
        ...

    def confirm_balance(self, user_id: int, balance: int, version: int, /) -> None:
        """A balance just read from the database, at wallet ``version``."""
        ...


class UserQuotas(Protocol):
    """Limits per user across sockets and nodes (:class:`server.edge.userlimits.UserLimits`)."""

    async def admit(self, user_id: int, session_id: str, close: CloseSocket, /) -> None:
        """Count this socket for the user; ``close`` is called if a newer socket replaces it."""
        ...

    async def release(self, user_id: int, session_id: str, /) -> None:
        """The socket is gone."""
        ...

    async def allow(self, user_id: int, /) -> bool:
        """Spend one of the user's requests; False when over the user's rate."""
        ...


class GameTables(Protocol):
    """The games as a session sees them (:class:`server.rounds.engine.RoundEngine`)."""

    def games(self) -> tuple[str, ...]:
        """The games this node offers, in order."""
        ...

    def rules(self, game: str, /) -> GameRules | None:
        """The game's limits, or None for a game this node does not offer."""
        ...

    def limits(self, game: str, /) -> m.GameLimits:
        """The game's limits as clients see them."""
        ...

    def game_info(self, game: str, /) -> m.GameInfo:
        """The game's params and the JSON Schemas of its params and bets, as clients see them."""
        ...

    def validate_bet(self, game: str, round_id: int, amount: int, params: Mapping[str, Any], /) -> CheckedBet:
        """The bet as the round and the game accept it, or ``RoundRefused`` / ``InvalidBet``."""
        ...

    def handler_params(self, game: str, params: Mapping[str, Any], amount: int, /) -> dict[str, Any]:
        """``params`` as the game normalises them, or as sent when the game refuses them."""
        ...

    def snapshot(self, game: str, /) -> tuple[dict[str, Any] | None, int, str]:
        """The current round as last announced, the channel's offset and epoch."""
        ...

    async def missed_since(self, game: str, offset: int, epoch: str, /) -> list[dict[str, Any]] | None:
        """The game's events after ``offset`` up to the current one (take :meth:`snapshot` right after,
        with no await between), or None when the history no longer holds them."""
        ...

    async def action(self, game: str, round_id: int, user_id: int, action: str,
                     params: Mapping[str, Any], /) -> dict[str, Any]:  # fmt: skip
        """Apply a player action to the running round; ``RoundRefused`` when it cannot be."""
        ...

    async def history(self, game: str, limit: int, /) -> list[m.RoundRecord]:
        """The game's last ``limit`` settled rounds, newest first."""
        ...


class Deposits(Protocol):
    """The Stars cashier as a session uses it (:class:`server.telegram.Cashier`)."""

    async def deposit(self, user_id: int, stars: int, /) -> DepositInvoice:
        """A pending order and its invoice link, or :class:`~server.telegram.CashierError` saying why not
        (``deposit_refused`` naming ``stars`` for a limit, ``unavailable``)."""
        ...


class PlayerRecords(Protocol):
    """A player's own records (:class:`server.players.PlayerHistory`)."""

    async def bets(self, user_id: int, game: str | None, cursor: str | None, limit: int, /) -> Page[m.MyBet]:
        """The player's bets (of ``game``, or every game) after ``cursor``, newest first."""
        ...

    async def transactions(self, user_id: int, cursor: str | None, limit: int, /) -> Page[m.Transaction]:
        """The player's wallet movements after ``cursor``, newest first."""
        ...


class PlayerLimitsService(Protocol):
    """A player's own responsible-gaming limits (:class:`server.players.ResponsibleGaming`)."""

    async def state(self, user_id: int, request_id: m.RequestId, /) -> m.LimitsReply:
        """Every limit of the player with what is used of it, and their active exclusion."""
        ...

    async def set_limit(self, user_id: int, kind: str, period: str, amount: int | None,
                        request_id: m.RequestId, /) -> m.LimitsReply:  # fmt: skip
        """Set or remove one limit (:class:`~server.players.InvalidLimit` saying why not)."""
        ...

    async def exclude(self, user_id: int, kind: str, days: int | None, request_id: m.RequestId, /) -> m.LimitsReply:
        """Start or lengthen a cool-off or self-exclusion (:class:`~server.players.InvalidLimit` saying why not)."""
        ...

    async def sign_in(self, user_id: int, /) -> SessionCheck | None:
        """The session time limit's verdict on a sign-in now (None: the player has none in force)."""
        ...


class Boards(Protocol):
    """The leaderboards as a session uses them (:class:`server.leaderboards.Leaderboards`)."""

    async def standings(self, game: str, metric: m.LeaderboardMetric, period: m.LeaderboardPeriod, limit: int,
                        user_id: int, /) -> m.LeaderboardReply:  # fmt: skip
        """The board's first ``limit`` players now and the user's place (``id`` unset), or
        :class:`~server.leaderboards.LeaderboardUnavailable`."""
        ...

    def watch(self, owner: Hashable, user_id: int, shown: m.LeaderboardReply, limit: int,
              push: Callable[[m.LeaderboardReply], object], /) -> None:  # fmt: skip
        """Push ``shown``'s board to ``owner`` when its top changes (at most once a second), replacing what
        ``owner`` watched before."""
        ...

    def unwatch(self, owner: Hashable, /) -> None:
        """Stop pushing to ``owner``."""
        ...


class SigninRecorder(Protocol):
    """Where sign-ins' client addresses go, for the risk flags (:class:`server.risk.SigninAddresses`)."""

    def record(self, user_id: int, address: str, /) -> None:
        """Note that ``user_id`` signed in from ``address`` (buffered: never blocks, never raises)."""
        ...


class Channels(Protocol):
    """Sockets by channel on this node (:class:`server.edge.audience.Audience`)."""

    def add(self, channel: str, peer: Peer, /) -> None:
        """``peer`` receives what is broadcast on ``channel`` from now on."""
        ...

    def remove(self, channel: str, peer: Peer, /) -> None:
        """``peer`` no longer receives ``channel``."""
        ...


class SessionServices(Protocol):
    """Everything a session and its endpoint use: :class:`server.node.Node` is one."""

    @property
    def settings(self) -> EdgeSettings: ...

    @property
    def validator(self) -> InitDataCheck: ...

    @property
    def ledger(self) -> Wallets: ...

    @property
    def relay(self) -> UserHistory: ...

    @property
    def feeds(self) -> UserFeed: ...

    @property
    def user_limits(self) -> UserQuotas: ...

    @property
    def rounds(self) -> GameTables: ...

    @property
    def audience(self) -> Channels: ...

    @property
    def cashier(self) -> Deposits: ...

    @property
    def players(self) -> PlayerRecords: ...

    @property
    def signin_addresses(self) -> SigninRecorder: ...

    @property
    def leaderboards(self) -> Boards: ...

    @property
    def responsible(self) -> PlayerLimitsService: ...
