"""Recovery: a new driver first finishes the rounds its predecessor left unfinished.

A driver that stops mid-round (killed, restarted, its lease lost) leaves the round in PostgreSQL.
The next driver of the game (the same node again, or another) finishes every such round before it
opens one, by this rule (docs/architecture.md, "A round"):

1. Close betting, under the round's betting lock that every bet batch holds shared
   (:meth:`RoundStore.start_running <server.rounds.store.RoundStore.start_running>`): a bet
   committing meanwhile on any node either committed before (and is read with the round's bets)
   or finds the round closed. None is left behind in a round that nothing settles again. In a
   chain's first round this also fixes the chain's salt, from the client seeds of its bets
   (a chain's salt is fixed whenever its first round closes betting, even one then voided).
2. A round still ``betting`` is voided: every bet refunded, the seed revealed.
3. A ``running`` round goes on from its recorded ``started_at``, as if its driver had never
   stopped: the game's clock is the wall clock since that start, so a crash curve is where it
   would be now. Auto cash-outs it passed are paid, recorded cash-outs are paid, and the rest is
   settled by the game's rule (crash: a bet still in when the curve reaches the crash point
   loses). Nothing is refunded once the outcome is determined. A handler that fails voids it.
"""

from __future__ import annotations

import logging

from .driver import RoundDriver
from .events import RoundView
from .fair import FairRng
from .store import StoredRound

log = logging.getLogger(__name__)


async def recover(driver: RoundDriver) -> None:
    """Settle or refund every round of the driver's game left unfinished, revealing their seeds."""
    for stored in await driver.store.unfinished(driver.game):
        await recover_round(driver, stored)


async def recover_round(driver: RoundDriver, stored: StoredRound) -> None:
    """Finish one round a previous driver left unfinished, by the rule above."""
    closed = await driver.store.start_running(stored.round_id, driver.token)
    rng = FairRng(stored.seed, closed.salt, driver.game)
    # The round as its events after betting describe it, with its salt (its closing time is not kept: its
    # events go without).
    base = RoundView(game=driver.game, round=stored.round_id, seed_hash=stored.seed_hash, salt=closed.salt,
                     phase="betting", chain=closed.chain)  # fmt: skip
    if stored.phase == "betting":
        outcome = None
        started = closed.started_at_ms or driver.clock.now_ms()
    else:
        outcome = driver.draw(rng, stored.round_id)
        started = stored.started_at_ms or closed.started_at_ms or driver.clock.now_ms()
    log.info(
        "%s round %d left %s by its driver: %s",
        driver.game,
        stored.round_id,
        stored.phase,
        "voiding it" if outcome is None else "resuming it from its start",
    )
    await driver.finish(base, rng, stored.seed, outcome, started)
