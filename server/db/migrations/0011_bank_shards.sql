-- The bank in eight shards, as the house is: every deposit moves chips out of the bank, and with one
-- bank row each deposit waited for the previous one's commit (its row lock): about 250 deposits a
-- second. A deposit takes the shard of its user (user id mod 8); shard 0 stays the bank of the
-- welcome credits, adjustments and reversals.
INSERT INTO accounts (kind, shard) SELECT 'bank', s FROM generate_series(1, 7) AS s;
