"""Successful payments, group-committed: the payments Telegram reports at once share one transaction.

Each ``message.successful_payment`` update is a :class:`Payment`; :class:`PaymentIntake` gathers
concurrent ones (:class:`~server.db.groupcommit.GroupCommit`, as bets are) and commits a batch in ONE
transaction of a few statements whatever its size (:meth:`~server.ledger.Ledger.deposit_many`, whose
plan is :meth:`PaymentIntake._plan`):

1. the batch's updates recorded (:func:`.updates.record_updates`): an update recorded before, or
   twice in the batch, is :attr:`PaymentOutcome.HANDLED_BEFORE` and does nothing more;
2. the orders the payments name, read and locked in id order (:func:`.orders.lock_orders`): a payment
   naming no order of ours, or not in Stars, is :attr:`PaymentOutcome.NOT_OURS` (recorded, credited
   nothing: the operator refunds it);
3. each order marked paid by its first charge (:func:`.orders.mark_paid_many`);
4. the receipts queued (:func:`.notifications.queue_many`, one per charge);
5. the wallets credited by the ledger, once per ``telegram_payment_charge_id`` (the deposit's ``ref``),
   each with its ``balance`` event in the outbox.

So every payment is credited exactly once whatever Telegram re-delivers, and the answer to each
update's webhook request waits for its batch's commit. A batch that fails for a reason of one payment
is committed again in halves until only that payment fails (GroupCommit); PostgreSQL not answering
fails the batch alike (:class:`~server.ledger.LedgerUnavailable`, a
:class:`~server.db.transactions.DatabaseUnavailable`: the webhook answers 503, Telegram delivers again).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..db.groupcommit import GroupCommit
from ..db.transactions import Connection, DatabaseUnavailable
from ..ledger import BatchOptions, DepositCredit, Ledger
from .errors import CashierUnavailable
from .notifications import Queued, deposit_key, queue_many
from .orders import STARS, Order, lock_orders, mark_paid_many
from .templates import NotificationKind
from .updates import record_updates


@dataclass(frozen=True, slots=True)
class Payment:
    """One ``message.successful_payment`` update, as the intake needs it."""

    update_id: int
    charge_id: str
    """Its ``telegram_payment_charge_id``."""
    payer_id: int | None
    order_id: int | None
    """The order its invoice payload names (None: the payload names no order)."""
    total_amount: int
    currency: str


class PaymentOutcome(StrEnum):
    CREDITED = "credited"
    """The payment's chips were credited now."""
    CREDITED_BEFORE = "credited before"
    """The same charge was credited before (in another update, or earlier in the batch)."""
    HANDLED_BEFORE = "handled before"
    """The update was handled before (a re-delivery): nothing done."""
    NOT_OURS = "not ours"
    """No order of ours, or not in Stars: the update is recorded, nothing credited."""


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What became of one payment: its outcome, the order it paid, and the wallet's balance after."""

    outcome: PaymentOutcome
    order: Order | None = None
    chips: int = 0
    balance: int | None = None
    marked: bool = False
    """This payment marked its order paid (False: the order was paid by another charge before)."""


@dataclass(frozen=True, slots=True)
class _Planned:
    """A payment of the batch being credited: its order and chips, and whether it marked the order."""

    order: Order
    chips: int
    marked: bool


class PaymentIntake:
    """Credits successful payments in batches; :meth:`start` before use, :meth:`close` after."""

    def __init__(self, ledger: Ledger, *, bot_id: int, batches: BatchOptions) -> None:
        self._ledger = ledger
        self._bot_id = bot_id
        self._commits: GroupCommit[Payment, PaymentResult] = GroupCommit(
            self._commit,
            name="payments",
            max_batch=batches.max_batch,
            max_wait=batches.max_wait,
            concurrency=batches.concurrency,
            shutdown_error=lambda: CashierUnavailable("the node is shutting down; deliver again"),
            expected=(DatabaseUnavailable,),
        )

    def start(self) -> None:
        """Start gathering batches."""
        self._commits.start()

    async def close(self) -> None:
        """Wait for the batches in flight; payments still waiting get :class:`~.errors.CashierUnavailable`."""
        await self._commits.close()

    async def credit(self, payment: Payment) -> PaymentResult:
        """Credit ``payment`` once (see the module's docstring); returns once its batch committed."""
        return await self._commits.submit(payment)

    async def _commit(self, batch: list[Payment]) -> list[PaymentResult]:
        planned: dict[int, _Planned] = {}  # by position in the batch; refilled on every attempt
        fresh: set[int] = set()

        async def plan(conn: Connection) -> list[DepositCredit]:
            planned.clear()
            fresh.clear()
            fresh.update(await record_updates(conn, self._bot_id, [p.update_id for p in batch], "successful_payment"))
            first = _first_of_each_update(batch, fresh)
            order_ids = sorted({p.order_id for i, p in enumerate(batch) if i in first and p.order_id is not None})
            orders = await lock_orders(conn, order_ids)
            to_mark: dict[int, str] = {}  # order id -> the first charge paying it in this batch
            charges: set[str] = set()
            for i, payment in enumerate(batch):
                order = orders.get(payment.order_id) if i in first and payment.order_id is not None else None
                if order is None or payment.currency != STARS:
                    continue
                chips = payment.total_amount * order.chips_per_star
                marks = order.status.value in ("pending", "cancelled") and order.id not in to_mark \
                    and payment.charge_id not in charges  # fmt: skip
                if marks:
                    to_mark[order.id] = payment.charge_id
                charges.add(payment.charge_id)
                planned[i] = _Planned(order, chips, marks)
            marked = await mark_paid_many(conn, list(to_mark.items()))
            for i, item in planned.items():
                if item.marked and item.order.id not in marked:
                    planned[i] = _Planned(item.order, item.chips, marked=False)
            await queue_many(conn, [
                Queued(item.order.user_id, NotificationKind.DEPOSIT_RECEIPT,
                       {"stars": batch[i].total_amount, "chips": item.chips}, deposit_key(batch[i].charge_id))
                for i, item in planned.items()])  # fmt: skip
            return [DepositCredit(item.order.user_id, item.chips, batch[i].charge_id) for i, item in planned.items()]

        credited = await self._ledger.deposit_many(plan)
        results: list[PaymentResult] = []
        counted: set[str] = set()
        first = _first_of_each_update(batch, fresh)
        for i, payment in enumerate(batch):
            item = planned.get(i)
            if i not in first:
                results.append(PaymentResult(PaymentOutcome.HANDLED_BEFORE))
            elif item is None:
                results.append(PaymentResult(PaymentOutcome.NOT_OURS))
            else:
                deposit = credited[payment.charge_id]
                new = deposit.credited and payment.charge_id not in counted
                counted.add(payment.charge_id)
                outcome = PaymentOutcome.CREDITED if new else PaymentOutcome.CREDITED_BEFORE
                results.append(PaymentResult(outcome, item.order, item.chips, deposit.wallet.balance, item.marked))
        return results


def _first_of_each_update(batch: list[Payment], fresh: set[int]) -> set[int]:
    """Positions in ``batch`` of the first payment of each update recorded now (a re-delivery may land in
    the same batch as the first delivery: only the first is handled)."""
    first: set[int] = set()
    seen: set[int] = set()
    for i, payment in enumerate(batch):
        if payment.update_id in fresh and payment.update_id not in seen:
            seen.add(payment.update_id)
            first.add(i)
    return first
