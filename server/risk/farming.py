"""Welcome-credit farming: many new accounts claiming the welcome credit from one client address.

Every new wallet gets ``CROUPIER_WELCOME_CREDIT`` chips once; someone who opens account after account
(Telegram accounts are cheap) collects it each time, and may pour the chips into one account through
bets that lose to it (:mod:`.sides`). A user is flagged when their account was created in the window,
claimed the welcome credit, and first signed in from an address from which at least ``min_accounts``
(5) such new accounts came in the window. The score is the number of those accounts; the evidence names
the address and the accounts (the first 50).

Needs the addresses recorded at sign-in (``signin_addresses``, written by
:class:`~server.risk.addresses.SigninAddresses` when the node hands it each authenticated socket's
address): without them the detector finds nothing. With no welcome credit (0, the default outside
development) nobody claims one and nothing is flagged. Players behind one carrier-grade NAT, a
university or an office share an address honestly: five new players a day from one address is a lead
to look at (their bets, :mod:`.sides`), not a verdict.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from ..db.transactions import Connection
from .flags import Flag, FlagKind, Window

MIN_ACCOUNTS = 5
_LISTED = 50


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account created in the window, an address it signed in from, and whether it claimed the welcome credit."""

    user_id: int
    address: str
    created_at: dt.datetime
    welcomed: bool


# Driven by signin_addresses_by_time; the welcome credit is the wallet's leg of a `welcome` transaction.
_NEW_ACCOUNTS = """
SELECT s.user_id, host(s.address) AS address, u.created_at,
       EXISTS (SELECT 1 FROM ledger_legs l JOIN ledger_txns t ON t.id = l.txn_id
               WHERE l.account_id = a.id AND t.kind = 'welcome') AS welcomed
FROM signin_addresses s
JOIN users u ON u.id = s.user_id
JOIN accounts a ON a.user_id = s.user_id
WHERE s.first_seen >= $1 AND s.first_seen < $2 AND u.created_at >= $1 AND u.created_at < $2
"""


async def new_accounts(conn: Connection, window: Window) -> list[NewAccount]:
    """The accounts created in ``window`` with the addresses they signed in from then."""
    rows = await conn.fetch(_NEW_ACCOUNTS, window.start, window.end)
    return [NewAccount(row["user_id"], row["address"], row["created_at"], row["welcomed"]) for row in rows]


def farming_flags(accounts: Iterable[NewAccount], min_accounts: int = MIN_ACCOUNTS) -> list[Flag]:
    """One flag per welcomed new account that shares an address with ``min_accounts`` or more of them, or
    with the most of them when it shares several such addresses."""
    by_address: dict[str, dict[int, NewAccount]] = {}
    for account in accounts:
        if account.welcomed:
            by_address.setdefault(account.address, {})[account.user_id] = account
    busiest: dict[int, str] = {}
    for address, users in by_address.items():
        if len(users) < min_accounts:
            continue
        for user_id in users:
            known = busiest.get(user_id)
            if known is None or len(by_address[known]) < len(users):
                busiest[user_id] = address
    flags = []
    for user_id, address in busiest.items():
        group = sorted(by_address[address].values(), key=lambda account: (account.created_at, account.user_id))
        first, last = group[0].created_at, group[-1].created_at
        flags.append(Flag(user_id, FlagKind.WELCOME_FARMING, len(group), {
            "summary": f"one of {len(group)} new accounts claiming the welcome credit from {address}, created "
                       f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC",
            "address": address,
            "accounts": [account.user_id for account in group[:_LISTED]],
            "count": len(group),
            "rule": {"min_accounts": min_accounts},
        }))  # fmt: skip
    return flags
