"""Sign-ins, group-committed: the user's record and wallet for every socket that authenticates.

A connect storm (a channel post, a launch) brings thousands of sockets within seconds. One at a
time, a new user costs two commits (the user row, then the wallet with its welcome credit), and
every welcome credit waits for the bank account's row lock: about 400 sign-ups a second on the
team's 2-core machine. :class:`SignIns` gathers concurrent sign-ins like bets
(:class:`~server.db.groupcommit.GroupCommit`):

1. one read for the whole batch tells who is known with an unchanged profile (seen within
   :data:`~server.db.users.SEEN_PRECISION`) and has a wallet: those are done, with no
   transaction (returning users); the same read finds blocked accounts, refused with
   :class:`AccountBlocked` (nothing written), and users with a session time limit (checked by the session);
2. the others are written in one transaction: user rows upserted, wallets opened, the welcome
   credits posted (one ledger transaction each, from the bank) and their ``balance`` events
   stored in the outbox; the events are announced after the commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from protocol import ErrorCode

from ..auth import TelegramUser
from ..db import UNAVAILABLE_ERRORS
from ..db.groupcommit import GroupCommit
from ..db.transactions import Connection, in_transaction
from ..db.users import SEEN_PRECISION, UPSERT_USERS
from .batching import BatchOptions
from .errors import LedgerError, LedgerUnavailable
from .events import UserEvent, welcome_event
from .outbox import store_events
from .postings import post, transfer
from .wallets import WalletState

_READ = """
SELECT q.id,
       coalesce(u.first_name = q.first_name AND u.last_name IS NOT DISTINCT FROM q.last_name
                AND u.username IS NOT DISTINCT FROM q.username
                AND u.language_code IS NOT DISTINCT FROM q.language_code
                AND u.is_premium = q.is_premium AND u.allows_write_to_pm = q.allows_write_to_pm
                AND u.last_seen_at > now() - make_interval(secs => $8),
                false) AS current,
       a.balance, a.version,
       EXISTS (SELECT 1 FROM account_restrictions r WHERE r.user_id = q.id AND r.kind = 'blocked') AS blocked,
       CASE WHEN a.limited THEN EXISTS (SELECT 1 FROM player_limits l WHERE l.user_id = q.id AND l.kind = 'session')
            ELSE false END AS session_limited
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::boolean[])
     AS q(id, first_name, last_name, username, language_code, is_premium, allows_write_to_pm)
LEFT JOIN users u ON u.id = q.id
LEFT JOIN accounts a ON a.user_id = q.id
"""

_OPEN_WALLETS = """
INSERT INTO accounts (kind, user_id)
SELECT 'wallet', id FROM unnest($1::bigint[]) AS t(id) ORDER BY id
ON CONFLICT (user_id) DO NOTHING
RETURNING id, user_id
"""

_WALLETS = "SELECT user_id, balance, version FROM accounts WHERE user_id = ANY($1::bigint[])"


def _profiles(users: Sequence[TelegramUser]) -> list[list[object]]:
    return [
        [u.id for u in users],
        [u.first_name for u in users],
        [u.last_name for u in users],
        [u.username for u in users],
        [u.language_code for u in users],
        [u.is_premium for u in users],
        [u.allows_write_to_pm for u in users],
    ]


class AccountBlocked(LedgerError):
    """The user's account is blocked (an ``account_restrictions`` row of kind ``blocked``, set by the back
    office): nothing was written, and the socket is refused (close 4403)."""

    code = ErrorCode.FORBIDDEN


SignInHook = Callable[[Connection, Sequence[TelegramUser]], Awaitable[None]]
"""Runs in a sign-in batch's write transaction with the users whose profile it writes (new, changed, or
not seen for :data:`~server.db.users.SEEN_PRECISION`), in id order: what it writes commits with them.
The node's makes users whose initData allows it reachable for the bot's notifications."""


class SignIns:
    """Records authenticating users and opens their wallets, many per commit; ``also``: see
    :data:`SignInHook`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        bank: int,
        welcome_credit: int,
        epoch: str,
        batches: BatchOptions,
        announce: Callable[[list[UserEvent]], None] | None = None,
        also: SignInHook | None = None,
    ) -> None:
        self._pool = pool
        self._also = also
        self._bank = bank
        self._welcome_credit = welcome_credit
        self._epoch = epoch
        self._announce = announce
        self._group: GroupCommit[TelegramUser, WalletState] = GroupCommit(
            self._commit,
            name="sign-ins",
            max_batch=batches.max_batch,
            max_wait=batches.max_wait,
            concurrency=batches.concurrency,
            shutdown_error=lambda: LedgerError("the node is shutting down; sign in again"),
            expected=(LedgerError, *(e for e in UNAVAILABLE_ERRORS if issubclass(e, Exception))),
        )

    def start(self) -> None:
        self._group.start()

    async def close(self) -> None:
        """Stop taking sign-ins; wait for those in flight to commit."""
        await self._group.close()

    @property
    def batches(self) -> int:
        """Batches answered so far (reads and writes)."""
        return self._group.batches

    async def sign_in(self, user: TelegramUser) -> WalletState:
        """Record ``user`` as seen now (creating it on first sight) and open their wallet (with the
        welcome credit) unless it exists; return the wallet's committed state."""
        return await self._group.submit(user)

    async def _commit(self, batch: list[TelegramUser]) -> list[WalletState | Exception]:
        latest = {user.id: user for user in batch}  # a user on several sockets: one row, their last profile
        users = sorted(latest.values(), key=lambda u: u.id)  # rows locked in id order: no deadlocks
        rows = await self._pool.fetch(_READ, *_profiles(users), SEEN_PRECISION)
        states: dict[int, WalletState] = {}
        stale: list[TelegramUser] = []
        no_wallet: list[int] = []
        blocked: set[int] = set()
        for row in rows:
            if row["blocked"]:  # read with the profile, in the same statement: no query more per sign-in
                blocked.add(row["id"])
                continue
            if row["version"] is None:
                no_wallet.append(row["id"])
            else:
                states[row["id"]] = WalletState(row["balance"], row["version"], session_limited=row["session_limited"])
            if not row["current"]:
                stale.append(latest[row["id"]])
        if stale or no_wallet:
            written, events = await in_transaction(
                self._pool, lambda conn: self._write(conn, stale, no_wallet), unavailable=LedgerUnavailable
            )
            states.update(written)
            if events and self._announce is not None:
                self._announce(events)
        return [AccountBlocked("this account is blocked") if user.id in blocked else states[user.id] for user in batch]

    async def _write(
        self, conn: Connection, stale: list[TelegramUser], no_wallet: list[int]
    ) -> tuple[dict[int, WalletState], list[UserEvent]]:
        if stale:
            await conn.execute(UPSERT_USERS, *_profiles(stale))
            if self._also is not None:
                await self._also(conn, stale)
        credited: dict[int, int] = {}
        if no_wallet:
            opened = await conn.fetch(_OPEN_WALLETS, no_wallet)  # none if another node opened them meanwhile
            if opened and self._welcome_credit > 0:
                await post(conn, [transfer("welcome", self._bank, row["id"], self._welcome_credit,
                                           reason="welcome credit") for row in opened])  # fmt: skip
                credited = {row["user_id"]: self._welcome_credit for row in opened}
        states: dict[int, WalletState] = {}
        if no_wallet:
            for row in await conn.fetch(_WALLETS, no_wallet):
                user_id = row["user_id"]
                states[user_id] = WalletState(row["balance"], row["version"], credited.get(user_id, 0))
        events = [welcome_event(user_id, state, self._epoch) for user_id, state in states.items() if state.credited]
        await store_events(conn, events)
        return states, events
