"""How the ledger's group commits gather their batches (bets, sign-ins, crash cash-outs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """The settings of a :class:`~server.db.groupcommit.GroupCommit`: a batch closes when
    ``max_batch`` requests wait or ``max_wait`` seconds passed since its first; up to
    ``concurrency`` batches commit at once. A node sets them from ``CROUPIER_BET_BATCH_MAX``,
    ``CROUPIER_BET_BATCH_WAIT_US`` and ``CROUPIER_BET_BATCH_CONCURRENCY``."""

    max_batch: int = 500
    max_wait: float = 0.002
    concurrency: int = 2
