-- A player's history, a page at a time (server/players/history.py): keyset scans, newest first.
-- my_bets of one game: the user's bets of that game by id (bets_by_user serves every game).
CREATE INDEX bets_by_user_game ON bets (user_id, game, id DESC);
-- my_transactions: the wallet's legs by transaction, newest first (replaces the plain account index,
-- which serves the same lookups by account).
CREATE INDEX ledger_legs_by_account ON ledger_legs (account_id, txn_id DESC);
DROP INDEX ledger_legs_account;
