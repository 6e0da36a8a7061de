"""Admin announcements to every reachable user: ``croupier notify --all TEXT``.

An announcement is a row of ``notify_announcements`` (its text once, under a ``key``) and one
notification per reachable user (``announcement:<id>:<user id>``), queued in batches in user id
order. Each batch commits with the announcement's cursor (``queued_through``, the last user id
queued), so a command that died resumes after the last committed batch; the dedupe keys make a
batch queued twice queue nothing twice. The same text gives the same key (a hash of it) unless
``--id`` names another, so running the same command again resumes it rather than announcing twice.

The nodes' senders deliver the rows at Telegram's rate (30 a second by default: 10,000 users in
about 6 minutes), after any other notification queued meanwhile (announcements are claimed last: a
deposit receipt does not wait behind them). The command shows their progress on stderr until every
row is sent, dropped or dead (``--no-wait``: it returns once everything is queued).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import TextIO

import asyncpg

from ..db.transactions import Connection
from .templates import MAX_TEXT

BATCH = 1000
"""Users queued per transaction."""
QUIET_WARNING = 60.0
"""Seconds without a message sent (with messages waiting) before the command says nothing is sending."""


class AnnouncementConflict(Exception):
    """The key names an announcement with another text."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """One row of ``notify_announcements``."""

    id: int
    key: str
    text: str
    queued_through: int
    """The last user id queued (0: none yet)."""
    done_queueing: bool


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an announcement's notifications are."""

    total: int
    """Rows queued so far plus the reachable users not reached by the cursor yet."""
    queued: int
    """Rows written (whatever their status now)."""
    sent: int
    dropped: int
    dead: int

    @property
    def pending(self) -> int:
        """Rows still to send (queued or being sent)."""
        return self.queued - self.sent - self.dropped - self.dead


def default_key(text: str) -> str:
    """The key of an announcement of ``text`` when none is given: the same text, the same announcement."""
    return "text-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def check_text(text: str) -> str | None:
    """Why ``text`` cannot be announced (empty, longer than a Telegram message), or None."""
    if not text.strip():
        return "the text is empty"
    if len(text) > MAX_TEXT:
        return f"the text is {len(text)} characters; a Telegram message holds at most {MAX_TEXT}"
    return None


_OPEN = """
WITH made AS (
    INSERT INTO notify_announcements (key, text) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING
    RETURNING id, key, text, queued_through, queued_at
)
SELECT * FROM made
UNION ALL
SELECT id, key, text, queued_through, queued_at FROM notify_announcements WHERE key = $1
LIMIT 1
"""

_QUEUE_BATCH = """
WITH batch AS (
    SELECT r.user_id, coalesce(u.language_code, r.language_code) AS language
    FROM notify_recipients r LEFT JOIN users u ON u.id = r.user_id
    WHERE r.reachable AND r.user_id > $2
    ORDER BY r.user_id
    LIMIT $3
), queued AS (
    INSERT INTO notifications (user_id, kind, dedupe_key, announcement_id, language, priority)
    SELECT user_id, 'announcement', 'announcement:' || $1::bigint || ':' || user_id, $1, language, 1
    FROM batch ORDER BY user_id
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS seen, (SELECT max(user_id) FROM batch) AS last,
       (SELECT count(*) FROM queued) AS queued
"""

_ADVANCE = "UPDATE notify_announcements SET queued_through = $2, queued_at = $3 WHERE id = $1"

_PROGRESS = """
SELECT (SELECT count(*) FROM notify_recipients WHERE reachable AND user_id > a.queued_through AND a.queued_at IS NULL)
           AS unqueued,
       count(n.id) AS queued,
       count(n.id) FILTER (WHERE n.status = 'sent') AS sent,
       count(n.id) FILTER (WHERE n.status = 'dropped') AS dropped,
       count(n.id) FILTER (WHERE n.status = 'dead') AS dead
FROM notify_announcements a LEFT JOIN notifications n ON n.announcement_id = a.id
WHERE a.id = $1
GROUP BY a.id, a.queued_through, a.queued_at
"""


async def open_announcement(conn: Connection | asyncpg.Connection, key: str, text: str) -> Announcement:
    """The announcement ``key`` of ``text``, made now or found (to resume). Raises
    :class:`AnnouncementConflict` when ``key`` was used for another text."""
    row = await conn.fetchrow(_OPEN, key, text)
    if row is None:  # made by a concurrent command that has not committed yet
        raise AnnouncementConflict(f"announcement {key!r} is being made by another command; try again")
    if row["text"] != text:
        raise AnnouncementConflict(f"announcement {key!r} exists with another text; pass another --id")
    return Announcement(row["id"], row["key"], row["text"], row["queued_through"], row["queued_at"] is not None)


async def queue_batch(conn: Connection, announcement: Announcement, batch: int = BATCH) -> Announcement:
    """Queue the announcement for the next ``batch`` reachable users after its cursor, in the caller's
    transaction; returns it with the cursor moved (``done_queueing`` once no user is left)."""
    row = await conn.fetchrow(_QUEUE_BATCH, announcement.id, announcement.queued_through, batch)
    assert row is not None
    done = row["seen"] < batch
    through = announcement.queued_through if row["last"] is None else row["last"]
    await conn.execute(_ADVANCE, announcement.id, through, dt.datetime.now(dt.UTC) if done else None)
    return Announcement(announcement.id, announcement.key, announcement.text, through, done)


async def progress(conn: Connection | asyncpg.Connection, announcement_id: int) -> Progress:
    """Counts of the announcement's notifications by outcome."""
    row = await conn.fetchrow(_PROGRESS, announcement_id)
    assert row is not None
    return Progress(row["queued"] + row["unqueued"], row["queued"], row["sent"], row["dropped"], row["dead"])


# ------------------------------------------------------------------------------------------ the bar


def progress_line(p: Progress, *, rate: float | None, width: int = 30) -> str:
    """One line of progress: a bar of the rows done (sent, dropped or dead) out of the total, the
    counts, the sending rate (messages a second) and the time left at that rate. No I/O."""
    done = p.sent + p.dropped + p.dead
    share = 1.0 if p.total == 0 else min(1.0, done / p.total)
    filled = int(share * width)
    bar = "#" * filled + "." * (width - filled)
    parts = [f"[{bar}] {share:4.0%}", f"sent {p.sent:,}/{p.total:,}", f"queued {p.queued:,}"]
    if p.dropped:
        parts.append(f"dropped {p.dropped:,}")
    if p.dead:
        parts.append(f"dead {p.dead:,}")
    if rate is not None:
        parts.append(f"{rate:.1f}/s")
        left = p.total - done
        if rate > 0 and left > 0:
            seconds = int(left / rate)
            parts.append(f"ETA {seconds // 60}m{seconds % 60:02d}s")
    return "  ".join(parts)


class ProgressBar:
    """Draws :func:`progress_line` on ``stream``: in place on a terminal, else a line every ``every`` s."""

    def __init__(self, stream: TextIO, *, every: float = 5.0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every
        self._last_line = 0.0
        self._samples: deque[tuple[float, int]] = deque(maxlen=20)

    def update(self, p: Progress, *, final: bool = False) -> None:
        now = time.monotonic()
        self._samples.append((now, p.sent + p.dropped + p.dead))
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        rate = (d1 - d0) / (t1 - t0) if t1 - t0 >= 1.0 else None
        line = progress_line(p, rate=rate)
        if self._tty:
            self._stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        elif final or now - self._last_line >= self._every:
            self._stream.write(line + "\n")
            self._last_line = now
        self._stream.flush()


# ------------------------------------------------------------------------------------- the command


async def run_notify(dsn: str, text: str, *, key: str | None = None, wait: bool = True, batch: int = BATCH,
                     poll: float = 1.0, stream: TextIO | None = None) -> int:  # fmt: skip
    """``croupier notify --all TEXT``: queue (or resume) the announcement, then show the sending until
    every row is done unless ``wait`` is False. Returns the exit status."""
    out = sys.stderr if stream is None else stream
    refusal = check_text(text)
    if refusal is not None:
        print(f"croupier: {refusal}", file=out)
        return 2
    conn = await asyncpg.connect(dsn)
    try:
        try:
            announcement = await open_announcement(conn, key or default_key(text), text)
        except AnnouncementConflict as exc:
            print(f"croupier: {exc}", file=out)
            return 1
        resumed = "resuming" if announcement.queued_through or announcement.done_queueing else "new"
        print(f"announcement {announcement.key} (id {announcement.id}, {resumed})", file=out)
        bar = ProgressBar(out)
        while not announcement.done_queueing:
            async with conn.transaction():
                announcement = await queue_batch(conn, announcement, batch)
            bar.update(await progress(conn, announcement.id))
        state = await progress(conn, announcement.id)
        quiet_since, last_done = time.monotonic(), -1
        warned = False
        while wait and state.pending > 0:
            bar.update(state)
            await asyncio.sleep(poll)
            state = await progress(conn, announcement.id)
            done = state.sent + state.dropped + state.dead
            if done != last_done:
                quiet_since, last_done = time.monotonic(), done
            elif not warned and time.monotonic() - quiet_since > QUIET_WARNING:
                warned = True
                out.write(f"\nnothing sent for {QUIET_WARNING:.0f} s: the nodes send (a node with a bot token and "
                          "CROUPIER_NOTIFY_SENDER=1); is one running?\n")  # fmt: skip
        bar.update(state, final=True)
    finally:
        await conn.close()
    if wait:
        print(f"done: {state.sent:,} sent, {state.dropped:,} dropped (unreachable), {state.dead:,} dead", file=out)
    else:
        print(f"queued {state.queued:,} notifications; the nodes send them ({state.pending:,} to go)", file=out)
    return 0
