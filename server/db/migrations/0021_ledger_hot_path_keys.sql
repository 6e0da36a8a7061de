-- The bet path's tables keep no foreign keys: every stake writes a ledger transaction, two legs and a bet,
-- and each referenced row was checked by a lookup and locked (FOR KEY SHARE) per inserted row: 35 µs of
-- PostgreSQL's CPU per bet of 94 (loadtest/bench_bet_rows.py, docs/performance.md). Worse, the plans those
-- checks cache on a table analyzed while small read the whole referenced table per row (hundreds of µs per
-- bet and growing, on a fresh deployment, until autovacuum analyzes again).
-- Only server/ledger/ writes these rows, from ids it has just read or made under lock in the same
-- transaction; `croupier audit` proves what the keys guarded: every leg's transaction and account exist,
-- every bet's stake (and settlement) transaction moves its amount from its user's wallet (so both exist).
ALTER TABLE ledger_legs DROP CONSTRAINT ledger_legs_txn_id_fkey;
ALTER TABLE ledger_legs DROP CONSTRAINT ledger_legs_account_id_fkey;
ALTER TABLE bets DROP CONSTRAINT bets_user_id_fkey;
ALTER TABLE bets DROP CONSTRAINT bets_stake_txn_fkey;
ALTER TABLE bets DROP CONSTRAINT bets_settle_txn_fkey;
