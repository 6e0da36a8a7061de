"""The double-entry ledger: the only code that writes balances.

Money is integers. Every ledger transaction's legs sum to zero; wallets cannot go negative
(a CHECK constraint); every operation is one PostgreSQL transaction; ``croupier audit``
proves all of it over the stored data. The user events each operation writes with its money
(the outbox, ``user_events``) are the ledger's too, and so is the relay that publishes them on
their user's channel (:class:`OutboxRelay`).
"""

from __future__ import annotations

from .audit import AuditReport, audit
from .batching import BatchOptions
from .bets import BetRequest, PlacedBet
from .deposits import CreditedDeposit, Deposit, DepositCredit, DepositReversal, find_deposits
from .errors import (
    BettingClosed,
    ExposureCapReached,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerError,
    LedgerUnavailable,
    UnknownAccount,
    UnknownDeposit,
)
from .events import UserEvent, user_channel
from .ledger import Ledger
from .outbox import OutboxRelay
from .settlement import ClosedBet
from .wallets import WalletState

__all__ = [
    "AuditReport",
    "BatchOptions",
    "BetRequest",
    "BettingClosed",
    "ClosedBet",
    "CreditedDeposit",
    "Deposit",
    "DepositCredit",
    "DepositReversal",
    "ExposureCapReached",
    "IdempotencyConflict",
    "InsufficientFunds",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "OutboxRelay",
    "PlacedBet",
    "UnknownAccount",
    "UnknownDeposit",
    "UserEvent",
    "WalletState",
    "audit",
    "find_deposits",
    "user_channel",
]
