"""Refunds of Stars payments: the deposit a refunded payment credited is reversed, once.

A payment is refunded from Telegram's side (the bot gets a ``message.refunded_payment``:
:meth:`Refunds.refunded`), by the operator (``croupier stars refund``: ``refundStarPayment``, then
:meth:`Refunds.reverse`) or found refunded by ``croupier stars reconcile --fix``. Each way ends in
:meth:`Refunds.reverse`, ONE transaction that:

- takes the chips the deposit credited back from the wallet through the ledger
  (:meth:`~server.ledger.Ledger.reverse_deposit`: a ``reversal`` to the bank with its ``balance``
  event, ``delta`` < 0, in the outbox); a wallet that has played them already is taken to zero;
- writes the ``star_refunds`` row (charge id, credited, taken, so the shortfall, who refunded and
  why): the row is the payment's refund, so a second refund of the charge, or the same update
  delivered again, finds it and changes nothing;
- marks the order ``refunded``, and with a shortfall flags the account (:mod:`.restrictions`: its
  next pre-checkout is refused); the operator finds what is owed in the ``refund_shortfalls`` view;
- queues the player's notice of the refund (:mod:`.notifications`, sent after the commit), and
  records the ``refunded_payment`` update, when one reported the refund.

Money stays integers and every ledger transaction sums to zero; ``croupier audit`` checks that no
reversal takes back more than its deposit credited.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from aiogram.types import Message

from ..db import UNAVAILABLE_ERRORS
from ..db.transactions import Connection, in_transaction
from ..ledger import Deposit, DepositReversal, Ledger, UnknownDeposit, find_deposits
from .errors import CashierUnavailable
from .notifications import queue, refund_key
from .orders import STARS, Order, mark_refunded, order_paid_by
from .restrictions import RestrictionKind, restrict
from .templates import NotificationKind
from .updates import UpdateAlreadyHandled, record_update

log = logging.getLogger(__name__)

TELEGRAM_REASON = "refunded by Telegram"


class RefundSource(StrEnum):
    """Who refunded a payment."""

    TELEGRAM = "telegram"
    """Telegram's side (the bot got ``refunded_payment``)."""
    OPERATOR = "operator"
    """``croupier stars refund``."""
    RECONCILE = "reconcile"
    """``croupier stars reconcile --fix`` found it refunded and not reversed."""


class RefundError(Exception):
    """Base of why a payment cannot be refunded or reversed here; the message says it for people."""


class NothingToRefund(RefundError):
    """No deposit was credited for that charge id (not a payment of ours, or never credited)."""


class AlreadyRefunded(RefundError):
    """The payment was refunded before (its ``star_refunds`` row exists): nothing was changed."""


@dataclass(frozen=True, slots=True)
class RefundPlan:
    """What refunding a payment would do, read before anything is asked of Telegram."""

    charge_id: str
    user_id: int
    """The payer (``refundStarPayment`` needs them)."""
    order_id: int | None
    stars: int | None
    """What the payment was, in Stars (None: no order of ours names the charge)."""
    credited: int
    """Chips its deposit credited."""
    balance: int
    """Chips the wallet holds now."""
    refunded_at: dt.datetime | None
    """When the payment was refunded here (None: it was not)."""

    @property
    def shortfall(self) -> int:
        """Chips the wallet could not give back if it were reversed now."""
        return max(0, self.credited - self.balance)


@dataclass(frozen=True, slots=True)
class Refund:
    """A refunded payment's reversal, as committed."""

    charge_id: str
    user_id: int
    order_id: int | None
    credited: int
    taken: int
    balance: int
    """The wallet's balance after."""
    flagged: bool
    """The shortfall flagged the account now (False also when it was restricted before)."""

    @property
    def shortfall(self) -> int:
        """Chips the wallet could not give back: owed to the operator."""
        return self.credited - self.taken


_REFUNDED_AT = "SELECT created_at FROM star_refunds WHERE telegram_payment_charge_id = $1"

_INSERT_REFUND = """
INSERT INTO star_refunds (telegram_payment_charge_id, user_id, order_id, credited, taken, source, reason, update_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (telegram_payment_charge_id) DO NOTHING
RETURNING telegram_payment_charge_id
"""


class Refunds:
    """Refunds of Stars payments over one pool and one ledger, for one bot (whose updates are recorded)."""

    def __init__(self, pool: asyncpg.Pool, ledger: Ledger, *, bot_id: int) -> None:
        self._pool = pool
        self._ledger = ledger
        self._bot_id = bot_id

    async def plan(self, charge_id: str) -> RefundPlan:
        """What refunding ``charge_id`` would do now. Raises :class:`NothingToRefund` or
        :class:`~.errors.CashierUnavailable` (PostgreSQL)."""

        async def read(conn: Connection) -> tuple[Deposit, Order | None, dt.datetime | None]:
            deposits = await find_deposits(conn, [charge_id])
            if not deposits:
                raise NothingToRefund(f"no payment with charge id {charge_id!r} was credited here")
            return deposits[0], await order_paid_by(conn, charge_id), await conn.fetchval(_REFUNDED_AT, charge_id)

        deposit, order, refunded_at = await in_transaction(self._pool, read, unavailable=CashierUnavailable)
        try:
            wallet = await self._ledger.balance(deposit.user_id)
        except UNAVAILABLE_ERRORS as exc:
            raise CashierUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        return RefundPlan(charge_id, deposit.user_id, None if order is None else order.id,
                          None if order is None else order.stars, deposit.amount, wallet.balance,
                          refunded_at)  # fmt: skip

    async def reverse(self, charge_id: str, *, source: RefundSource, reason: str,
                      update_id: int | None = None) -> Refund:  # fmt: skip
        """Reverse the deposit of refunded payment ``charge_id``: see the module's docstring. The payment
        has left already, so a wallet that cannot cover it is taken to zero and flagged.

        Raises :class:`AlreadyRefunded`, :class:`NothingToRefund`, :class:`~.updates.UpdateAlreadyHandled`
        (``update_id`` was recorded before) or :class:`~server.ledger.LedgerUnavailable`; each time
        nothing was written.
        """
        flagged = False
        order_id: int | None = None

        async def write(conn: Connection, reversal: DepositReversal) -> None:
            nonlocal flagged, order_id
            if update_id is not None and not await record_update(conn, self._bot_id, update_id, "refunded_payment"):
                raise UpdateAlreadyHandled
            await mark_refunded(conn, charge_id)
            order = await order_paid_by(conn, charge_id)
            order_id = None if order is None else order.id
            row = await conn.fetchval(_INSERT_REFUND, charge_id, reversal.user_id, order_id, reversal.credited,
                                      reversal.taken, source.value, reason, update_id)  # fmt: skip
            if row is None:
                raise AlreadyRefunded(f"payment {charge_id!r} was refunded before")
            flagged = reversal.shortfall > 0 and await restrict(
                conn, reversal.user_id, RestrictionKind.FLAGGED,
                f"refund of payment {charge_id}: {reversal.shortfall} chips short",
            )  # fmt: skip
            if order is not None:  # the player's notice, sent after the commit (:mod:`.notifications`)
                await queue(conn, reversal.user_id, NotificationKind.REFUND, {"stars": order.stars,
                            "chips": reversal.taken}, refund_key(charge_id))  # fmt: skip

        try:
            reversal = await self._ledger.reverse_deposit(charge_id, reason=reason, allow_shortfall=True, also=write)
        except UnknownDeposit:
            raise NothingToRefund(f"no payment with charge id {charge_id!r} was credited here") from None
        refund = Refund(charge_id, reversal.user_id, order_id, reversal.credited, reversal.taken, reversal.balance,
                        flagged)  # fmt: skip
        if refund.shortfall:
            log.warning("payment %s refunded (%s): user %d had played %d of the %d chips it credited; wallet taken "
                        "to zero, the shortfall recorded%s", charge_id, source.value, refund.user_id, refund.shortfall,
                        refund.credited, ", the account flagged" if flagged else "")  # fmt: skip
        else:
            log.info("payment %s refunded (%s): %d chips taken back from user %d, balance %d", charge_id,
                     source.value, refund.taken, refund.user_id, refund.balance)  # fmt: skip
        return refund

    async def refunded(self, update_id: int, message: Message) -> None:
        """A ``message.refunded_payment`` (Telegram refunded a payment): reverse its deposit once.

        A payment refunded before, or that was never credited here (nothing to reverse: logged as an
        error for the operator), only has its update recorded. Raises
        :class:`~server.ledger.LedgerUnavailable` or :class:`~.errors.CashierUnavailable` when PostgreSQL
        does not answer (nothing committed: Telegram's re-delivery tries again).
        """
        payment = message.refunded_payment
        assert payment is not None
        charge = payment.telegram_payment_charge_id
        if payment.currency != STARS:
            log.error("refund %s of %d %s is not in Stars: nothing reversed", charge, payment.total_amount,
                      payment.currency)  # fmt: skip
            await self._record(update_id)
            return
        try:
            await self.reverse(charge, source=RefundSource.TELEGRAM, reason=TELEGRAM_REASON, update_id=update_id)
        except UpdateAlreadyHandled:
            log.info("update %d (refund of %s) handled before: nothing to do", update_id, charge)
        except AlreadyRefunded:
            log.info("update %d: payment %s was refunded before: nothing to do", update_id, charge)
            await self._record(update_id)
        except NothingToRefund:
            log.error("Telegram refunded payment %s (%d Stars, payload %r), which was never credited here: "
                      "nothing reversed", charge, payment.total_amount, payment.invoice_payload[:40])  # fmt: skip
            await self._record(update_id)

    async def _record(self, update_id: int) -> None:
        await in_transaction(self._pool, lambda conn: record_update(conn, self._bot_id, update_id, "refunded_payment"),
                             unavailable=CashierUnavailable)  # fmt: skip
