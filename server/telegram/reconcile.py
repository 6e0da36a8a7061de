"""Reconciliation: Telegram's Star transactions against the ledger's deposits and refunds.

Telegram's side is ``getStarTransactions``, paged (``offset``/``limit`` 100) to the end: a payment
of an invoice is a transaction with a ``source`` (the payer), its refund one with the same id and a
``receiver``. Other transactions (withdrawals, ads...) are not about deposits and are passed over.
Our side is the ledger's deposits (``ref`` = the payment's charge id; the Stars cashier is the only
writer of ``deposit`` transactions), the orders the payments name (their payload), and the refunds
(``star_refunds``). :func:`compare` (no I/O) finds, for what happened since ``since``:

- **missing credit**: a payment (not refunded) whose deposit is not in the ledger. Fixable when its
  payload names one of our orders: credited as the cashier would (the order's rate, ``ref`` = the
  charge id, so crediting twice is impossible) and the order marked paid.
- **credit without a transaction**: a deposit whose payment Telegram does not list. Not fixable here.
- **amount differs**: a deposit of other than the payment's Stars times its order's rate. Not fixable.
- **refund not reversed**: a refunded payment whose deposit is in the ledger and was not reversed.
  Fixable: reversed as any refund is (:meth:`.refunds.Refunds.reverse`; a shortfall flags the account).
- **reversal without a refund**: a refund recorded here that Telegram does not list. Not fixable here.

A payment refunded before it was credited is consistent (nothing was owed, nothing is). Updates
are handled as they arrive, so a payment of the last seconds may show as missing while its
update is on its way: reconcile what is a few minutes old.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import asyncpg
from aiogram import Bot
from aiogram.types import StarTransaction, TransactionPartnerUser

from ..db.transactions import Connection, in_transaction
from ..ledger import Deposit, Ledger, WalletState, find_deposits
from .errors import CashierUnavailable
from .orders import Order, mark_paid, order_id_of, orders_by_id
from .refunds import Refund, Refunds, RefundSource

PAGE = 100
"""Transactions asked for per ``getStarTransactions`` call (Telegram's most)."""
RECONCILE_REASON = "refunded in Telegram's transactions, reversed by croupier stars reconcile --fix"


class MismatchKind(StrEnum):
    MISSING_CREDIT = "missing credit"
    CREDIT_WITHOUT_TRANSACTION = "credit without a transaction"
    AMOUNT_DIFFERS = "amount differs"
    REFUND_NOT_REVERSED = "refund not reversed"
    REVERSAL_WITHOUT_REFUND = "reversal without a refund"


@dataclass(frozen=True, slots=True)
class StarPayment:
    """A payment of one of the bot's invoices, from Telegram's transactions."""

    charge_id: str
    user_id: int
    stars: int
    payload: str
    date: dt.datetime


@dataclass(frozen=True, slots=True)
class StarRefund:
    """A refund of a payment, from Telegram's transactions (its id is the payment's charge id)."""

    charge_id: str
    user_id: int
    stars: int
    date: dt.datetime


@dataclass(frozen=True, slots=True)
class RecordedRefund:
    """A row of ``star_refunds``."""

    charge_id: str
    user_id: int
    source: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One disagreement between Telegram and the ledger."""

    kind: MismatchKind
    charge_id: str
    detail: str
    """What it is, for people (one line)."""
    order: Order | None = None
    """With a fixable missing credit: the order to credit."""
    stars: int = 0

    @property
    def fixable(self) -> bool:
        """Whether ``--fix`` can put it right."""
        return self.kind is MismatchKind.REFUND_NOT_REVERSED or (
            self.kind is MismatchKind.MISSING_CREDIT and self.order is not None
        )

    def line(self) -> str:
        """The mismatch on one line: ``<kind>: payment <charge id>: <detail>``."""
        return f"{self.kind.value}: payment {self.charge_id}: {self.detail}"


@dataclass(slots=True)
class Ledgers:
    """Our side: deposits by charge id, the orders the payments name, refunds recorded here."""

    deposits: dict[str, Deposit] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    refunds: dict[str, RecordedRefund] = field(default_factory=dict)


async def star_transactions(bot: Bot) -> tuple[list[StarPayment], list[StarRefund]]:
    """Every payment and refund of an invoice in the bot's Star transactions (all pages)."""
    payments: list[StarPayment] = []
    refunds: list[StarRefund] = []
    offset = 0
    while True:
        page = await bot.get_star_transactions(offset=offset, limit=PAGE)
        for transaction in page.transactions:
            _sort(transaction, payments, refunds)
        if len(page.transactions) < PAGE:
            return payments, refunds
        offset += len(page.transactions)


def _sort(transaction: StarTransaction, payments: list[StarPayment], refunds: list[StarRefund]) -> None:
    source, receiver = transaction.source, transaction.receiver
    if isinstance(source, TransactionPartnerUser) and source.transaction_type in (None, "invoice_payment"):
        payments.append(StarPayment(transaction.id, source.user.id, transaction.amount, source.invoice_payload or "",
                                    transaction.date))  # fmt: skip
    elif isinstance(receiver, TransactionPartnerUser) and receiver.transaction_type in (None, "invoice_payment"):
        refunds.append(StarRefund(transaction.id, receiver.user.id, transaction.amount, transaction.date))


_RECORDED_REFUNDS = """
SELECT telegram_payment_charge_id, user_id, source, created_at FROM star_refunds
WHERE telegram_payment_charge_id = ANY($1::text[]) OR created_at >= $2
"""


async def our_side(pool: asyncpg.Pool, payments: list[StarPayment], refunds: list[StarRefund],
                   since: dt.datetime) -> Ledgers:  # fmt: skip
    """The deposits, orders and recorded refunds to compare Telegram's transactions with: those the
    transactions name, and those made since ``since``."""
    charges = sorted({p.charge_id for p in payments} | {r.charge_id for r in refunds})
    order_ids = sorted({order_id for p in payments if (order_id := order_id_of(p.payload)) is not None})

    async def read(conn: Connection) -> Ledgers:
        deposits = await find_deposits(conn, charges, since)
        rows = await conn.fetch(_RECORDED_REFUNDS, charges, since)
        return Ledgers(
            deposits={d.ref: d for d in deposits},
            orders=await orders_by_id(conn, order_ids),
            refunds={row["telegram_payment_charge_id"]: RecordedRefund(row["telegram_payment_charge_id"],
                     row["user_id"], row["source"], row["created_at"]) for row in rows},
        )  # fmt: skip

    return await in_transaction(pool, read, unavailable=CashierUnavailable)


def compare(payments: Iterable[StarPayment], refunds: Iterable[StarRefund], ours: Ledgers,
            since: dt.datetime) -> list[Mismatch]:  # fmt: skip
    """Every mismatch about what happened since ``since`` (see the module's docstring), in the order:
    Telegram's payments, our deposits, Telegram's refunds, our refunds."""
    paid = {p.charge_id: p for p in payments}
    refunded = {r.charge_id: r for r in refunds}
    found: list[Mismatch] = []
    for payment in paid.values():
        if payment.date < since:
            continue
        deposit = ours.deposits.get(payment.charge_id)
        order_id = order_id_of(payment.payload)
        order = None if order_id is None else ours.orders.get(order_id)
        what = f"{payment.stars} Stars by user {payment.user_id} on {_when(payment.date)}"
        if deposit is None:
            if payment.charge_id in refunded:
                continue  # refunded before it was credited: nothing is owed either way
            if order is None:
                found.append(Mismatch(MismatchKind.MISSING_CREDIT, payment.charge_id,
                                      f"{what} names no order of ours (payload {payment.payload[:40]!r}): "
                                      "not credited; refund it"))  # fmt: skip
            else:
                found.append(Mismatch(MismatchKind.MISSING_CREDIT, payment.charge_id,
                                      f"{what} for order {order.id} was not credited "
                                      f"({payment.stars * order.chips_per_star} chips owed)",
                                      order=order, stars=payment.stars))  # fmt: skip
        elif order is not None and deposit.amount != payment.stars * order.chips_per_star:
            found.append(Mismatch(MismatchKind.AMOUNT_DIFFERS, payment.charge_id,
                                  f"{what} for order {order.id} owes {payment.stars * order.chips_per_star} chips, "
                                  f"the ledger credited {deposit.amount}"))  # fmt: skip
    for deposit in ours.deposits.values():
        if deposit.created_at >= since and deposit.ref not in paid:
            found.append(Mismatch(MismatchKind.CREDIT_WITHOUT_TRANSACTION, deposit.ref,
                                  f"{deposit.amount} chips credited to user {deposit.user_id} on "
                                  f"{_when(deposit.created_at)}; Telegram lists no such payment"))  # fmt: skip
    for refund in refunded.values():
        if refund.date < since:
            continue
        deposit = ours.deposits.get(refund.charge_id)
        if deposit is not None and refund.charge_id not in ours.refunds:
            found.append(Mismatch(MismatchKind.REFUND_NOT_REVERSED, refund.charge_id,
                                  f"{refund.stars} Stars refunded to user {refund.user_id} on {_when(refund.date)}; "
                                  f"the {deposit.amount} chips it credited were not taken back"))  # fmt: skip
    for recorded in ours.refunds.values():
        if recorded.created_at >= since and recorded.charge_id not in refunded:
            found.append(Mismatch(MismatchKind.REVERSAL_WITHOUT_REFUND, recorded.charge_id,
                                  f"refunded here ({recorded.source}) on {_when(recorded.created_at)} for user "
                                  f"{recorded.user_id}; Telegram lists no refund"))  # fmt: skip
    return found


async def fix(mismatch: Mismatch, pool: asyncpg.Pool, ledger: Ledger, refunds: Refunds) -> str:
    """Put a fixable mismatch right (see the module's docstring); what was done, for people. Idempotent:
    a credit is made once per charge id, a refund reversed once."""
    if mismatch.kind is MismatchKind.REFUND_NOT_REVERSED:
        refund: Refund = await refunds.reverse(mismatch.charge_id, source=RefundSource.RECONCILE,
                                               reason=RECONCILE_REASON)  # fmt: skip
        short = f"; {refund.shortfall} chips short, the account flagged" if refund.shortfall else ""
        return f"reversed: {refund.taken} chips taken back from user {refund.user_id}{short}"
    order = mismatch.order
    assert mismatch.kind is MismatchKind.MISSING_CREDIT and order is not None, "not fixable"
    chips = mismatch.stars * order.chips_per_star

    async def mark(conn: Connection) -> None:
        await mark_paid(conn, order.id, mismatch.charge_id)

    wallet: WalletState = await ledger.deposit(order.user_id, chips, ref=mismatch.charge_id, also=mark)
    return f"credited: {chips} chips to user {order.user_id} (balance {wallet.balance})"


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
