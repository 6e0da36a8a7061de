-- Fencing for round drivers: each game's lease has a token that grows every time a node takes
-- the game over. Every write a driver makes to a round carries its token; a write with a stale
-- token (a driver that lost its lease without knowing) changes nothing and fails its transaction.
CREATE TABLE game_leases (
    game         TEXT PRIMARY KEY,
    token        BIGINT NOT NULL,
    holder       TEXT NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE rounds ADD COLUMN driver_token BIGINT NOT NULL DEFAULT 0;
