"""The fault soak, short: three real nodes, faults of every kind, players retrying by key, every invariant.

``loadtest/soak.py`` is the harness (and, with ``python -m loadtest.soak --seconds 300``, the long
version). Here it runs ~50 s of faults with a fixed seed: SIGKILL, SIGTERM and SIGSTOP of nodes
(often the driver of a game, struck while its round takes bets or runs), Redis stopped and started,
PostgreSQL restarted, while 12 players bet on crash, dice and roulette and cash out. Then every
acknowledged bet must exist exactly once, none may stay ``accepted``, each must be settled by its
game's rule, every wallet must equal credits - stakes + payouts + refunds, ``croupier audit`` must
pass, no refused bet may have been placed and no cash-out may be refused while a bet is still in.
"""

from __future__ import annotations

import pytest

from loadtest.soak import FAULT_KINDS, SoakConfig, run_soak

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
async def test_a_short_fault_soak_keeps_every_acknowledged_bet_and_balances_the_books() -> None:
    config = SoakConfig(seconds=50, nodes=3, players=12, seed=20240612, fault_gap=(1.5, 4.0), verbose=False)
    report = await run_soak(config)
    rendered = report.render()
    print(rendered)  # the figures, shown by pytest on failure (and with -s)
    assert report.error is None, rendered
    assert set(report.fault_counts) == set(FAULT_KINDS), rendered  # every kind of fault was injected
    assert len(report.acknowledged) >= 150, rendered
    failed = [f"({inv.number}) {inv.name}" for inv in report.invariants if not inv.ok]
    assert not failed, f"invariants failed: {failed}; work dir kept: {report.workdir}\n{rendered}"
