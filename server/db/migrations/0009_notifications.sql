-- Notifications to players in their private chat with the bot (server/telegram/). Only
-- server/telegram/ writes these tables.

-- Who the bot may message. A user becomes reachable when they allowed it (initData's
-- allows_write_to_pm) or pressed /start; unreachable when Telegram answered 403 (bot blocked, user
-- deactivated) or 400 "chat not found". A user without a row is not reachable. Not tied to `users`:
-- /start may come from someone who never opened the Mini App.
CREATE TABLE notify_recipients (
    user_id        BIGINT      PRIMARY KEY,      -- Telegram user id, also their private chat's id
    reachable      BOOLEAN     NOT NULL,
    source         TEXT        NOT NULL,         -- what last changed it: initdata, start, forbidden, ...
    language_code  TEXT,                         -- from /start, for users who never signed in
    reason         TEXT,                         -- why unreachable (Telegram's description)
    changed_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- `croupier notify --all` pages the reachable users by id.
CREATE INDEX notify_recipients_reachable ON notify_recipients (user_id) WHERE reachable;

-- An admin announcement (`croupier notify --all`): its text once, its rows in `notifications`.
-- `key` makes re-running the command resume the same announcement; `queued_through` is the last
-- user id queued (the command's cursor), `queued_at` when every reachable user was queued.
CREATE TABLE notify_announcements (
    id              BIGSERIAL   PRIMARY KEY,
    key             TEXT        NOT NULL UNIQUE,
    text            TEXT        NOT NULL CHECK (length(text) BETWEEN 1 AND 4096),
    queued_through  BIGINT      NOT NULL DEFAULT 0,
    queued_at       TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The notifications outbox: a row is written in the transaction of what it announces, keyed by what
-- it is about (`dedupe_key`: deposit:<charge id>, announcement:<id>:<user> ...), so nothing is
-- queued twice. Senders on any node claim due rows (FOR UPDATE SKIP LOCKED) for a lease: a claimed
-- row is `sending` with `claimed_until` = `next_attempt_at` = the lease's end, so the rows of a node
-- that died are due again when their lease runs out. Then `sent`; `dead` after too many failures;
-- `dropped` when the user is not reachable.
CREATE TABLE notifications (
    id               BIGSERIAL   PRIMARY KEY,
    user_id          BIGINT      NOT NULL,
    kind             TEXT        NOT NULL
                                 CHECK (kind IN ('deposit_receipt', 'refund', 'big_win', 'announcement')),
    dedupe_key       TEXT        NOT NULL UNIQUE,
    payload          JSONB       NOT NULL DEFAULT '{}',   -- the template's params
    language         TEXT,                                -- the user's language_code when queued
    announcement_id  BIGINT      REFERENCES notify_announcements (id),
    priority         SMALLINT    NOT NULL DEFAULT 0,      -- claimed first: 0 (receipts, refunds, wins), 1 (announcements)
    status           TEXT        NOT NULL DEFAULT 'queued'
                                 CHECK (status IN ('queued', 'sending', 'sent', 'dead', 'dropped')),
    attempts         INTEGER     NOT NULL DEFAULT 0,      -- claims so far
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_until    TIMESTAMPTZ,
    claimed_by       TEXT,                                -- the claim's token: fences a late sender's update
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at          TIMESTAMPTZ,
    CONSTRAINT notifications_announcement_kind CHECK ((kind = 'announcement') = (announcement_id IS NOT NULL))
);
-- The senders' claim: due rows in order, a receipt before the rest of a big announcement.
CREATE INDEX notifications_due ON notifications (priority, next_attempt_at, id) WHERE status IN ('queued', 'sending');
-- A user's open rows (dropped together when the user turns out unreachable).
CREATE INDEX notifications_user_open ON notifications (user_id) WHERE status IN ('queued', 'sending');
-- An announcement's progress (`croupier notify`).
CREATE INDEX notifications_announcement ON notifications (announcement_id, status) WHERE announcement_id IS NOT NULL;
