-- Refunds of Telegram Stars payments (server/telegram/refunds.py) and the ledger's deposit reversals.

-- A deposit reversal: the chips a refunded payment credited, taken back from the wallet to the bank
-- (as much of them as the wallet still holds). At most one per payment charge id, like deposits.
ALTER TABLE ledger_txns DROP CONSTRAINT ledger_txns_kind_check;
ALTER TABLE ledger_txns ADD CONSTRAINT ledger_txns_kind_check
    CHECK (kind IN ('bet', 'payout', 'refund', 'deposit', 'adjust', 'welcome', 'reversal'));
CREATE UNIQUE INDEX ledger_txns_reversal_ref ON ledger_txns (ref) WHERE kind = 'reversal';

-- An order whose payment was refunded: `refunded`, with the time; it keeps its charge id and paid_at.
ALTER TABLE star_orders ADD COLUMN refunded_at TIMESTAMPTZ;
ALTER TABLE star_orders DROP CONSTRAINT star_orders_status_check;
ALTER TABLE star_orders ADD CONSTRAINT star_orders_status_check
    CHECK (status IN ('pending', 'paid', 'cancelled', 'refunded'));
ALTER TABLE star_orders DROP CONSTRAINT star_orders_paid_has_charge;
ALTER TABLE star_orders ADD CONSTRAINT star_orders_paid_has_charge
    CHECK ((status IN ('paid', 'refunded')) = (paid_at IS NOT NULL AND telegram_payment_charge_id IS NOT NULL));
ALTER TABLE star_orders ADD CONSTRAINT star_orders_refunded_has_time
    CHECK ((status = 'refunded') = (refunded_at IS NOT NULL));

-- One row per refunded payment, written in the transaction of its reversal: refunding again finds it.
-- `credited` is what the deposit credited, `taken` what the reversal took back; a wallet that had
-- spent the chips already gives back what it holds and the rest is the shortfall, for the operator.
CREATE TABLE star_refunds (
    telegram_payment_charge_id  TEXT        PRIMARY KEY,
    user_id                     BIGINT      NOT NULL REFERENCES users (id),
    order_id                    BIGINT      REFERENCES star_orders (id),
    credited                    BIGINT      NOT NULL CHECK (credited > 0),
    taken                       BIGINT      NOT NULL CHECK (taken >= 0),
    shortfall                   BIGINT      GENERATED ALWAYS AS (credited - taken) STORED,
    source                      TEXT        NOT NULL CHECK (source IN ('telegram', 'operator', 'reconcile')),
    reason                      TEXT        NOT NULL,
    update_id                   BIGINT,     -- the refunded_payment update that reported it, if one did
    created_at                  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT star_refunds_taken_at_most_credited CHECK (taken <= credited)
);

-- What the operator is owed: refunds whose chips had been played already.
CREATE VIEW refund_shortfalls AS
    SELECT telegram_payment_charge_id, user_id, order_id, credited, taken, shortfall, source, reason, created_at
    FROM star_refunds WHERE shortfall > 0;

-- Accounts that may not buy chips: `flagged` by a refund the wallet could not cover, or (set by the
-- operator) `blocked` or `self_excluded`. The cashier refuses their pre-checkout queries.
CREATE TABLE account_restrictions (
    user_id     BIGINT      PRIMARY KEY REFERENCES users (id),
    kind        TEXT        NOT NULL CHECK (kind IN ('flagged', 'blocked', 'self_excluded')),
    reason      TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- `croupier stars reconcile --since` reads the deposits and reversals of a period (not every bet's).
CREATE INDEX ledger_txns_deposits_by_time ON ledger_txns (created_at) WHERE kind IN ('deposit', 'reversal');
