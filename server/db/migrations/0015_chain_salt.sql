-- Commit to a seed chain first, fix its salt after (docs/fairness.md, "Where the salt comes from").
--
-- A chain is committed when its row is written: its terminating hash (the sha256 of its first round's
-- seed) is fixed from then on and announced before its first round takes a bet. Its salt is fixed later,
-- in the transaction that closes the betting of its first round, from the client seeds of the bets
-- accepted in that round: salt = sha256_hex("<terminating_hash>:" || the client seeds joined with ':', in
-- bet id order). Until then `salt` is null. Rounds take chains in the order they were committed.
ALTER TABLE seed_chains RENAME COLUMN created_at TO committed_at;
ALTER TABLE seed_chains ADD COLUMN salt TEXT;
ALTER TABLE seed_chains ADD COLUMN client_seeds TEXT[];   -- what the salt was computed from (null: before 0015)
-- Chains committed before this migration keep the rule they were published under: their salt is their
-- terminating hash, and they have no client seeds.
UPDATE seed_chains SET salt = terminating_hash;

-- A bet's client seed (`bet.client_seed`): 1 to 64 printable ASCII characters other than ':'.
ALTER TABLE bets ADD COLUMN client_seed TEXT CHECK (client_seed ~ '^[ -9;-~]{1,64}$');
