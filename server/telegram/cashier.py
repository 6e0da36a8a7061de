"""The cashier: chips bought with Telegram Stars, credited exactly once per payment.

- :meth:`Cashier.deposit` (the ``deposit`` request): a restricted account (:mod:`.restrictions`) is
  refused, the limits are checked and a pending order is committed first, then the invoice link is
  made with ``createInvoiceLink`` (currency ``XTR``, no provider token, one price, the order id as
  payload). If the Bot API fails, the order is cancelled
  and :class:`~.errors.BotApiUnavailable` raised: no link exists, nothing can be paid.
- :meth:`Cashier.check_out` (a ``pre_checkout_query``): the order is checked (:func:`.orders.checkout_refusal`)
  and so is the payer (a restricted account, :mod:`.restrictions`, is refused); the query is answered
  ``ok`` or ``ok: false`` with the reason, at once (Telegram cancels the checkout after 10 s).
- :meth:`Cashier.paid` (a ``message.successful_payment``): in ONE transaction the update is recorded,
  the order marked paid with the charge id and the wallet credited by the ledger's deposit with
  ``ref`` = the ``telegram_payment_charge_id``, with its ``balance`` event in the outbox, and the
  receipt queued in the notifications outbox (:mod:`.notifications`, one per charge); payments
  reported at the same time share that transaction (:mod:`.payments`, group commit). A
  re-delivered update finds its row and changes nothing; the same charge in another update is
  credited nothing by the ledger (one deposit per ref). The outbox relay pushes ``balance`` (reason
  ``deposit``, ``ref`` the charge id) to the user's sockets on every node.

A node without a bot token of its own (``CROUPIER_DEV`` with a generated token, or only
``CROUPIER_BOT_ID``) has a cashier without a bot: every deposit is refused with ``deposit_refused``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import asyncpg
from aiogram import Bot
from aiogram.exceptions import AiogramError, TelegramBadRequest
from aiogram.types import LabeledPrice, Message, PreCheckoutQuery

from ..db.transactions import Connection, in_transaction
from ..ledger import BatchOptions, Ledger
from ..players import ResponsibleGaming
from ..players.limits import Refusal
from .bot import redacted
from .errors import BotApiUnavailable, CashierUnavailable, DepositOverLimit, DepositRefused
from .orders import STARS, DepositLimits, Order, cancel_order, checkout_refusal, get_order, open_order
from .orders import order_id_of as order_of_payload
from .payments import Payment, PaymentIntake, PaymentOutcome
from .restrictions import REFUSAL as RESTRICTED
from .restrictions import restriction_of
from .updates import handled, record_update

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 5
"""Seconds the answer to a pre-checkout query may take (Telegram waits 10 s in all)."""
RESTRICTED_DEPOSIT = "this account cannot buy chips at the moment; send /paysupport to the bot for help"
"""The ``deposit_refused`` message of a restricted account (:mod:`.restrictions`): it gives no reason away."""
NOT_ENABLED = "deposits are not enabled on this server (it has no bot token of its own)"


@dataclass(frozen=True, slots=True)
class CashierOptions:
    """What the cashier is configured with (see :class:`server.settings.Settings`)."""

    limits: DepositLimits
    chips_per_star: int
    title: str
    description: str
    """Templates of the invoice's title and description, with ``{stars}`` and ``{chips}`` (checked by the settings)."""


@dataclass(frozen=True, slots=True)
class DepositInvoice:
    """A pending order and the invoice link that pays it."""

    order_id: int
    url: str
    stars: int
    chips: int


class Cashier:
    """Deposits in Telegram Stars over one pool, one ledger and one bot (None: deposits not enabled)."""

    def __init__(self, pool: asyncpg.Pool, ledger: Ledger, bot: Bot | None, options: CashierOptions, *,
                 bot_id: int, batches: BatchOptions | None = None,
                 responsible: ResponsibleGaming | None = None) -> None:  # fmt: skip
        self._pool = pool
        self._responsible = responsible
        self._ledger = ledger
        self._bot = bot
        self._options = options
        self._bot_id = bot_id
        self._payments = PaymentIntake(ledger, bot_id=bot_id, batches=batches or BatchOptions())

    def start(self) -> None:
        """Start taking payments (their batches)."""
        self._payments.start()

    async def close(self) -> None:
        """Wait for the payments being credited; those still waiting are refused (Telegram delivers them again)."""
        await self._payments.close()

    async def deposit(self, user_id: int, stars: int) -> DepositInvoice:
        """A new order of ``stars`` for ``user_id`` and its invoice link.

        Raises :class:`~.errors.DepositRefused` (limits; no bot), :class:`~.errors.CashierUnavailable`
        (PostgreSQL: nothing written) or :class:`~.errors.BotApiUnavailable` (the order was cancelled).
        """
        if self._bot is None:
            raise DepositRefused(NOT_ENABLED, field=None)
        options = self._options

        async def work(conn: Connection) -> Order | str | Refusal:
            if await restriction_of(conn, user_id) is not None:  # no invoice: it could not be paid
                return RESTRICTED_DEPOSIT
            if self._responsible is not None:
                own_limit = await self._responsible.deposit_refusal(conn, user_id, stars)
                if own_limit is not None:
                    return own_limit
            return await open_order(conn, user_id, stars, options.chips_per_star, options.limits)

        order = await in_transaction(self._pool, work, unavailable=CashierUnavailable)
        if isinstance(order, Refusal):
            raise DepositOverLimit(order.code, order.message, order.resets_at)
        if isinstance(order, str):
            raise DepositRefused(order)
        title = options.title.format(stars=stars, chips=order.chips)
        try:
            url = await self._bot.create_invoice_link(
                title=title,
                description=options.description.format(stars=stars, chips=order.chips),
                payload=str(order.id),
                currency=STARS,
                prices=[LabeledPrice(label=title, amount=stars)],
            )
        except AiogramError as exc:
            log.warning("deposit order %d cancelled: createInvoiceLink failed: %s", order.id, self._describe(exc))
            await self._cancel(order.id)
            raise BotApiUnavailable("Telegram did not make the invoice; retry shortly") from None
        log.info("deposit order %d: %d Stars for user %d, invoice made", order.id, stars, user_id)
        return DepositInvoice(order.id, url, stars, order.chips)

    async def check_out(self, update_id: int, query: PreCheckoutQuery) -> None:
        """Answer a pre-checkout query: ``ok`` if its order is pending, the payer's, for this amount, in
        Stars and not expired; else ``ok: false`` with the reason. A query answered before (a re-delivered
        update) is not answered again.

        Raises :class:`~.errors.BotApiUnavailable` when the answer could not be sent (the update is not
        recorded: Telegram's re-delivery tries again) or :class:`~.errors.CashierUnavailable`.
        """
        assert self._bot is not None, "a webhook needs a bot"
        order_id = order_of_payload(query.invoice_payload)

        async def lookup(conn: Connection) -> tuple[bool, Order | None, bool, Refusal | None]:
            if await handled(conn, self._bot_id, update_id):
                return True, None, False, None
            restricted = await restriction_of(conn, query.from_user.id) is not None
            order = None if order_id is None else await get_order(conn, order_id)
            own_limit = None
            if self._responsible is not None and order is not None:  # lowered, or excluded, since the invoice
                own_limit = await self._responsible.deposit_refusal(conn, order.user_id, order.stars, order.id)
            return False, order, restricted, own_limit

        seen, order, restricted, own_limit = await in_transaction(self._pool, lookup, unavailable=CashierUnavailable)
        if seen:
            return
        # A flagged (a refund left a shortfall), blocked or self-excluded payer buys nothing, whatever the order;
        # nor does a player whose own limits (or exclusion) refuse it now.
        refusal = RESTRICTED if restricted else checkout_refusal(
            order, payer_id=query.from_user.id, total_amount=query.total_amount, currency=query.currency,
            now=dt.datetime.now(dt.UTC))  # fmt: skip
        if refusal is None and own_limit is not None:
            refusal = own_limit.message
        try:
            await self._bot.answer_pre_checkout_query(
                pre_checkout_query_id=query.id,
                ok=refusal is None,
                error_message=refusal,
                request_timeout=ANSWER_TIMEOUT,
            )
        except TelegramBadRequest as exc:
            # Answered already (a re-delivery raced the first delivery) or too late: nothing left to do.
            log.info("pre-checkout of order %s not answered: %s", order_id, self._describe(exc))
        except AiogramError as exc:
            log.warning("pre-checkout of order %s: answer failed: %s", order_id, self._describe(exc))
            raise BotApiUnavailable("answerPreCheckoutQuery failed") from None
        if refusal is None:
            log.info("pre-checkout of order %s (user %d, %d Stars) accepted", order_id, query.from_user.id,
                     query.total_amount)  # fmt: skip
        else:
            log.info("pre-checkout of order %s (user %d) refused: %s", order_id, query.from_user.id, refusal)
        await self._record(update_id, "pre_checkout_query")

    async def paid(self, update_id: int, message: Message) -> None:
        """Credit the successful payment of ``message`` once, group-committed with the payments reported
        at the same time (:mod:`.payments`): see the module's docstring.

        A payment that names no order of ours (or is not in Stars) credits nothing: it is logged as an
        error for the operator (refund it) and its update recorded. Raises
        :class:`~server.ledger.LedgerUnavailable` or :class:`~.errors.CashierUnavailable` when
        PostgreSQL does not answer (nothing committed: Telegram's re-delivery tries again).
        """
        payment = message.successful_payment
        assert payment is not None
        charge = payment.telegram_payment_charge_id
        payer = message.from_user.id if message.from_user is not None else None
        order_id = order_of_payload(payment.invoice_payload)
        result = await self._payments.credit(Payment(update_id, charge, payer, order_id, payment.total_amount,
                                                     payment.currency))  # fmt: skip
        order = result.order
        if result.outcome is PaymentOutcome.HANDLED_BEFORE:
            log.info("update %d (payment %s) handled before: nothing to do", update_id, charge)
            return
        if order is None:
            log.error("payment %s of %d %s by user %s names no order of ours (payload %r): nothing credited, refund it",
                      charge, payment.total_amount, payment.currency, payer, payment.invoice_payload[:40])  # fmt: skip
            return
        if payer != order.user_id or payment.total_amount != order.stars:
            log.warning("payment %s for order %d: paid by user %s for %d Stars, the order is user %d's for %d",
                        charge, order.id, payer, payment.total_amount, order.user_id, order.stars)  # fmt: skip
        if result.marked:
            log.info("order %d paid (payment %s): %d chips to user %d, balance %s", order.id, charge, result.chips,
                     order.user_id, result.balance)  # fmt: skip
        elif order.charge_id not in (None, charge):
            log.warning("order %d paid again (payment %s; first %s): credited once per payment", order.id, charge,
                        order.charge_id)  # fmt: skip

    async def _record(self, update_id: int, kind: str) -> None:
        """Record an update whose work was outside the database (an answer sent, a payment logged)."""
        await in_transaction(self._pool, lambda conn: record_update(conn, self._bot_id, update_id, kind),
                             unavailable=CashierUnavailable)  # fmt: skip

    async def _cancel(self, order_id: int) -> None:
        try:
            await in_transaction(self._pool, lambda conn: cancel_order(conn, order_id), unavailable=CashierUnavailable)
        except CashierUnavailable as exc:
            # It stays pending with no link to pay it: it counts against the daily limit for 24 hours.
            log.warning("deposit order %d not cancelled: %s", order_id, type(exc).__name__)

    def _describe(self, exc: AiogramError) -> str:
        """What went wrong with a Bot API call, for the log, without the token."""
        token = self._bot.token if self._bot is not None else ""
        return redacted(f"{type(exc).__name__}: {exc}".replace("\n", " "), token) if token else type(exc).__name__
