"""The notifications outbox (the ``notifications`` table): queued in the transaction of what they announce.

:func:`queue` is called inside the caller's transaction, like the ledger's user events: the cashier
queues the deposit receipt in the transaction that credits the payment, so a receipt exists exactly
when the payment was credited. The row's ``dedupe_key`` is unique (``deposit:<charge id>``,
``refund:<charge id>``, ``big_win:<bet id>``, ``announcement:<id>:<user id>``): queuing the same
thing twice (a re-delivered update, a resumed ``croupier notify``) leaves one row. A notification
for a user who is not reachable (:mod:`.recipients`) is written ``dropped`` at once: it is never sent.

The sender (:mod:`.sender`) claims due rows for a lease (:func:`claim`), and records each outcome
(:func:`mark_sent`, :func:`retry_later`, :func:`mark_dead`, :func:`give_back`). Every such update is
fenced by the claim's token: a sender whose lease ran out (and whose rows another node claimed)
changes nothing. Delivery is at least once: a sender that dies between Telegram's answer and
:func:`mark_sent` leaves its row ``sending``; when the lease runs out another sender claims it and
sends it again (the one duplicate a crash can cause).

Big wins are queued by :mod:`.bigwins`, in the settlement's transaction (the ledger's settlement hook).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

from ..db.transactions import Connection
from .templates import NotificationKind, check_params


class Status(StrEnum):
    """Where a notification is (the ``notifications.status`` column)."""

    QUEUED = "queued"
    SENDING = "sending"
    """Claimed by a sender until ``claimed_until``; due again after it (the sender died)."""
    SENT = "sent"
    DEAD = "dead"
    """Failed too many times (or refused by Telegram for good): left for the operator."""
    DROPPED = "dropped"
    """The user is not reachable: never sent."""


@dataclass(frozen=True, slots=True)
class Notification:
    """A claimed row: what the sender needs to send it and record the outcome."""

    id: int
    user_id: int
    kind: NotificationKind
    params: dict[str, Any]
    language: str | None
    attempts: int
    """Claims so far, this one included."""
    dedupe_key: str


def deposit_key(charge_id: str) -> str:
    """The dedupe key of the receipt of the payment ``charge_id`` (its ``telegram_payment_charge_id``)."""
    return f"deposit:{charge_id}"


def refund_key(charge_id: str) -> str:
    """The dedupe key of the notice of the refund of the payment ``charge_id``."""
    return f"refund:{charge_id}"


def big_win_key(bet_id: int) -> str:
    """The dedupe key of the notice of a big win by bet ``bet_id``."""
    return f"big_win:{bet_id}"


@dataclass(frozen=True, slots=True)
class Queued:
    """A notification to queue: ``kind`` with its template ``params`` for ``user_id``, once per ``dedupe_key``."""

    user_id: int
    kind: NotificationKind
    params: Mapping[str, Any]
    dedupe_key: str


_QUEUE = """
INSERT INTO notifications (user_id, kind, dedupe_key, payload, language, status, last_error)
SELECT q.user_id, q.kind, q.dedupe_key, q.payload::jsonb, coalesce(u.language_code, r.language_code),
       CASE WHEN coalesce(r.reachable, false) THEN 'queued' ELSE 'dropped' END,
       CASE WHEN coalesce(r.reachable, false) THEN NULL ELSE 'not reachable when queued' END
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
     WITH ORDINALITY AS q(user_id, kind, dedupe_key, payload, n)
LEFT JOIN users u ON u.id = q.user_id
LEFT JOIN notify_recipients r ON r.user_id = q.user_id
ORDER BY q.n
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING dedupe_key, status
"""


async def queue(conn: Connection, user_id: int, kind: NotificationKind, params: Mapping[str, Any],
                dedupe_key: str) -> bool:  # fmt: skip
    """Queue a notification of ``kind`` with its template ``params`` for ``user_id``, in the caller's
    transaction (it commits or rolls back with it). Returns True when it was queued for sending;
    False when the key was queued before (nothing written) or the user is not reachable (written
    ``dropped``). Raises :class:`~.templates.TemplateError` for params the kind's template does not
    take (checked here, not when sending). Not for announcements: see :mod:`.announcements`."""
    return bool(await queue_many(conn, [Queued(user_id, kind, params, dedupe_key)]))


async def queue_many(conn: Connection, notifications: Sequence[Queued]) -> set[str]:
    """Queue ``notifications`` in one statement, in the caller's transaction, as :func:`queue` does each;
    the dedupe keys of those queued for sending (not those queued before, nor those written ``dropped``)."""
    if not notifications:
        return set()
    payloads = []
    for item in notifications:
        if item.kind is NotificationKind.ANNOUNCEMENT:
            raise ValueError("announcements are queued by server.telegram.announcements")
        check_params(item.kind, item.params)
        payloads.append(orjson.dumps(dict(item.params)).decode())
    rows = await conn.fetch(_QUEUE, [n.user_id for n in notifications], [n.kind.value for n in notifications],
                            [n.dedupe_key for n in notifications], payloads)  # fmt: skip
    return {row["dedupe_key"] for row in rows if row["status"] == Status.QUEUED.value}


_CLAIM = """
WITH due AS (
    SELECT n.id FROM notifications n
    WHERE n.status IN ('queued', 'sending') AND n.next_attempt_at <= now()
      AND EXISTS (SELECT 1 FROM notify_recipients r WHERE r.user_id = n.user_id AND r.reachable)
    ORDER BY n.priority, n.next_attempt_at, n.id
    LIMIT $1
    FOR UPDATE OF n SKIP LOCKED
)
UPDATE notifications n
SET status = 'sending', attempts = n.attempts + 1, claimed_by = $3,
    claimed_until = now() + make_interval(secs => $2), next_attempt_at = now() + make_interval(secs => $2)
FROM due
WHERE n.id = due.id
RETURNING n.id, n.user_id, n.kind, n.payload, n.language, n.attempts, n.dedupe_key, n.priority,
          (SELECT a.text FROM notify_announcements a WHERE a.id = n.announcement_id) AS announcement
"""

_SENT = """
UPDATE notifications SET status = 'sent', sent_at = now(), claimed_until = NULL, last_error = NULL
WHERE id = $1 AND claimed_by = $2 AND status = 'sending'
"""

_RETRY = """
UPDATE notifications
SET status = 'queued', next_attempt_at = now() + make_interval(secs => $3), claimed_until = NULL,
    last_error = $4, attempts = attempts - $5
WHERE id = $1 AND claimed_by = $2 AND status = 'sending'
"""

_DEAD = """
UPDATE notifications SET status = 'dead', claimed_until = NULL, last_error = $3
WHERE id = $1 AND claimed_by = $2 AND status = 'sending'
"""


async def claim(pool: asyncpg.Pool, limit: int, *, lease: float, token: str) -> list[Notification]:
    """Claim up to ``limit`` due notifications of reachable users for ``lease`` seconds under ``token``
    (rows other senders hold are skipped, not waited for): announcements after every other kind, then
    oldest due first."""
    rows = await pool.fetch(_CLAIM, limit, lease, token)
    claimed = []
    for row in sorted(rows, key=lambda r: (r["priority"], r["id"])):  # RETURNING keeps no order
        params: dict[str, Any] = orjson.loads(row["payload"])
        if row["announcement"] is not None:
            params = {"text": row["announcement"]}
        claimed.append(Notification(row["id"], row["user_id"], NotificationKind(row["kind"]), params,
                                    row["language"], row["attempts"], row["dedupe_key"]))  # fmt: skip
    return claimed


async def mark_sent(pool: asyncpg.Pool, notification: Notification, token: str) -> bool:
    """Record that Telegram took the message; False if the claim was lost (the lease ran out)."""
    status: str = await pool.execute(_SENT, notification.id, token)
    return status.endswith(" 1")


async def retry_later(pool: asyncpg.Pool, notification: Notification, token: str, *, delay: float, error: str,
                      count_attempt: bool = True) -> bool:  # fmt: skip
    """Queue the notification again in ``delay`` seconds after ``error``. With ``count_attempt``
    False (Telegram asked to wait: a 429) the attempt is given back."""
    status: str = await pool.execute(_RETRY, notification.id, token, delay, error[:500], 0 if count_attempt else 1)
    return status.endswith(" 1")


async def mark_dead(pool: asyncpg.Pool, notification: Notification, token: str, *, error: str) -> bool:
    """Give up on the notification (too many attempts, or refused for good): ``dead``, with the error."""
    status: str = await pool.execute(_DEAD, notification.id, token, error[:500])
    return status.endswith(" 1")


async def give_back(pool: asyncpg.Pool, notifications: list[Notification], token: str) -> None:
    """Return claimed notifications that were not sent (the sender stops): due at once, attempts given back."""
    if notifications:
        await pool.execute(
            "UPDATE notifications SET status = 'queued', next_attempt_at = now(), claimed_until = NULL, "
            "attempts = attempts - 1 WHERE id = ANY($1::bigint[]) AND claimed_by = $2 AND status = 'sending'",
            [n.id for n in notifications], token,
        )  # fmt: skip
