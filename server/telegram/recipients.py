"""Who the bot may message (the ``notify_recipients`` table): reachable and unreachable users.

Telegram lets a bot message a user who allowed it: the Mini App's initData says so
(``user.allows_write_to_pm``), and a user who pressed /start in the bot's chat has allowed it too.
Either makes the user reachable (:func:`mark_reachable`). A 403 from ``sendMessage`` (the user
blocked the bot, or the account is deactivated) or a 400 ``chat not found`` makes them unreachable
(:func:`mark_unreachable`), and drops every notification still queued for them in the same
transaction. A later /start makes them reachable again. A user without a row is not reachable:
notifications queued for them are dropped at once (:func:`server.telegram.notifications.queue`).

``allows_write_to_pm`` is recorded at sign-in: the node hands :func:`allowed_in_initdata` to the
ledger as its sign-in hook, which runs in the transaction writing the profiles of new or changed users
(and of those not seen for ten minutes): a user whose initData allows it becomes reachable there.

The functions run in the caller's connection or transaction, e.g. the /start handler's::

    async with pool.acquire() as conn, conn.transaction():
        await mark_reachable(conn, message.from_user.id, source=Source.START,
                             language_code=message.from_user.language_code)
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from ..auth import TelegramUser
from ..db.transactions import Connection


class Source(StrEnum):
    """What last changed a user's reachability (the ``notify_recipients.source`` column)."""

    INITDATA = "initdata"
    """The Mini App's initData carried ``allows_write_to_pm: true``."""
    START = "start"
    """The user pressed /start (or wrote to the bot)."""
    FORBIDDEN = "forbidden"
    """``sendMessage`` answered 403: the bot was blocked, or the user is deactivated."""
    CHAT_NOT_FOUND = "chat_not_found"
    """``sendMessage`` answered 400 ``chat not found``: no chat between the user and the bot."""


_MARK_REACHABLE = """
INSERT INTO notify_recipients (user_id, reachable, source, language_code)
SELECT id, true, $2, $3 FROM unnest($1::bigint[]) AS t(id)
ON CONFLICT (user_id) DO UPDATE SET
    reachable = true, source = EXCLUDED.source, reason = NULL, changed_at = now(),
    language_code = coalesce(EXCLUDED.language_code, notify_recipients.language_code)
WHERE NOT notify_recipients.reachable
   OR notify_recipients.language_code IS DISTINCT FROM coalesce(EXCLUDED.language_code, notify_recipients.language_code)
"""

_MARK_UNREACHABLE = """
INSERT INTO notify_recipients (user_id, reachable, source, reason) VALUES ($1, false, $2, $3)
ON CONFLICT (user_id) DO UPDATE SET reachable = false, source = EXCLUDED.source, reason = EXCLUDED.reason,
    changed_at = now()
"""

_DROP_QUEUE = """
UPDATE notifications SET status = 'dropped', last_error = $2, claimed_until = NULL, claimed_by = NULL
WHERE user_id = $1 AND status IN ('queued', 'sending')
"""


async def mark_reachable(conn: Connection, user_id: int, *, source: Source = Source.START,
                         language_code: str | None = None) -> None:  # fmt: skip
    """Make ``user_id`` reachable (they pressed /start, or initData allowed messages). ``language_code``
    (the /start message's ``from.language_code``) is kept for users who never signed in; the
    language of the ``users`` row wins when there is one. Writes nothing when nothing changes."""
    await conn.execute(_MARK_REACHABLE, [user_id], source.value, language_code)


async def mark_reachable_many(conn: Connection, user_ids: Sequence[int], *, source: Source = Source.INITDATA) -> None:
    """:func:`mark_reachable` for many users at once (sign-ins whose initData allowed messages).
    Give the ids sorted (rows are locked in that order)."""
    if user_ids:
        await conn.execute(_MARK_REACHABLE, list(user_ids), source.value, None)


async def allowed_in_initdata(conn: Connection, users: Sequence[TelegramUser]) -> None:
    """Make reachable the users whose initData says ``allows_write_to_pm`` (the sign-ins' hook,
    :data:`~server.ledger.signin.SignInHook`, in the transaction that records their profile). A user
    whose initData stops saying it stays as they were: /start, or a 403, changes them."""
    await mark_reachable_many(conn, sorted(user.id for user in users if user.allows_write_to_pm))


async def mark_unreachable(conn: Connection, user_id: int, *, source: Source, reason: str) -> int:
    """Make ``user_id`` unreachable for ``reason`` (Telegram's description of the error) and drop the
    notifications still queued or being sent to them; returns how many were dropped."""
    await conn.execute(_MARK_UNREACHABLE, user_id, source.value, reason[:500])
    status: str = await conn.execute(_DROP_QUEUE, user_id, f"unreachable: {reason}"[:500])
    return int(status.rsplit(" ", 1)[1])
