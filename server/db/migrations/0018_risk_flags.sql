-- The operator's risk flags (server/risk/): what `croupier risk report` found over a window, for people to
-- review. Flags, not bans: nothing reads them to refuse anything. Only server/risk/ writes these tables.

-- One row per (user, kind, window): running the report again over the same window updates the row's score
-- and evidence while nobody has reviewed it, and never adds a second one. `evidence` is what the detector
-- saw (its `summary` is the line the report prints); `reviewed_at` and `reviewer` are set by whoever
-- looked at it (the back office).
CREATE TABLE risk_flags (
    id            BIGSERIAL        PRIMARY KEY,
    user_id       BIGINT           NOT NULL,
    kind          TEXT             NOT NULL CHECK (kind IN ('bet_velocity', 'deposit_velocity', 'luck',
                                                            'refund_cycling', 'welcome_farming', 'both_sides')),
    score         DOUBLE PRECISION NOT NULL,
    evidence      JSONB            NOT NULL,
    window_start  TIMESTAMPTZ      NOT NULL,
    window_end    TIMESTAMPTZ      NOT NULL,
    created_at    TIMESTAMPTZ      NOT NULL DEFAULT now(),
    reviewed_at   TIMESTAMPTZ,
    reviewer      TEXT,
    CONSTRAINT risk_flags_window CHECK (window_start < window_end),
    CONSTRAINT risk_flags_reviewed CHECK ((reviewed_at IS NULL) = (reviewer IS NULL))
);
CREATE UNIQUE INDEX risk_flags_once ON risk_flags (user_id, kind, window_start, window_end);
-- The back office's lists: the newest first, and a user's flags.
CREATE INDEX risk_flags_open ON risk_flags (id DESC) WHERE reviewed_at IS NULL;
CREATE INDEX risk_flags_by_user ON risk_flags (user_id, id DESC);

-- The client addresses users signed in from (one row per user and address, first time seen), for the
-- welcome-credit farming detector: many new accounts claiming the welcome credit from one address. Written
-- off the sign-in's path by server/risk/addresses.py (a node hands it each authenticated socket's address).
CREATE TABLE signin_addresses (
    user_id     BIGINT      NOT NULL,
    address     INET        NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, address)
);
CREATE INDEX signin_addresses_by_time ON signin_addresses (first_seen);
CREATE INDEX signin_addresses_by_address ON signin_addresses (address);
