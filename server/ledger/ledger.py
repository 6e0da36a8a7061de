"""The :class:`Ledger`: the only code that writes money.

Every operation is one PostgreSQL transaction whose ledger transactions balance to zero.
Bets, sign-ins and crash cash-outs go through group commit
(:class:`~server.ledger.bets.BetBatcher`, :class:`~server.ledger.signin.SignIns`,
:meth:`Ledger.record_cashout`); the rarer operations (deposits and their reversals, adjustments,
settlement, refunds) run directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg

from ..auth import TelegramUser
from ..db.groupcommit import GroupCommit
from ..db.transactions import RETRYABLE_SQLSTATES, Connection, in_transaction
from ..players.limits import Calendar
from .batching import BatchOptions
from .bets import BetBatcher, BetOutcome, BetRequest, PlacedBet, find_replay
from .deposits import CreditedDeposit, Deposit, DepositCredit, DepositReversal, find_deposits
from .errors import (
    IdempotencyConflict,
    InsufficientFunds,
    LedgerError,
    LedgerUnavailable,
    UnknownAccount,
    UnknownDeposit,
)
from .events import UserEvent, balance_event, settlement_events
from .outbox import store_events
from .postings import post, transfer
from .settlement import ClosedBet, refund_bets, settle_bets
from .signin import SignInHook, SignIns
from .wallets import WalletState, system_account, wallet_id, wallet_ids

HOUSE_SHARDS = 8
BANK_SHARDS = 8
"""Bank accounts: a deposit takes its user's (user id mod 8), so deposits do not queue on one row."""

_RECORD_CASHOUTS = """
UPDATE bets SET cashout = d.multiplier
FROM unnest($1::bigint[], $2::integer[]) AS d(id, multiplier)
WHERE bets.id = d.id AND bets.status = 'accepted' AND bets.cashout IS NULL
RETURNING bets.id
"""

_ADJUSTED_REFS = "SELECT ref FROM ledger_txns WHERE kind = 'adjust' AND ref = ANY($1::text[])"
_ADJUSTMENT = """
SELECT a.user_id, l.amount FROM ledger_txns t
JOIN ledger_legs l ON l.txn_id = t.id JOIN accounts a ON a.id = l.account_id AND a.kind = 'wallet'
WHERE t.kind = 'adjust' AND t.ref = $1
"""
"""The wallet an adjustment of a ref moved, and by how much."""

SettledHook = Callable[[Connection, Sequence[ClosedBet]], Awaitable[None]]
"""Runs in a settlement's (or refund's) transaction with the bets it closed: what it writes commits with them."""

_CREDITED_REFS = "SELECT ref FROM ledger_txns WHERE kind = 'deposit' AND ref = ANY($1::text[])"


class Ledger:
    """Wallets, bets and transfers over one asyncpg pool. Call :meth:`start` before use.

    ``batches`` sets how bets, sign-ins and cash-outs are gathered (default: ``BatchOptions()``).
    ``announce`` gets the user events of every committed operation, after the commit (they are in the
    outbox already): a node hands them to its :class:`~server.ledger.outbox.OutboxRelay`.
    ``on_settled`` runs in every settlement's transaction with the bets it closed (the node's queues
    big-win notifications: :data:`SettledHook`); ``on_sign_in`` in the sign-ins' (:data:`SignInHook`).
    ``calendar``: the periods of the players' own loss and wager limits, checked in every bet batch.
    PostgreSQL not answering raises :class:`~server.ledger.errors.LedgerUnavailable`.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        welcome_credit: int = 0,
        batches: BatchOptions | None = None,
        announce: Callable[[list[UserEvent]], None] | None = None,
        on_settled: SettledHook | None = None,
        on_sign_in: SignInHook | None = None,
        calendar: Calendar | None = None,
    ) -> None:
        self._pool = pool
        self._calendar = calendar
        self._announce = announce
        self._on_settled = on_settled
        self._on_sign_in = on_sign_in
        self._welcome_credit = welcome_credit
        self._batches = batches or BatchOptions()
        self._batcher: BetBatcher | None = None
        self._sign_ins: SignIns | None = None
        self._cashouts: GroupCommit[tuple[list[int], int], list[int]] | None = None
        self._houses: list[int] = []
        self._bank = 0
        self._banks: list[int] = []
        self.epoch = ""
        """The epoch of every user's balance stream (offsets are wallet versions)."""

    async def start(self) -> None:
        """Load the system accounts and start the bet batcher."""
        async with self._pool.acquire() as conn:
            self._houses = [await system_account(conn, "house", shard) for shard in range(HOUSE_SHARDS)]
            self._banks = [await system_account(conn, "bank", shard) for shard in range(BANK_SHARDS)]
            self._bank = self._banks[0]
            self.epoch = await conn.fetchval("SELECT epoch FROM ledger_meta")
        batches = self._batches
        self._batcher = BetBatcher(self._pool, self._houses, batches=batches, epoch=self.epoch,
                                   announce=self._announce, calendar=self._calendar)  # fmt: skip
        self._batcher.start()
        self._sign_ins = SignIns(self._pool, bank=self._bank, welcome_credit=self._welcome_credit, epoch=self.epoch,
                                 batches=batches, announce=self._announce, also=self._on_sign_in)  # fmt: skip
        self._sign_ins.start()
        self._cashouts = GroupCommit(self._record_cashouts, name="cash-outs", max_batch=batches.max_batch,
                                     max_wait=batches.max_wait, concurrency=batches.concurrency,
                                     shutdown_error=lambda: LedgerError("the node is shutting down; retry"),
                                     expected=(LedgerError,))  # fmt: skip
        self._cashouts.start()

    async def close(self) -> None:
        """Wait for bets, sign-ins and cash-outs in flight to commit, then stop taking them."""
        if self._batcher is not None:
            await self._batcher.close()
        if self._sign_ins is not None:
            await self._sign_ins.close()
        if self._cashouts is not None:
            await self._cashouts.close()

    @property
    def sign_ins(self) -> SignIns:
        assert self._sign_ins is not None, "Ledger.start() was not called"
        return self._sign_ins

    @property
    def batcher(self) -> BetBatcher:
        assert self._batcher is not None, "Ledger.start() was not called"
        return self._batcher

    async def sign_in(self, user: TelegramUser) -> WalletState:
        """Record an authenticated ``user`` and open their wallet unless it exists; group-committed
        with concurrent sign-ins (see :mod:`server.ledger.signin`). Returns the wallet's state."""
        return await self.sign_ins.sign_in(user)

    async def balance(self, user_id: int) -> WalletState:
        """The wallet's committed balance and version; zero for a user without a wallet."""
        return await self._wallet_state(user_id) or WalletState(0, 0)

    async def _wallet_state(self, user_id: int) -> WalletState | None:
        row = await self._pool.fetchrow("SELECT balance, version FROM accounts WHERE user_id = $1", user_id)
        return None if row is None else WalletState(row["balance"], row["version"])

    async def place_bet(self, request: BetRequest) -> PlacedBet:
        """Take the stake of a bet; returns once committed. See :mod:`server.ledger.bets`."""
        return await self.batcher.place(request)

    async def replay(self, request: BetRequest) -> BetOutcome | None:
        """For a bet refused before reaching the ledger (its round moved on): the first result of a
        bet already placed with the same key, a conflict if the key was used for another bet, or None."""
        async with self._pool.acquire() as conn:
            return await find_replay(conn, request)

    async def settle(
        self,
        payouts: list[tuple[int, int]],
        *,
        refunds: list[int] | None = None,
        results: Mapping[int, dict[str, Any]] | None = None,
        cashouts: Mapping[int, int] | None = None,
        also: Callable[[Connection], Awaitable[None]] | None = None,
    ) -> list[ClosedBet]:
        """Settle bets (id, payout) and refund ``refunds``, all in one transaction; bets already
        closed are skipped, so settling twice pays once. ``results`` are bets' own draws (per-bet
        games), stored with them and sent in their ``bet_settled``; ``cashouts`` the cash-outs the payouts
        were computed with, stored on bets whose own cash-out write had not committed yet. ``also`` runs in
        the same transaction (the round engine marks the round settled there)."""
        house = self._houses[0]

        async def work(conn: Connection) -> tuple[list[ClosedBet], list[UserEvent]]:
            closed = await settle_bets(conn, payouts, house, results, cashouts)
            if refunds:
                closed += await refund_bets(conn, refunds, house)
            if also is not None:
                await also(conn)
            if self._on_settled is not None and closed:
                await self._on_settled(conn, closed)
            events = settlement_events(closed, self.epoch)
            await store_events(conn, events)
            return closed, events

        closed, events = await in_transaction(self._pool, work, unavailable=LedgerUnavailable)
        self._announced(events)
        return closed

    async def record_cashout(self, bet_ids: list[int], multiplier: int) -> list[int]:
        """Record a cash-out at ``multiplier`` on bets still open and not cashed out; return those ids.

        No money moves here: the payout is made when the round settles. Cash-outs are
        group-committed: every crash player aiming at the same multiplier cashes out at once.
        """
        assert self._cashouts is not None, "Ledger.start() was not called"
        return await self._cashouts.submit((bet_ids, multiplier))

    async def _record_cashouts(self, batch: list[tuple[list[int], int]]) -> list[list[int]]:
        ids = [bet_id for bet_ids, _ in batch for bet_id in bet_ids]
        multipliers = [multiplier for bet_ids, multiplier in batch for _ in bet_ids]
        rows = await in_transaction(
            self._pool, lambda conn: conn.fetch(_RECORD_CASHOUTS, ids, multipliers), unavailable=LedgerUnavailable
        )
        recorded = {row["id"] for row in rows}
        return [[bet_id for bet_id in bet_ids if bet_id in recorded] for bet_ids, _ in batch]

    async def refund(self, bet_ids: list[int]) -> list[ClosedBet]:
        """Void bets and return their stakes, in one transaction; bets already closed are skipped."""
        return await self.settle([], refunds=bet_ids)

    async def deposit(
        self,
        user_id: int,
        amount: int,
        *,
        ref: str,
        also: Callable[[Connection], Awaitable[None]] | None = None,
    ) -> WalletState:
        """Credit ``amount`` from the bank for an external payment ``ref``; a repeated ``ref`` is a no-op.

        ``also`` runs first, in the same transaction (the cashier records the Telegram update and marks
        the order paid there): what it writes commits with the credit or not at all, and if it raises,
        nothing is written and the error is raised from here. It may run more than once (retries).
        Returns the wallet's state after the credit (its current state when ``ref`` was credited before)."""
        credit = DepositCredit(user_id, amount, ref)

        async def plan(conn: Connection) -> list[DepositCredit]:
            if also is not None:
                await also(conn)
            return [credit]

        return (await self.deposit_many(plan))[ref].wallet

    async def deposit_many(
        self, plan: Callable[[Connection], Awaitable[Sequence[DepositCredit]]]
    ) -> dict[str, CreditedDeposit]:
        """Credit, in one transaction, the deposits ``plan`` returns: ``plan`` runs first in that
        transaction (the cashier's payment batch records its updates and marks its orders paid there,
        and says which payments to credit). Each ``ref`` is credited once: a ref credited before, or
        named twice, credits nothing more. What ``plan`` writes commits with the credits or not at all;
        if it raises, nothing is written and the error is raised from here. It may run more than once
        (retries: a concurrent deposit of the same ref on another node). Returns, by ref, the wallet's
        state right after the credit (or now, for a ref credited before) and whether it was credited now.
        Raises :class:`UnknownAccount` when a user has no wallet (nothing is written)."""

        async def work(conn: Connection) -> tuple[dict[str, CreditedDeposit], list[UserEvent]]:
            credits = list(await plan(conn))
            if not credits:
                return {}, []
            wallets = await wallet_ids(conn, sorted({credit.user_id for credit in credits}))
            for credit in credits:
                if credit.user_id not in wallets:
                    raise UnknownAccount(f"user {credit.user_id} has no wallet (has the user ever authenticated?)")
            refs = list(dict.fromkeys(credit.ref for credit in credits))
            done = {row["ref"] for row in await conn.fetch(_CREDITED_REFS, refs)}
            new: list[DepositCredit] = []
            for credit in credits:
                if credit.ref not in done:
                    done.add(credit.ref)
                    new.append(credit)
            _, posted = await post(conn, [transfer("deposit", self._banks[c.user_id % BANK_SHARDS], wallets[c.user_id],
                                                   c.amount, ref=c.ref) for c in new])  # fmt: skip
            states = {account: WalletState(*posted[account]) for account in posted}
            untouched = sorted({wallets[c.user_id] for c in credits} - states.keys())
            if untouched:
                rows = await conn.fetch("SELECT id, balance, version FROM accounts WHERE id = ANY($1::bigint[])",
                                        untouched)  # fmt: skip
                states.update({row["id"]: WalletState(row["balance"], row["version"]) for row in rows})
            result = {c.ref: CreditedDeposit(c.user_id, states[wallets[c.user_id]], credited=False) for c in credits}
            # Each new credit moved its wallet's version by one: walk back from the final state for each one's own.
            running = dict(states)
            events: list[UserEvent] = []
            for credit in reversed(new):
                account = wallets[credit.user_id]
                state = running[account]
                result[credit.ref] = CreditedDeposit(credit.user_id, state, credited=True)
                events.append(balance_event(credit.user_id, state.version, self.epoch, balance=state.balance,
                                            delta=credit.amount, reason="deposit", ref=credit.ref))  # fmt: skip
                running[account] = WalletState(state.balance - credit.amount, state.version - 1)
            events.reverse()
            await store_events(conn, events)
            return result, events

        result, events = await in_transaction(self._pool, work, retry_sqlstates=RETRYABLE_SQLSTATES | {"23505"},
                                              unavailable=LedgerUnavailable)  # fmt: skip
        self._announced(events)
        return result

    async def deposit_of(self, ref: str) -> Deposit | None:
        """The deposit credited for ``ref`` (with its reversal, if one moved chips), or None."""
        found = await find_deposits(self._pool, [ref])
        return found[0] if found else None

    async def reverse_deposit(
        self,
        ref: str,
        *,
        reason: str,
        allow_shortfall: bool = False,
        also: Callable[[Connection, DepositReversal], Awaitable[None]] | None = None,
    ) -> DepositReversal:
        """Take back the chips the deposit of ``ref`` credited (its payment was refunded): from the
        wallet to the bank, one ``reversal`` transaction with its ``balance`` event (``delta`` < 0,
        reason ``reversal``, ``ref``) in the outbox.

        A wallet holding less than the deposit credited raises :class:`InsufficientFunds` and changes
        nothing, unless ``allow_shortfall``: then it gives what it holds (to zero; nothing moves when it
        is empty) and the result's ``shortfall`` is the rest. Reversing a ``ref`` again moves nothing
        (the result says ``reversed_before``). ``also`` runs last, in the same transaction, with the
        result: what it writes commits with the reversal, and if it raises nothing is written and the
        error is raised from here. It may run more than once (retries). Raises :class:`UnknownDeposit`
        when no deposit was credited for ``ref``.
        """
        if not reason.strip():
            raise ValueError("a reversal needs a reason")

        async def work(conn: Connection) -> tuple[DepositReversal, list[UserEvent]]:
            found = await find_deposits(conn, [ref])
            if not found:
                raise UnknownDeposit(f"no deposit was credited for {ref!r}")
            deposit = found[0]
            # Bank and wallet locked in id order (post()'s lock order), before the reversal is looked for:
            # two reversals of one ref queue here and the second finds the first's.
            rows = await conn.fetch("SELECT id, balance, version FROM accounts WHERE id = ANY($1::bigint[]) "
                                    "ORDER BY id FOR UPDATE", [self._bank, deposit.wallet])  # fmt: skip
            balance = next(row["balance"] for row in rows if row["id"] == deposit.wallet)
            taken: int | None = await conn.fetchval(
                "SELECT -l.amount FROM ledger_txns t JOIN ledger_legs l ON l.txn_id = t.id AND l.account_id = $2 "
                "WHERE t.kind = 'reversal' AND t.ref = $1", ref, deposit.wallet)  # fmt: skip
            events: list[UserEvent] = []
            if taken is not None:
                reversal = DepositReversal(ref, deposit.user_id, deposit.amount, taken, balance, reversed_before=True)
            else:
                take = min(balance, deposit.amount)
                if take < deposit.amount and not allow_shortfall:
                    raise InsufficientFunds(f"the wallet of user {deposit.user_id} holds {balance}, less than the "
                                            f"{deposit.amount} its deposit {ref!r} credited")  # fmt: skip
                if take > 0:
                    await post(conn, [transfer("reversal", deposit.wallet, self._bank, take, ref=ref, reason=reason)])
                    state = await self._state(conn, deposit.wallet)
                    balance = state.balance
                    events.append(balance_event(deposit.user_id, state.version, self.epoch, balance=balance,
                                                delta=-take, reason="reversal", ref=ref))  # fmt: skip
                    await store_events(conn, events)
                reversal = DepositReversal(ref, deposit.user_id, deposit.amount, take, balance)
            if also is not None:
                await also(conn, reversal)
            return reversal, events

        reversal, events = await in_transaction(self._pool, work, retry_sqlstates=RETRYABLE_SQLSTATES | {"23505"},
                                                unavailable=LedgerUnavailable)  # fmt: skip
        self._announced(events)
        return reversal

    async def adjust(
        self,
        user_id: int,
        amount: int,
        *,
        reason: str,
        ref: str | None = None,
        also: Callable[[Connection, WalletState | None], Awaitable[None]] | None = None,
    ) -> WalletState:
        """Admin credit (``amount`` > 0) or debit (< 0) against the bank, with a reason for people.

        A debit larger than the balance raises :class:`InsufficientFunds` and changes nothing. With ``ref``
        (unique among adjustments: migration 0013) it is made once: a repeated ``ref`` moves nothing and
        returns the wallet's state now, and the same ``ref`` for another user or amount raises
        :class:`IdempotencyConflict`. ``also`` runs last in the same transaction, with the wallet's state
        after the adjustment (None when ``ref`` was adjusted before): what it writes commits with it; it
        may run more than once (retries).
        """
        if amount == 0 or not reason.strip():
            raise ValueError("an adjustment needs a non-zero amount and a reason")

        async def work(conn: Connection) -> tuple[WalletState, list[UserEvent]]:
            wallet = await self._wallet(conn, user_id)
            if ref is not None and (prior := await conn.fetchrow(_ADJUSTMENT, ref)) is not None:
                if (prior["user_id"], prior["amount"]) != (user_id, amount):
                    raise IdempotencyConflict(f"the adjustment {ref!r} was made for user {prior['user_id']} "
                                              f"with {prior['amount']}")  # fmt: skip
                if also is not None:
                    await also(conn, None)
                return await self._state(conn, wallet), []
            source, target = (self._bank, wallet) if amount > 0 else (wallet, self._bank)
            try:
                await post(conn, [transfer("adjust", source, target, abs(amount), ref=ref, reason=reason)])
            except asyncpg.CheckViolationError:
                raise InsufficientFunds(f"the wallet of user {user_id} holds less than {-amount}") from None
            state = await self._state(conn, wallet)
            events = [balance_event(user_id, state.version, self.epoch, balance=state.balance, delta=amount,
                                    reason="adjust", ref=None)]  # fmt: skip
            await store_events(conn, events)
            if also is not None:
                await also(conn, state)
            return state, events

        # A concurrent adjustment with the same ref commits first: ours fails on the unique ref and is retried.
        state, events = await in_transaction(self._pool, work, retry_sqlstates=RETRYABLE_SQLSTATES | {"23505"},
                                             unavailable=LedgerUnavailable)  # fmt: skip
        self._announced(events)
        return state

    async def credit_batch(self, user_ids: Sequence[int], amount: int, *, batch: str, reason: str) -> int:
        """Credit ``amount`` (> 0) from the bank to each of ``user_ids`` once per ``batch``, in one
        transaction: an ``adjust`` with ref ``<batch>:<user id>`` each, so running the batch again credits
        nobody twice (a unique index). Users who never signed in get their user row and wallet here (an
        empty profile, written over at their first sign-in; no welcome credit). Returns how many were
        credited now."""
        if amount <= 0 or not reason.strip() or not batch.strip():
            raise ValueError("a batch credit needs a positive amount, a batch reference and a reason")
        users = sorted(set(user_ids))
        async with self._pool.acquire() as conn:
            have = await wallet_ids(conn, users)
        await asyncio.gather(*(self.sign_ins.sign_in(TelegramUser(id=user, first_name="")) for user in users
                               if user not in have))  # fmt: skip
        refs = {user: f"{batch}:{user}" for user in users}

        async def work(conn: Connection) -> tuple[int, list[UserEvent]]:
            done = {row["ref"] for row in await conn.fetch(_ADJUSTED_REFS, list(refs.values()))}
            todo = [user for user in users if refs[user] not in done]
            wallets = await wallet_ids(conn, todo)
            _, posted = await post(conn, [transfer("adjust", self._bank, wallets[user], amount, ref=refs[user],
                                                   reason=reason) for user in todo])  # fmt: skip
            events = [balance_event(user, posted[wallets[user]][1], self.epoch, balance=posted[wallets[user]][0],
                                    delta=amount, reason="adjust", ref=None) for user in todo]  # fmt: skip
            await store_events(conn, events)
            return len(todo), events

        credited, events = await in_transaction(self._pool, work, retry_sqlstates=RETRYABLE_SQLSTATES | {"23505"},
                                                unavailable=LedgerUnavailable)  # fmt: skip
        self._announced(events)
        return credited

    def _announced(self, events: list[UserEvent]) -> None:
        """Hand events of a committed transaction to the relay (they are in the outbox already)."""
        if events and self._announce is not None:
            self._announce(events)

    async def _wallet(self, conn: Connection, user_id: int) -> int:
        account = await wallet_id(conn, user_id)
        if account is None:
            raise UnknownAccount(f"user {user_id} has no wallet (has the user ever authenticated?)")
        return account

    async def _state(self, conn: Connection, account: int) -> WalletState:
        row = await conn.fetchrow("SELECT balance, version FROM accounts WHERE id = $1", account)
        assert row is not None
        return WalletState(row["balance"], row["version"])
