"""Fixtures for ledger tests: a migrated database, ledgers (one per simulated node), funded users.

Users and wallets are made the way production makes them: signed in through :meth:`Ledger.sign_in`
(the user row, the wallet, the ledger's welcome credit), then funded with a deposit from the bank.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from server.auth import TelegramUser
from server.ledger import Ledger, WalletState

_ids = itertools.count(secrets.randbelow(10**9) * 1000 + 10**12)


def next_user_id() -> int:
    """A user id no other test of this run uses."""
    return next(_ids)


@pytest.fixture
async def open_round(pool: asyncpg.Pool) -> int:
    """A dice round in ``betting`` (no engine runs in ledger tests), for bets to land in."""
    return await create_open_round(pool, "dice")


async def create_open_round(pool: asyncpg.Pool, game: str) -> int:
    chain = await pool.fetchval(
        "INSERT INTO seed_chains (game, terminating_hash, length, next_index) VALUES ($1, repeat('0', 64), 1, 2) "
        "RETURNING id",
        game,
    )
    round_id: int = await pool.fetchval(
        "INSERT INTO rounds (game, phase, chain_id, chain_idx, seed_hash, closes_at) "
        "VALUES ($1, 'betting', $2, 1, repeat('0', 64), now() + interval '1 hour') RETURNING id",
        game,
        chain,
    )
    return round_id


async def sign_up(ledger: Ledger, user_id: int, first_name: str | None = None) -> WalletState:
    """Sign ``user_id`` in through ``ledger`` as an ``auth`` does: the user recorded, the wallet opened
    with the ledger's welcome credit unless it exists. Returns the wallet's state."""
    return await ledger.sign_in(TelegramUser(id=user_id, first_name=first_name or f"u{user_id}"))


NewUser = Callable[..., Awaitable[int]]


@pytest.fixture
def new_user(ledger: Ledger) -> NewUser:
    """Create a user with a wallet holding ``balance`` (deposited from the bank); return its id."""

    async def create(balance: int = 0) -> int:
        user_id = next_user_id()
        await sign_up(ledger, user_id)
        if balance:
            await ledger.deposit(user_id, balance, ref=f"seed-{user_id}")
        return user_id

    return create
