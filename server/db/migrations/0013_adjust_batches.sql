-- Credits of a batch (`croupier credit FIRST-LAST AMOUNT --batch REF`: funding load-test players, a
-- promotion): each adjustment of a batch has the ref `<batch>:<user id>`, so running the batch again
-- credits nobody twice. Single adjustments keep a NULL ref.
CREATE UNIQUE INDEX ledger_txns_adjust_ref ON ledger_txns (ref) WHERE kind = 'adjust';
