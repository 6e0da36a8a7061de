"""The double-entry ledger: the only code that writes balances.

Money is integers. Every ledger transaction's legs sum to zero; wallets cannot go negative
(a CHECK constraint); every operation is one PostgreSQL transaction; ``croupier audit``
proves all of it over the stored data.
"""

from __future__ import annotations

from .audit import AuditReport, audit
from .bets import BetRequest, PlacedBet
from .errors import (
    BettingClosed,
    ExposureCapReached,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerError,
    LedgerUnavailable,
    UnknownAccount,
)
from .ledger import Ledger
from .settlement import ClosedBet
from .wallets import WalletState

__all__ = [
    "AuditReport",
    "BetRequest",
    "BettingClosed",
    "ClosedBet",
    "ExposureCapReached",
    "IdempotencyConflict",
    "InsufficientFunds",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "PlacedBet",
    "UnknownAccount",
    "WalletState",
    "audit",
]
