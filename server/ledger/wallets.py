"""Wallets: one account per user, opened at first authentication."""

from __future__ import annotations

from dataclasses import dataclass

from .postings import post, transfer
from .transactions import Connection


@dataclass(frozen=True, slots=True)
class WalletState:
    """A wallet's balance and version (the offset of the user's balance stream)."""

    balance: int
    version: int
    credited: int = 0
    """The welcome credit paid by this call (only when it opened the wallet)."""


async def system_account(conn: Connection, kind: str, shard: int = 0) -> int:
    """The id of the house (``shard`` 0..7) or bank account."""
    account_id: int | None = await conn.fetchval("SELECT id FROM accounts WHERE kind = $1 AND shard = $2", kind, shard)
    if account_id is None:
        raise LookupError(f"no {kind} account for shard {shard}: migrations not applied?")
    return account_id


async def wallet_id(conn: Connection, user_id: int) -> int | None:
    """The account id of the user's wallet, or None if the user has none."""
    account_id: int | None = await conn.fetchval("SELECT id FROM accounts WHERE user_id = $1", user_id)
    return account_id


async def open_wallet(conn: Connection, user_id: int, *, welcome_credit: int) -> WalletState:
    """Open the user's wallet if it does not exist, crediting ``welcome_credit`` from the bank once.

    Returns the wallet's state either way. Must run in a transaction.
    """
    created: int | None = await conn.fetchval(
        "INSERT INTO accounts (kind, user_id) VALUES ('wallet', $1) ON CONFLICT (user_id) DO NOTHING RETURNING id",
        user_id,
    )
    credited = 0
    if created is not None and welcome_credit > 0:
        bank = await system_account(conn, "bank")
        await post(conn, [transfer("welcome", bank, created, welcome_credit, reason="welcome credit")])
        credited = welcome_credit
    row = await conn.fetchrow("SELECT balance, version FROM accounts WHERE user_id = $1", user_id)
    assert row is not None
    return WalletState(row["balance"], row["version"], credited)
