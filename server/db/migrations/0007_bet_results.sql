-- A bet's own draw, for games where each bet draws its result from its own fair RNG stream
-- (plinko): written when the bet settles, sent in its `bet_settled`, recomputable by anyone from
-- the round's revealed seed, its salt and the bet's id (`croupier verify GAME --bet-id`).
ALTER TABLE bets ADD COLUMN result JSONB;
