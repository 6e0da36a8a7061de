-- The leaderboards' outbox (server/leaderboards/): one row per bet settled won or lost, written by the
-- ledger's settlement hook in the settlement's transaction (settled_at: that transaction's now(), as in
-- bets.settled_at). The relay (one node at a time, under an advisory lock) claims rows in batches
-- (batch: a number from leaderboard_batches, committed before the batch is applied), applies each batch
-- to the boards once (a guard in the store keyed by the batch), then deletes the batch's rows. Rows of a
-- batch claimed and not deleted (a relay that died) are applied again under the same batch number by the
-- next relay, and the guard makes that a no-op if they were applied already.
CREATE SEQUENCE leaderboard_batches;

CREATE TABLE leaderboard_feed (
    id          BIGSERIAL   PRIMARY KEY,
    bet_id      BIGINT      NOT NULL,
    user_id     BIGINT      NOT NULL,
    game        TEXT        NOT NULL,
    stake       BIGINT      NOT NULL,
    payout      BIGINT      NOT NULL,
    settled_at  TIMESTAMPTZ NOT NULL,
    batch       BIGINT                      -- null until a relay claims the row
);
-- Claimed batches (few rows: one batch in flight, or a dead relay's).
CREATE INDEX leaderboard_feed_claimed ON leaderboard_feed (batch) WHERE batch IS NOT NULL;
