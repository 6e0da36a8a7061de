-- bets_open_by_round (game, round_id) WHERE status = 'accepted' goes: bets_by_round (round_id, migration 0016)
-- serves every query that read it (a round's open bets at settlement, its client seeds when betting closes:
-- a round's bets are read once, when they are all still open), and every bet placed paid for an entry in
-- both. One index entry less per bet written (loadtest/bench_bet_rows.py prices it), and no index on `status`
-- any more: a settlement's UPDATE no longer changes an indexed column.
DROP INDEX bets_open_by_round;
