-- The Telegram Stars cashier (server/telegram/). Only server/telegram/ writes these tables.

-- A deposit order: written `pending` before its invoice link is made (the link's payload is the
-- order id), `paid` once Telegram reports the payment, `cancelled` when no link could be made.
-- `chips_per_star` is the rate when the order was made: a payment credits total_amount times it.
CREATE TABLE star_orders (
    id                          BIGSERIAL PRIMARY KEY,
    user_id                     BIGINT      NOT NULL REFERENCES users (id),
    stars                       INTEGER     NOT NULL CHECK (stars > 0),
    chips_per_star              BIGINT      NOT NULL CHECK (chips_per_star > 0),
    status                      TEXT        NOT NULL DEFAULT 'pending'
                                            CHECK (status IN ('pending', 'paid', 'cancelled')),
    created_at                  TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at                     TIMESTAMPTZ,
    telegram_payment_charge_id  TEXT        UNIQUE,
    CONSTRAINT star_orders_paid_has_charge
        CHECK ((status = 'paid') = (paid_at IS NOT NULL AND telegram_payment_charge_id IS NOT NULL))
);
-- The daily limit sums a user's orders of the last 24 hours.
CREATE INDEX star_orders_user_created ON star_orders (user_id, created_at);

-- Bot API updates already handled, by bot and update_id (update ids are per bot: a new bot token
-- must not find its updates "already handled"). Telegram delivers an update again when it did not
-- see a 2xx in time; the row is written in the transaction of the update's work, so a second
-- delivery finds it and changes nothing.
CREATE TABLE telegram_updates (
    bot_id       BIGINT      NOT NULL,
    update_id    BIGINT      NOT NULL,
    kind         TEXT        NOT NULL,
    handled_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, update_id)
);
