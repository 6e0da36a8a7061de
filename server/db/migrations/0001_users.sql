-- Telegram users who have opened a socket. Upserted at every successful auth.
CREATE TABLE users (
    id             BIGINT PRIMARY KEY,           -- Telegram user id
    first_name     TEXT        NOT NULL,
    last_name      TEXT,
    username       TEXT,
    language_code  TEXT,
    is_premium     BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
