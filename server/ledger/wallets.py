"""Wallets: one account per user, opened at first sign-in (:mod:`server.ledger.signin`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..db.transactions import Connection


@dataclass(frozen=True, slots=True)
class WalletState:
    """A wallet's balance and version (the offset of the user's balance stream)."""

    balance: int
    version: int
    credited: int = 0
    """The welcome credit paid by this call (only when it opened the wallet)."""
    session_limited: bool = False
    """The user has set a session time limit (a sign-in reads it: :mod:`server.players.limits`)."""


async def system_account(conn: Connection, kind: str, shard: int = 0) -> int:
    """The id of a house or bank account (``shard`` 0..7)."""
    account_id: int | None = await conn.fetchval("SELECT id FROM accounts WHERE kind = $1 AND shard = $2", kind, shard)
    if account_id is None:
        raise LookupError(f"no {kind} account for shard {shard}: migrations not applied?")
    return account_id


async def wallet_id(conn: Connection, user_id: int) -> int | None:
    """The account id of the user's wallet, or None if the user has none."""
    account_id: int | None = await conn.fetchval("SELECT id FROM accounts WHERE user_id = $1", user_id)
    return account_id


async def wallet_ids(conn: Connection, user_ids: list[int]) -> dict[int, int]:
    """The account ids of the wallets of ``user_ids``, by user id (users without a wallet left out)."""
    rows = await conn.fetch("SELECT user_id, id FROM accounts WHERE user_id = ANY($1::bigint[])", user_ids)
    return {row["user_id"]: row["id"] for row in rows}
