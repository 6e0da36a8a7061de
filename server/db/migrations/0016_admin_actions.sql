-- The back office (server/backoffice/): what operators did through /admin/api or the CLI, and the
-- lookups its reads need.

-- One row per write an operator made (block, unblock, adjust, void, publish), in the transaction of
-- the write when the write is one (block, unblock, adjust), else right after it (void, publish).
-- `key_name` is the name of the admin key that made it (never the key: CROUPIER_ADMIN_KEYS holds its
-- SHA-256), or `cli:<login>` for the `croupier` command. `target` is what it was about: `user:<id>`,
-- `round:<id>`, `game:<name>`, `all`. `before` and `after` are the state it changed, as JSON.
CREATE TABLE admin_actions (
    id               BIGSERIAL   PRIMARY KEY,
    key_name         TEXT        NOT NULL,
    action           TEXT        NOT NULL CHECK (action IN ('block', 'unblock', 'adjust', 'void', 'publish')),
    target           TEXT        NOT NULL,
    reason           TEXT        NOT NULL,
    before           JSONB,
    after            JSONB,
    idempotency_key  TEXT,       -- an adjustment's key (its ledger transaction's ref is `admin:<key>`)
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The actions about one user or round, newest first (GET /admin/api/actions?target=).
CREATE INDEX admin_actions_by_target ON admin_actions (target, id DESC);
-- An adjustment is made once per idempotency key (the ledger's unique adjust ref says so too): its row
-- holds the first answer, which a repeated request gets again.
CREATE UNIQUE INDEX admin_actions_adjust_key ON admin_actions (idempotency_key) WHERE action = 'adjust';

-- GET /admin/api/users?username=: Telegram usernames are case-insensitive.
CREATE INDEX users_by_username ON users (lower(username)) WHERE username IS NOT NULL;
-- GET /admin/api/rounds/{id}: the count and total of a round's bets, settled or not (bets_open_by_round
-- holds only the open ones). One more index for every bet to maintain; building it locks the bets table
-- against writes while it runs (once, at this migration).
CREATE INDEX bets_by_round ON bets (round_id);
