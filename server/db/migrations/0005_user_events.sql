-- The user channel's outbox and history. Every change of a wallet writes its event here in the
-- same transaction (so nothing committed goes unannounced, and nothing is announced before
-- commit). `offset` is the wallet's version after the event. The node that committed publishes
-- the events at once and marks them relayed; a sweeper on every node publishes events left
-- unrelayed (their node died between commit and publish, or the broker was down). Rows are kept
-- for CROUPIER_HISTORY_TTL seconds for `auth` with `since` (resume of the user channel).
CREATE TABLE user_events (
    user_id     BIGINT NOT NULL,
    "offset"    BIGINT NOT NULL,
    payload     BYTEA  NOT NULL,        -- the JSON push exactly as sent
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    relayed     BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, "offset")
);
CREATE INDEX user_events_unrelayed ON user_events (created_at) WHERE NOT relayed;
CREATE INDEX user_events_age ON user_events (created_at);
