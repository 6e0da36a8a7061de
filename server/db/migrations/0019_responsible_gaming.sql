-- Responsible gaming (server/players/limits.py, server/players/limitstore.py): the limits a player sets on
-- themselves, what they have used of them, their play session, and their cool-offs and self-exclusions.
-- Only server/players/ and the bet and settlement statements of server/ledger/ write these tables.

-- Wallets of players who set a limit or an exclusion (set with the wallet locked, never cleared): the bet batch
-- and settlement read this flag with the wallet rows they lock anyway, and look at the tables below only for
-- the flagged, so a batch of players without limits costs nothing more.
ALTER TABLE accounts ADD COLUMN limited BOOLEAN NOT NULL DEFAULT false;

-- A player's limits: deposits (Stars), losses and wagers (chips) per day, week or month; a session time limit
-- (minutes, period 'session'). `amount` is in force; a raise (or a removal: `pending_amount` NULL) waits until
-- `pending_from` (24 hours after it was asked), then replaces it.
CREATE TABLE player_limits (
    user_id         BIGINT      NOT NULL REFERENCES users (id),
    kind            TEXT        NOT NULL CHECK (kind IN ('deposit', 'loss', 'wager', 'session')),
    period          TEXT        NOT NULL CHECK (period IN ('day', 'week', 'month', 'session')),
    amount          BIGINT      NOT NULL CHECK (amount > 0),
    pending_amount  BIGINT      CHECK (pending_amount > 0),
    pending_from    TIMESTAMPTZ,
    set_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, kind, period),
    CONSTRAINT player_limits_session CHECK ((kind = 'session') = (period = 'session')),
    CONSTRAINT player_limits_pending CHECK (pending_amount IS NULL OR pending_from IS NOT NULL)
);

-- What a player with a loss or wager limit has staked and been paid in the current day, week and month (one
-- row per period, restarted when a new period begins). Kept only for players with a limit: the bet batch
-- adds their stakes, settlement their payouts and refunds. A limit set mid-period starts from the ledger.
CREATE TABLE player_limit_usage (
    user_id    BIGINT      NOT NULL REFERENCES users (id),
    period     TEXT        NOT NULL CHECK (period IN ('day', 'week', 'month')),
    starts_at  TIMESTAMPTZ NOT NULL,
    wagered    BIGINT      NOT NULL DEFAULT 0,
    paid       BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, period)
);

-- A cool-off (24 hours to 6 weeks) or a self-exclusion (6 months to permanent: `until` NULL): no bet and no
-- deposit until it ends. It cannot end early: a new one may only last longer.
CREATE TABLE player_exclusions (
    user_id  BIGINT      PRIMARY KEY REFERENCES users (id),
    kind     TEXT        NOT NULL CHECK (kind IN ('cool_off', 'self_exclusion')),
    until    TIMESTAMPTZ,
    set_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT player_exclusions_permanent CHECK (until IS NOT NULL OR kind = 'self_exclusion')
);

-- The play session of a player with a session time limit: it began at `started_at`; once the limit has run
-- the player is signed out and may not sign in again before the break after it ends.
CREATE TABLE player_sessions (
    user_id     BIGINT      PRIMARY KEY REFERENCES users (id),
    started_at  TIMESTAMPTZ NOT NULL
);
