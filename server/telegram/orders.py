"""Deposit orders in Telegram Stars (the ``star_orders`` table) and the rules they are checked by.

An order is written ``pending`` before its invoice link exists, and the link's payload is the order's
id: every payment names the order it pays. It turns ``paid`` when Telegram reports the payment (with
its ``telegram_payment_charge_id``, unique), or ``cancelled`` when no link could be made; a paid
order turns ``refunded`` when its payment is refunded (:mod:`.refunds`). The order keeps the
chips-per-Star rate of its day: a payment credits what the order promised.

The rules are plain functions (:func:`limit_refusal`, :func:`checkout_refusal`): no I/O, unit-tested.
The queries run in the caller's connection or transaction, every value a parameter.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from ..db.transactions import Connection

STARS = "XTR"
"""The currency of Telegram Stars: the only one a Mini App may sell digital goods in."""
WINDOW = dt.timedelta(hours=24)
"""The daily limit counts the orders of any 24 hours, and an invoice can be paid for as long."""
MAX_UNPAID = 10
"""Unpaid orders a user may hold from the last 24 hours (each cost a Bot API call to make)."""
_LOCK_CLASS = 0x53544152  # "STAR": the advisory lock class of a user's deposits (key: the user id mod 2^31-1)
# (server/players/limitstore.py takes it too, before checking a player's own deposit limit)


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class DepositLimits:
    """Stars one deposit may be (``min_stars``..``max_stars``) and one user may deposit in 24 hours."""

    min_stars: int
    max_stars: int
    daily_stars: int


@dataclass(frozen=True, slots=True)
class Usage:
    """A user's orders of the last 24 hours that count against the limit (pending or paid)."""

    stars: int
    unpaid: int


@dataclass(frozen=True, slots=True)
class Order:
    """One row of ``star_orders``."""

    id: int
    user_id: int
    stars: int
    chips_per_star: int
    status: OrderStatus
    created_at: dt.datetime
    paid_at: dt.datetime | None
    charge_id: str | None

    @property
    def chips(self) -> int:
        """What the order credits once paid."""
        return self.stars * self.chips_per_star


def limit_refusal(stars: int, limits: DepositLimits, usage: Usage) -> str | None:
    """Why a deposit of ``stars`` is refused given the user's ``usage`` of the last 24 hours, or None."""
    if stars < limits.min_stars:
        return f"a deposit is at least {limits.min_stars} Stars"
    if stars > limits.max_stars:
        return f"a deposit is at most {limits.max_stars} Stars"
    if usage.stars + stars > limits.daily_stars:
        left = max(0, limits.daily_stars - usage.stars)
        return (f"a deposit of {stars} Stars would take you over the limit of {limits.daily_stars} Stars in 24 hours "
                f"({left} left; unpaid invoices count)")  # fmt: skip
    if usage.unpaid >= MAX_UNPAID:
        return f"you have {usage.unpaid} unpaid invoices from the last 24 hours: pay one of them or wait"
    return None


def checkout_refusal(order: Order | None, *, payer_id: int, total_amount: int, currency: str,
                     now: dt.datetime) -> str | None:  # fmt: skip
    """Why Telegram should not take this payment (the text shown to the payer), or None to take it.

    ``order`` is the one the invoice payload names (None: no such order); the rest is the
    ``pre_checkout_query``. ``now`` is timezone-aware.
    """
    if currency != STARS:
        return "This invoice is not payable in Telegram Stars."
    if order is None:
        return "This order is unknown. Please start a new deposit in the app."
    if order.user_id != payer_id:
        return "This invoice was made for another account. Please start a deposit from your own app."
    if order.status is OrderStatus.PAID:
        return "This order is already paid."
    if order.status is OrderStatus.CANCELLED:
        return "This order was cancelled. Please start a new deposit in the app."
    if order.status is OrderStatus.REFUNDED:
        return "This order was paid and refunded. Please start a new deposit in the app."
    if total_amount != order.stars:
        return "The amount does not match the order. Please start a new deposit in the app."
    if now - order.created_at > WINDOW:
        return "This invoice has expired. Please start a new deposit in the app."
    return None


def order_id_of(payload: str) -> int | None:
    """The order id an invoice payload names (its decimal digits), or None for any other payload."""
    if not (payload.isascii() and payload.isdigit()) or len(payload) > 18:
        return None
    return int(payload)


_LOCK_USER = "SELECT pg_advisory_xact_lock($1::integer, ($2::bigint % 2147483647)::integer)"

_USAGE = """
SELECT coalesce(sum(stars), 0) AS stars, count(*) FILTER (WHERE status = 'pending') AS unpaid
FROM star_orders
WHERE user_id = $1 AND status <> 'cancelled' AND created_at > now() - make_interval(secs => $2)
"""

_INSERT = """
INSERT INTO star_orders (user_id, stars, chips_per_star) VALUES ($1, $2, $3)
RETURNING id, user_id, stars, chips_per_star, status, created_at, paid_at, telegram_payment_charge_id
"""

_SELECT = """
SELECT id, user_id, stars, chips_per_star, status, created_at, paid_at, telegram_payment_charge_id
FROM star_orders WHERE id = $1
"""

_SELECT_MANY = """
SELECT id, user_id, stars, chips_per_star, status, created_at, paid_at, telegram_payment_charge_id
FROM star_orders WHERE id = ANY($1::bigint[])
"""

_SELECT_BY_CHARGE = """
SELECT id, user_id, stars, chips_per_star, status, created_at, paid_at, telegram_payment_charge_id
FROM star_orders WHERE telegram_payment_charge_id = $1
"""

_MARK_REFUNDED = """
UPDATE star_orders SET status = 'refunded', refunded_at = now()
WHERE telegram_payment_charge_id = $1 AND status = 'paid'
RETURNING id
"""

_CANCEL = "UPDATE star_orders SET status = 'cancelled' WHERE id = $1 AND status = 'pending'"

_LOCK_MANY = """
SELECT id, user_id, stars, chips_per_star, status, created_at, paid_at, telegram_payment_charge_id
FROM star_orders WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE
"""

_MARK_PAID = """
UPDATE star_orders SET status = 'paid', paid_at = now(), telegram_payment_charge_id = p.charge_id
FROM unnest($1::bigint[], $2::text[]) AS p(order_id, charge_id)
WHERE star_orders.id = p.order_id AND star_orders.status IN ('pending', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM star_orders o WHERE o.telegram_payment_charge_id = p.charge_id)
RETURNING star_orders.id
"""


async def open_order(conn: Connection, user_id: int, stars: int, chips_per_star: int,
                     limits: DepositLimits) -> Order | str:  # fmt: skip
    """Write a pending order of ``stars`` for ``user_id``, or return why the limits refuse it.

    Run it in a transaction: the user's deposits are serialized by a transaction-level advisory lock,
    so two at once cannot both pass the daily limit.
    """
    await conn.execute(_LOCK_USER, _LOCK_CLASS, user_id)
    row = await conn.fetchrow(_USAGE, user_id, WINDOW.total_seconds())
    assert row is not None
    refusal = limit_refusal(stars, limits, Usage(row["stars"], row["unpaid"]))
    if refusal is not None:
        return refusal
    created = await conn.fetchrow(_INSERT, user_id, stars, chips_per_star)
    assert created is not None
    return _order(created)


async def get_order(conn: Connection | asyncpg.Pool, order_id: int) -> Order | None:
    """The order ``order_id``, or None."""
    row = await conn.fetchrow(_SELECT, order_id)
    return None if row is None else _order(row)


async def orders_by_id(conn: Connection | asyncpg.Pool, order_ids: list[int]) -> dict[int, Order]:
    """The orders of ``order_ids`` that exist, by id."""
    rows = await conn.fetch(_SELECT_MANY, order_ids)
    return {row["id"]: _order(row) for row in rows}


async def cancel_order(conn: Connection | asyncpg.Pool, order_id: int) -> bool:
    """Cancel a pending order (its invoice link could not be made); False if it was not pending."""
    status: str = await conn.execute(_CANCEL, order_id)
    return status.endswith(" 1")


async def lock_orders(conn: Connection, order_ids: list[int]) -> dict[int, Order]:
    """The orders of ``order_ids`` that exist, by id, locked for the caller's transaction (in id order,
    the lock order of concurrent payment batches)."""
    rows = await conn.fetch(_LOCK_MANY, order_ids)
    return {row["id"]: _order(row) for row in rows}


async def mark_paid(conn: Connection, order_id: int, charge_id: str) -> bool:
    """Mark the order paid by ``charge_id``; False (nothing changed) if it was paid already, or the charge
    paid another order."""
    return bool(await mark_paid_many(conn, [(order_id, charge_id)]))


async def mark_paid_many(conn: Connection, payments: list[tuple[int, str]]) -> set[int]:
    """Mark each order paid by its charge, for ``payments`` of (order id, charge id) naming each order
    and each charge once; the ids of the orders marked (not those paid already, nor those whose charge
    paid another order)."""
    rows = await conn.fetch(_MARK_PAID, [order_id for order_id, _ in payments], [charge for _, charge in payments])
    return {row["id"] for row in rows}


async def order_paid_by(conn: Connection | asyncpg.Pool, charge_id: str) -> Order | None:
    """The order payment ``charge_id`` paid (``paid``, or ``refunded`` since), or None."""
    row = await conn.fetchrow(_SELECT_BY_CHARGE, charge_id)
    return None if row is None else _order(row)


async def mark_refunded(conn: Connection, charge_id: str) -> int | None:
    """Mark the order paid by ``charge_id`` refunded; its id, or None if no paid order has that charge."""
    order_id: int | None = await conn.fetchval(_MARK_REFUNDED, charge_id)
    return order_id


def _order(row: asyncpg.Record) -> Order:
    return Order(
        id=row["id"],
        user_id=row["user_id"],
        stars=row["stars"],
        chips_per_star=row["chips_per_star"],
        status=OrderStatus(row["status"]),
        created_at=row["created_at"],
        paid_at=row["paid_at"],
        charge_id=row["telegram_payment_charge_id"],
    )
