"""Round exposure caps without serialising bet batches: each node reserves shares of a round's cap.

A game may cap what one round can pay out in total (dice and roulette: ``max_exposure``), each
accepted bet counted at its largest possible payout. Counting that in the round's row inside
every bet batch would make all batches of a busy round wait for each other's commit on that row
(measured: 13-17% fewer bets a second). Instead ``rounds.exposure`` is what nodes have *reserved*
of the cap: a node takes a share at a time (a tenth of what is left, or what the batch needs if
more) in a short transaction of its own, and decides its bets against that share in memory. The
sum of the reservations never passes the cap, so neither do the bets. Near the cap a node may
refuse a bet while another node still holds an unused share: the cap is never passed, it may be
met a little early.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import asyncpg

from ..db import UNAVAILABLE_ERRORS
from .errors import LedgerUnavailable

SHARE = 10
"""A reservation takes at least 1/SHARE of what is left of the round's cap."""
KEEP_ROUNDS = 256
"""Rounds whose unused share this node remembers (older rounds have stopped taking bets)."""

_RESERVE = """
WITH old AS (SELECT exposure FROM rounds WHERE id = $1 AND phase = 'betting' FOR UPDATE),
     share AS (SELECT LEAST(GREATEST($2::bigint, ($3::bigint - exposure) / $4), $3::bigint - exposure) AS amount
               FROM old)
UPDATE rounds SET exposure = rounds.exposure + share.amount FROM share
WHERE rounds.id = $1 AND share.amount > 0
RETURNING share.amount
"""


class ExposureBudget:
    """This node's unused shares of capped rounds; bet batches take from it and give back what they did
    not use."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._free: OrderedDict[int, int] = OrderedDict()
        self._guard = asyncio.Lock()

    async def take(self, round_id: int, cap: int, need: int) -> int:
        """Up to ``need`` of round ``round_id``'s exposure for one batch (less only when the cap is near)."""
        async with self._guard:
            free = self._free.get(round_id, 0)
            if free < need:
                try:
                    reserved = await self._pool.fetchval(_RESERVE, round_id, need - free, cap, SHARE)
                except UNAVAILABLE_ERRORS as exc:
                    raise LedgerUnavailable(f"database unavailable: {type(exc).__name__}") from exc
                free += reserved or 0
            granted = min(free, need)
            self._keep(round_id, free - granted)
            return granted

    def give_back(self, round_id: int, amount: int) -> None:
        """Return what a batch took and did not use (refused bets, a failed transaction)."""
        if amount > 0:
            self._keep(round_id, self._free.get(round_id, 0) + amount)

    def _keep(self, round_id: int, free: int) -> None:
        self._free[round_id] = free
        self._free.move_to_end(round_id)
        while len(self._free) > KEEP_ROUNDS:
            self._free.popitem(last=False)
