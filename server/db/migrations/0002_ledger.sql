-- The double-entry ledger. Only server/ledger/ writes these tables.
-- Money is BIGINT counts of the smallest unit (Telegram Stars are whole numbers).

-- One row: the epoch of the per-user balance stream (offsets are accounts.version).
CREATE TABLE ledger_meta (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    epoch      TEXT NOT NULL
);
INSERT INTO ledger_meta (epoch) VALUES (substr(md5(random()::text || clock_timestamp()::text), 1, 12));

-- A wallet per user; house accounts (sharded so concurrent commits do not queue on one row)
-- collect stakes and pay wins; the bank account is the outside world (deposits, adjustments).
-- Wallets can never go negative; house and bank are the counterparties and may.
CREATE TABLE accounts (
    id       BIGSERIAL PRIMARY KEY,
    kind     TEXT   NOT NULL CHECK (kind IN ('wallet', 'house', 'bank')),
    user_id  BIGINT UNIQUE REFERENCES users (id),
    shard    INTEGER NOT NULL DEFAULT 0,
    balance  BIGINT NOT NULL DEFAULT 0,
    version  BIGINT NOT NULL DEFAULT 0,   -- bumps on every balance change: the user stream offset
    CONSTRAINT wallet_balance_not_negative CHECK (kind <> 'wallet' OR balance >= 0),
    CONSTRAINT wallet_has_user CHECK ((kind = 'wallet') = (user_id IS NOT NULL))
);
CREATE UNIQUE INDEX accounts_system ON accounts (kind, shard) WHERE kind <> 'wallet';
INSERT INTO accounts (kind, shard) SELECT 'house', s FROM generate_series(0, 7) AS s;
INSERT INTO accounts (kind, shard) VALUES ('bank', 0);

-- A ledger transaction: a set of legs summing to zero (checked by `croupier audit`).
CREATE TABLE ledger_txns (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('bet', 'payout', 'refund', 'deposit', 'adjust', 'welcome')),
    ref         TEXT,                       -- bet id, payment charge id, ... (what it is about)
    reason      TEXT,                       -- for people: why an adjustment was made
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- A deposit is recorded once per external reference (payment charge id): retries are no-ops.
CREATE UNIQUE INDEX ledger_txns_deposit_ref ON ledger_txns (ref) WHERE kind = 'deposit';

CREATE TABLE ledger_legs (
    txn_id      BIGINT NOT NULL REFERENCES ledger_txns (id),
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    amount      BIGINT NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (txn_id, account_id)
);
CREATE INDEX ledger_legs_account ON ledger_legs (account_id);

CREATE TABLE bets (
    id             BIGSERIAL PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users (id),
    game           TEXT   NOT NULL,
    round_id       BIGINT NOT NULL,
    amount         BIGINT NOT NULL CHECK (amount > 0),
    params         JSONB  NOT NULL DEFAULT '{}'::jsonb,
    idem_key       TEXT,
    status         TEXT   NOT NULL DEFAULT 'accepted' CHECK (status IN ('accepted', 'won', 'lost', 'refunded')),
    payout         BIGINT CHECK (payout >= 0),
    balance_after  BIGINT NOT NULL,         -- the wallet balance the first reply carried (replayed on retry)
    version_after  BIGINT NOT NULL,
    stake_txn      BIGINT NOT NULL REFERENCES ledger_txns (id),
    settle_txn     BIGINT REFERENCES ledger_txns (id),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    settled_at     TIMESTAMPTZ
);
CREATE UNIQUE INDEX bets_user_key ON bets (user_id, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX bets_open_by_round ON bets (game, round_id) WHERE status = 'accepted';
CREATE INDEX bets_by_user ON bets (user_id, id DESC);
