"""A seed chain is committed before its first round; its salt is fixed only when that round's betting closes,
from the client seeds of its bets (docs/fairness.md, "Where the salt comes from").

The salt function on its own first; then a real engine on a clock the test moves (the first round of a chain
played, voided by the next driver, and resumed by it); then a real node whose chain was committed ahead with
``croupier chain new``.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.games.dice import Dice
from server.ledger import BetRequest
from server.rounds.fair import FairRng, chain_salt, generate_chain, sha256_hex
from server.rounds.store import RoundStore
from tests.rounds.conftest import OpenTable, Table
from tests.rounds.test_recovery import event, node_env, player, reply_to
from tests.services import node_process, wait_ready

TERMINATING_HASH = "22ed166c097cf334ca85087b8acac1c44543a48d5222458dcfff0f9998130fae"
OVER_HALF = {"target": 5000, "side": "over"}


# ---------------------------------------------------------------- the salt function


def test_the_salt_hashes_the_terminating_hash_and_the_client_seeds_joined_with_colons() -> None:
    salt = chain_salt(TERMINATING_HASH, ["lucky 7", "c0ffee"])
    assert salt == hashlib.sha256(f"{TERMINATING_HASH}:lucky 7:c0ffee".encode("ascii")).hexdigest()
    assert salt == "57a49bdd30a56f713ef4608b10f16bf9650738e97ef20bbe79cbdeaa3ef3167d"


def test_the_salt_of_a_first_round_without_client_seeds_hashes_the_terminating_hash_and_a_colon() -> None:
    assert chain_salt(TERMINATING_HASH, []) == sha256_hex(f"{TERMINATING_HASH}:")
    assert chain_salt(TERMINATING_HASH, []) != TERMINATING_HASH != sha256_hex(TERMINATING_HASH)


def test_every_seed_and_its_place_changes_the_salt() -> None:
    salts = {
        chain_salt(TERMINATING_HASH, seeds)
        for seeds in (["a", "b"], ["b", "a"], ["a"], ["b"], ["a", "b", "c"], ["ab"], [])
    }
    assert len(salts) == 7
    assert chain_salt(TERMINATING_HASH, ["a", "b"]) != chain_salt("0" * 64, ["a", "b"])


# ---------------------------------------------------------------- the store: chains in the order committed


async def test_rounds_take_chains_in_the_order_they_were_committed_each_to_its_end(pool: asyncpg.Pool) -> None:
    game = f"chains-{secrets.token_hex(4)}"
    store = RoundStore(pool, chain_length=2)
    token = await store.take_lease(game, "chain-test")
    first = await store.open_round(game, 60_000, token)  # commits a chain of its own: none was waiting
    assert first.chain is not None and first.salt is None and first.chain.terminating_hash == first.seed_hash
    ahead = await store.commit_chain(game)  # as `croupier chain new` does, while the first chain is in use
    closed = await store.start_running(first.round_id, token)
    assert closed.salt == chain_salt(first.chain.terminating_hash, []) and closed.chain is not None
    second = await store.open_round(game, 60_000, token)
    assert (second.chain, second.salt, second.seed_hash) == (None, closed.salt, first.seed)  # the first chain's end
    await store.start_running(second.round_id, token)
    third = await store.open_round(game, 60_000, token)
    assert third.chain == ahead and third.salt is None and third.seed_hash == ahead.terminating_hash


async def test_a_chain_whose_seeds_are_missing_is_retired_for_the_next(pool: asyncpg.Pool) -> None:
    game = f"chains-{secrets.token_hex(4)}"
    store = RoundStore(pool, chain_length=3)
    token = await store.take_lease(game, "chain-test")
    broken, good = await store.commit_chain(game), await store.commit_chain(game)
    await pool.execute("DELETE FROM seeds WHERE chain_id = $1", broken.id)
    opened = await store.open_round(game, 60_000, token)
    assert opened.chain == good
    assert await pool.fetchval("SELECT next_index > length FROM seed_chains WHERE id = $1", broken.id)


async def test_a_chain_played_before_the_salt_rule_keeps_its_terminating_hash_as_its_salt(pool: asyncpg.Pool) -> None:
    """A chain a node from before migration 0015 committed and started (its salt never fixed by the rule)."""
    game = f"chains-{secrets.token_hex(4)}"
    store = RoundStore(pool, chain_length=10)
    token = await store.take_lease(game, "chain-test")
    seeds = generate_chain(5)
    terminating_hash = sha256_hex(seeds[0])
    chain_id = await pool.fetchval("INSERT INTO seed_chains (game, terminating_hash, length, next_index) "
                                   "VALUES ($1, $2, 5, 2) RETURNING id", game, terminating_hash)  # fmt: skip
    await pool.executemany("INSERT INTO seeds (chain_id, idx, seed) VALUES ($1, $2, $3)",
                           [(chain_id, i + 1, seed) for i, seed in enumerate(seeds)])  # fmt: skip
    opened = await store.open_round(game, 60_000, token)
    assert (opened.seed, opened.salt, opened.chain) == (seeds[1], terminating_hash, None)
    closed = await store.start_running(opened.round_id, token)
    assert (closed.salt, closed.chain) == (terminating_hash, None)


# ---------------------------------------------------------------- a real engine on a clock the test moves


def dice(**params: Any) -> Dice:
    """A dice game of this test's own (its own chains), drawing from the fair RNG as dice does."""

    class ChainDice(Dice):
        name = f"dice-{secrets.token_hex(4)}"

    return ChainDice({"running_ms": 0, **params})


async def place(table: Table, user_id: int, round_id: int, client_seed: str | None) -> int:
    request = BetRequest(user_id, table.name, round_id, 100, OVER_HALF, client_seed=client_seed)
    return (await table.ledger.place_bet(request)).bet_id


async def test_a_chains_first_round_fixes_the_salt_from_its_bets_client_seeds_as_betting_closes(
    open_table: OpenTable,
) -> None:
    game = dice()
    async with open_table(game) as table:
        engine = await table.engine()
        betting = await table.events.round("betting")
        round_id, chain = betting["round"], betting["chain"]
        users = [await table.player() for _ in range(3)]
        seeds = ["lucky 7", None, "c0ffee"]
        bets = [await place(table, user, round_id, seed) for user, seed in zip(users, seeds, strict=True)]
        running = await table.close_betting(betting)
        await table.at(running, game.tick_ms)  # its next tick ends it (running_ms 0)
        settled = await table.events.round("settled")
        following = await table.next_round()
        (record,) = [r for r in await engine.history(table.name, 10) if r.round == round_id]
        stored = await table.pool.fetchrow("SELECT salt, client_seeds FROM seed_chains WHERE id = $1", chain["id"])
    # Committed and announced with the round: the terminating hash is the first round's seed_hash; no salt yet.
    assert "salt" in betting and betting["salt"] is None
    assert chain["terminating_hash"] == betting["seed_hash"] and chain["length"] == 10
    assert chain["committed_at"] <= betting["closes_at"] and "client_seeds" not in chain
    # Fixed as betting closed, from the client seeds of the bets, in bet id order (a bet without one adds none).
    salt = hashlib.sha256(f"{chain['terminating_hash']}:lucky 7:c0ffee".encode("ascii")).hexdigest()
    assert bets == sorted(bets) and running["salt"] == settled["salt"] == salt
    assert running["chain"] == settled["chain"] == {**chain, "client_seeds": ["lucky 7", "c0ffee"]}
    assert settled["outcome"] == game.outcome(FairRng(settled["seed"], salt, game.name))
    assert sha256_hex(settled["seed"]) == betting["seed_hash"]
    # The chain's other rounds use the same salt from their betting event on, and do not repeat the chain.
    assert following["salt"] == salt and "chain" not in following and following["seed_hash"] == settled["seed"]
    assert stored is not None and (stored["salt"], stored["client_seeds"]) == (salt, ["lucky 7", "c0ffee"])
    assert record.salt == salt and record.chain is not None and record.chain.client_seeds == ["lucky 7", "c0ffee"]


async def test_a_chains_first_round_voided_by_the_next_driver_still_fixes_the_salt(open_table: OpenTable) -> None:
    async with open_table(dice()) as table:
        first = await table.engine("node-a")
        betting = await table.events.round("betting")
        user = await table.player()
        bet = await place(table, user, betting["round"], "mine")
        await first.close()  # the driver stops while the chain's first round takes bets
        await table.engine("node-b")
        settled = await table.events.round("settled")
        following = await table.events.round("betting")
    salt = chain_salt(betting["chain"]["terminating_hash"], ["mine"])
    assert settled["voided"] and settled["salt"] == salt and settled["chain"]["client_seeds"] == ["mine"]
    assert following["salt"] == salt and "chain" not in following
    assert await table.bets(betting["round"]) == {bet: ("refunded", None, 100)}


async def test_a_chains_first_round_resumed_by_the_next_driver_draws_with_the_chains_salt(
    open_table: OpenTable,
) -> None:
    game = dice(running_ms=500)
    async with open_table(game) as table:
        first = await table.engine("node-a")
        betting = await table.events.round("betting")
        round_id = betting["round"]
        user = await table.player()
        bet = await place(table, user, round_id, "resume me")
        running = await table.close_betting(betting)
        await table.clock.until_asleep()  # it runs, waiting for its next tick
        await first.close()
        assert await table.phase(round_id) == "running"
        await table.engine("node-b")
        resumed = await table.events.round("running")
        await table.at(running, 500)
        settled = await table.events.round("settled")
    salt = chain_salt(betting["chain"]["terminating_hash"], ["resume me"])
    assert running["salt"] == resumed["salt"] == settled["salt"] == salt
    assert resumed["chain"]["client_seeds"] == ["resume me"] and resumed["epoch"] != running["epoch"]
    outcome = game.outcome(FairRng(settled["seed"], salt, game.name))
    assert settled["outcome"] == outcome
    payout = 100 * game.multiplier(5000, "over") // 100 if outcome["roll"] > 5000 else 0
    assert await table.bets(round_id) == {bet: ("won" if payout else "lost", None, payout)}


# ---------------------------------------------------------------- a real node, its chain committed ahead


def chain_new(env: dict[str, str], game: str, length: int) -> dict[str, str]:
    """``croupier chain new`` run as an operator runs it: what it printed, ``name value`` per line."""
    made = subprocess.run(
        [sys.executable, "-m", "server", "chain", "new", "--game", game, "--length", str(length)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return dict(line.split(" ", 1) for line in made.stdout.splitlines() if " " in line)


async def test_a_chain_committed_ahead_is_announced_and_salted_by_the_players_seeds(
    empty_database: str, tmp_path: Path
) -> None:
    env = node_env(empty_database, tmp_path / "state", CROUPIER_GAMES="dice", CROUPIER_BETTING_MS="6000")
    printed = chain_new(env, "dice", 10)
    assert set(printed) >= {"game", "chain", "length", "terminating_hash"} and printed["length"] == "10"
    with node_process(env) as (_, port):
        await wait_ready(port)
        async with contextlib.AsyncExitStack() as stack:
            alice, bob = [await stack.enter_async_context(player(port, user)) for user in (7301, 7302)]
            subscribed = await reply_to(alice, {"t": "subscribe", "id": "s", "game": "dice"})
            betting = subscribed["round"]
            if betting is None:  # subscribed before the first round opened
                betting = await event(alice, lambda m: m["t"] == "round" and m["phase"] == "betting")
            assert betting["phase"] == "betting" and betting["salt"] is None
            assert betting["chain"]["id"] == int(printed["chain"])
            assert betting["chain"]["terminating_hash"] == printed["terminating_hash"] == betting["seed_hash"]
            placed = []
            for ws, seed in ((bob, "bob's"), (alice, "alice 1")):
                reply = await reply_to(ws, {"t": "bet", "id": "b", "game": "dice", "round": betting["round"],
                                            "amount": 10, "params": OVER_HALF, "client_seed": seed})  # fmt: skip
                assert reply["t"] == "bet_ok", reply
                placed.append((reply["bet"]["id"], seed))
            refused = await reply_to(alice, {"t": "bet", "id": "c", "game": "dice", "round": betting["round"],
                                             "amount": 10, "params": OVER_HALF, "client_seed": "a:b"})  # fmt: skip
            assert (refused["t"], refused["code"], refused["field"]) == ("error", "bad_request", "client_seed")
            running = await event(alice, lambda m: m["t"] == "round" and m["phase"] == "running", timeout=15)
            settled = await event(alice, lambda m: m["t"] == "round" and m["phase"] == "settled")
    seeds = [seed for _, seed in sorted(placed)]
    salt = sha256_hex(f"{printed['terminating_hash']}:" + ":".join(seeds))
    assert running["salt"] == settled["salt"] == salt and running["chain"]["client_seeds"] == seeds
    assert settled["outcome"] == Dice().outcome(FairRng(settled["seed"], salt, "dice"))


@pytest.mark.parametrize("args", [["--game", "no-such-game"], ["--game", "dice", "--length", "0"]])
def test_croupier_chain_new_refuses_an_unknown_game_or_length(args: list[str], tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "server", "chain", "new", *args],
                          env=node_env("postgresql://127.0.0.1:1/none", tmp_path), capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert made.returncode == 2 and made.stderr.startswith("croupier: "), made.stderr
