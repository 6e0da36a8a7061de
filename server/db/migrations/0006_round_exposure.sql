-- What a round's accepted bets could pay out in total, each counted at its largest multiplier, for
-- games that cap it per round (dice, roulette: their `max_exposure` param). Bet batches add to it
-- under the round row's lock; a bet that would take it past the cap is refused.
ALTER TABLE rounds ADD COLUMN exposure BIGINT NOT NULL DEFAULT 0 CHECK (exposure >= 0);
