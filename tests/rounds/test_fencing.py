"""Fencing: a driver whose lease was taken over cannot open, close or settle a round."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import pytest

from server.ledger import BetRequest, Ledger
from server.rounds.lease import StaleLease
from server.rounds.store import RoundStore
from tests.ledger.conftest import sign_up


async def test_a_stale_driver_cannot_touch_rounds_and_its_settlement_is_rolled_back(
    database_url: str, bank: Ledger
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    store = RoundStore(pool, chain_length=20)
    game = f"dice-{secrets.token_hex(3)}"  # a game name of this test's own
    try:
        old = await store.take_lease(game, "node-a")
        new_round = await store.open_round(game, 60_000, old)
        user_id = 900_000 + secrets.randbelow(99_999)
        await sign_up(bank, user_id, "fence")
        await bank.deposit(user_id, 100, ref=f"fence-{user_id}")
        placed = await bank.place_bet(BetRequest(user_id, game, new_round.round_id, 40))

        current = await store.take_lease(game, "node-b")  # node B takes the game over
        assert current == old + 1
        with pytest.raises(StaleLease):
            await store.open_round(game, 60_000, old)
        with pytest.raises(StaleLease):
            await store.start_running(new_round.round_id, old)

        async def stale_mark(conn: Any) -> None:
            await RoundStore.mark_closed(conn, new_round.round_id, "settled", {"roll": 1}, old)

        with pytest.raises(StaleLease):  # the stale driver's settlement: refused by the database
            await bank.settle([(placed.bet_id, 80)], also=stale_mark)
        assert await pool.fetchval("SELECT status FROM bets WHERE id = $1", placed.bet_id) == "accepted"
        assert (await bank.balance(user_id)).balance == 60  # the payout was rolled back with it
        assert await pool.fetchval("SELECT phase FROM rounds WHERE id = $1", new_round.round_id) == "betting"

        async def current_mark(conn: Any) -> None:
            await RoundStore.mark_closed(conn, new_round.round_id, "settled", {"roll": 1}, current)

        assert await store.start_running(new_round.round_id, current) is not None
        closed = await bank.settle([(placed.bet_id, 80)], also=current_mark)
        assert [c.payout for c in closed] == [80] and (await bank.balance(user_id)).balance == 140
    finally:
        await pool.close()
