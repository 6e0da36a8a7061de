"""Events of the user channel, written in the same transaction as the money they announce.

Every change of a wallet is one event on its user's channel (:func:`user_channel`), and its
``offset`` is the wallet's version after the change: a bet (``balance``, reason ``bet``), each
closed bet (``bet_settled``, then ``balance`` with reason ``win`` or ``refund`` when it paid), a
deposit, a welcome credit or an adjustment (``balance``). The events go into ``user_events`` (the
outbox and the channel's history, see migration 0005 and :mod:`server.ledger.outbox`) before the
transaction commits; the ledger hands them to its ``announce`` hook after the commit (the
:class:`~server.ledger.outbox.OutboxRelay` publishes them).
"""

from __future__ import annotations

import msgspec

from protocol import JSON
from protocol import messages as m

from .settlement import ClosedBet
from .wallets import WalletState


def user_channel(user_id: int) -> str:
    """The broker channel of ``user_id``'s events (``user:<id>``): the outbox relay publishes on it,
    the edge delivers from it to the user's sockets."""
    return f"user:{user_id}"


class UserEvent(msgspec.Struct, frozen=True):
    """One push on a user's channel: its offset (the wallet version) and the JSON bytes sent.

    A frozen ``msgspec.Struct``, not a frozen dataclass: one is made per bet, and a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__`` (docs/performance.md, "Issue 20: the bet
    batch's legs in SQL, per-bet values as structs")."""

    user_id: int
    offset: int
    payload: bytes


def balance_event(user_id: int, offset: int, epoch: str, *, balance: int, delta: int, reason: str,
                  ref: int | str | None) -> UserEvent:  # fmt: skip
    """A ``balance`` push: the wallet changed by ``delta`` to ``balance``."""
    push = m.Balance(ch="user", offset=offset, epoch=epoch, balance=balance, delta=delta, reason=reason, ref=ref)
    return UserEvent(user_id, offset, JSON.encode(push))


def welcome_event(user_id: int, wallet: WalletState, epoch: str) -> UserEvent:
    """The ``balance`` push of a new wallet's welcome credit (``wallet.credited``)."""
    return balance_event(user_id, wallet.version, epoch, balance=wallet.balance, delta=wallet.credited,
                         reason="deposit", ref="welcome")  # fmt: skip


def settlement_events(closed: list[ClosedBet], epoch: str) -> list[UserEvent]:
    """The events of closing ``closed`` (one settlement or refund call), per user in offset order.

    Each closed bet bumped its wallet's version once for ``bet_settled`` and once more when it
    paid (the ``balance`` push), so the user's events of one call end at the wallet's version.
    """
    by_user: dict[int, list[ClosedBet]] = {}
    for bet in closed:
        by_user.setdefault(bet.user_id, []).append(bet)
    events: list[UserEvent] = []
    for user_id, bets in by_user.items():
        offset = bets[-1].version - sum(1 + (bet.payout > 0) for bet in bets)
        balance = bets[-1].balance - sum(bet.payout for bet in bets)
        for bet in bets:
            balance += bet.payout
            offset += 1
            settled = m.BetSettled(ch="user", offset=offset, epoch=epoch, bet=bet.bet_id, payout=bet.payout,
                                   balance=balance, result=bet.result)  # fmt: skip
            events.append(UserEvent(user_id, offset, JSON.encode(settled)))
            if bet.payout > 0:
                reason = "refund" if bet.status == "refunded" else "win"
                events.append(balance_event(user_id, offset + 1, epoch, balance=balance, delta=bet.payout,
                                            reason=reason, ref=bet.bet_id))  # fmt: skip
                offset += 1
    return events
