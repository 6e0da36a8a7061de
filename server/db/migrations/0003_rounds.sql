-- Rounds and provably fair seeds.

-- A hash chain of seeds, used backwards: seed[i-1] = sha256(seed[i]) (hex strings, ASCII bytes).
-- terminating_hash = sha256(seed of the first round) is published before the chain is used;
-- it is also the public salt of every outcome drawn from this chain.
CREATE TABLE seed_chains (
    id                BIGSERIAL PRIMARY KEY,
    game              TEXT    NOT NULL,
    terminating_hash  TEXT    NOT NULL,
    length            INTEGER NOT NULL CHECK (length > 0),
    next_index        INTEGER NOT NULL DEFAULT 1,   -- the index of the next seed to use (1 = first round)
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX seed_chains_by_game ON seed_chains (game, id DESC);

CREATE TABLE seeds (
    chain_id  BIGINT  NOT NULL REFERENCES seed_chains (id),
    idx       INTEGER NOT NULL,   -- 1 = first round's seed; seeds[idx-1] = sha256(seeds[idx])
    seed      TEXT    NOT NULL,
    PRIMARY KEY (chain_id, idx)
);

CREATE TABLE rounds (
    id          BIGSERIAL PRIMARY KEY,
    game        TEXT NOT NULL,
    phase       TEXT NOT NULL CHECK (phase IN ('betting', 'running', 'settled', 'voided')),
    chain_id    BIGINT  NOT NULL REFERENCES seed_chains (id),
    chain_idx   INTEGER NOT NULL,
    seed_hash   TEXT NOT NULL,
    outcome     JSONB,                 -- filled when settled
    closes_at   TIMESTAMPTZ NOT NULL,  -- end of betting
    started_at  TIMESTAMPTZ,           -- start of running
    settled_at  TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (chain_id, chain_idx)
);
CREATE INDEX rounds_by_game ON rounds (game, id DESC);
CREATE INDEX rounds_unfinished ON rounds (game) WHERE phase IN ('betting', 'running');

-- A crash cash-out (multiplier in hundredths), recorded before it is acknowledged.
ALTER TABLE bets ADD COLUMN cashout INTEGER CHECK (cashout >= 100);
