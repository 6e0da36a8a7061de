"""The risk report on real PostgreSQL: scripted abusers beside an honest population, written through the ledger.

A database of this module's own (nothing else's rows in the window). 200 honest players sign in, are funded
by a deposit and bet on every game; each round's outcome is drawn by the game itself from a seed of a seeded
RNG (the player's luck is honest), and the bets are settled with :meth:`Ledger.settle`. Beside them: a cheat
winning 5% dice bets 95% of the time, a bot betting 300 times in one minute, a player depositing, playing and
refunding three Stars payments (through :class:`~server.telegram.refunds.Refunds`), two accounts betting both
sides of the same dice rounds, and six new accounts claiming the welcome credit from one address. The ledger
stamps bets with the time they are placed; the test then spreads them over a day (its clock), so a day of
play takes seconds. The report flags exactly the abusers, and running it again adds no row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from server.db.transactions import Connection, in_transaction
from server.games import registered_games
from server.ledger import BetRequest, Ledger
from server.risk import FlagKind, SigninAddresses, Window, list_flags, mark_reviewed, run_report
from server.risk.commands import game_handlers, risk_report
from server.rounds.fair import FairRng
from server.rounds.handler import BetInfo, RoundHandler
from server.telegram.orders import DepositLimits, mark_paid, open_order
from server.telegram.refunds import Refunds, RefundSource
from tests.conftest import make_settings
from tests.ledger.conftest import create_open_round, next_user_id, sign_up
from tests.services import clean_env, migrated_pool

pytestmark = pytest.mark.timeout(240)

HANDLERS: dict[str, RoundHandler[Any, Any]] = {name: game() for name, game in registered_games().items()}
ROUNDS = {"dice": 40, "roulette": 20, "crash": 20, "wheel": 10, "plinko": 10}
CRASH_TARGETS = [110, 150, 200, 300, 500, 1000]
ROULETTE = (
    [{"type": t} for t in ("red", "black", "odd", "even", "low", "high")]
    + [{"type": "dozen", "numbers": [n]} for n in (1, 2, 3)]
    + [{"type": "straight", "numbers": [n]} for n in (0, 7, 17)]
)
FARM_ADDRESS = "203.0.113.7"


@dataclass
class Bet:
    """A bet to place: who, where, what; after placing, its id; the time the test's clock gives it."""

    user: int
    game: str
    round_id: int
    amount: int
    params: dict[str, Any]
    at: dt.datetime | None = None
    plan: int | None = None
    """A crash bet played by hand: where the player means to cash out."""
    wins: float | None = None
    """A cheat's bet: the chance it is paid as a win, whatever the round drew."""
    bet_id: int = 0


@dataclass
class World:
    """The scripted population: who is who, and the window they played in."""

    window: Window
    honest: list[int] = field(default_factory=list)
    abusers: dict[tuple[int, FlagKind], str] = field(default_factory=dict)


@pytest.fixture
async def pool(empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    async with migrated_pool(empty_database, max_size=8) as pool:
        yield pool


def honest_bet(rng: random.Random, user: int, game: str, rounds: dict[str, list[int]]) -> Bet:
    amount = rng.choice([1, 2, 5, 10, 20])
    plan = None
    if game == "dice":
        params: dict[str, Any] = {"target": rng.randrange(500, 9500), "side": rng.choice(["under", "over"])}
    elif game == "roulette":
        params = dict(rng.choice(ROULETTE))
    elif game == "crash":
        target = rng.choice(CRASH_TARGETS)
        params, plan = ({"auto_cashout": target}, None) if rng.random() < 0.7 else ({}, target)
    elif game == "wheel":
        params = rng.choice([{"type": "spin"}, {"type": "colour", "colour": rng.choice(["red", "black", "gold"])}])
    else:
        params = {"risk": rng.choice(["low", "medium", "high"])}
    return Bet(user, game, rng.choice(rounds[game]), amount, params, plan=plan)


async def place(ledger: Ledger, bets: list[Bet]) -> None:
    """Place ``bets`` through the ledger, many at once (its group commit gathers them)."""
    for start in range(0, len(bets), 400):
        chunk = bets[start : start + 400]
        placed = await asyncio.gather(*(ledger.place_bet(BetRequest(b.user, b.game, b.round_id, b.amount, b.params))
                                        for b in chunk))  # fmt: skip
        for bet, done in zip(chunk, placed, strict=True):
            assert done.status == "accepted", done
            bet.bet_id = done.bet_id


async def settle(ledger: Ledger, rng: random.Random, bets: list[Bet]) -> None:
    """Settle every round: its outcome drawn by the game from a seed; crash plans cashed out by hand when the
    curve got there (:meth:`Ledger.record_cashout`); a cheat's bets paid as their odds say."""
    by_round: dict[tuple[str, int], list[Bet]] = {}
    for bet in bets:
        by_round.setdefault((bet.game, bet.round_id), []).append(bet)
    for (game, _), in_round in sorted(by_round.items()):
        handler = HANDLERS[game]
        fair = FairRng(f"{rng.getrandbits(256):064x}", "risk-test", game)
        outcome = handler.outcome(fair)
        payouts: list[tuple[int, int]] = []
        results: dict[int, dict[str, Any]] = {}
        for bet in in_round:
            info = BetInfo(bet.bet_id, bet.user, bet.amount, handler.read_bet(bet.params, bet.amount))
            if bet.plan is not None and outcome["crash_point"] > bet.plan:
                assert await ledger.record_cashout([bet.bet_id], bet.plan) == [bet.bet_id]
                info = BetInfo(info.bet_id, info.user_id, info.amount, info.params, cashout=bet.plan)
            result = handler.bet_result(fair.for_bet(bet.bet_id), info, outcome)
            if result is not None:
                results[bet.bet_id] = result
                info = BetInfo(info.bet_id, info.user_id, info.amount, info.params, result=result)
            paid = handler.payout(info, outcome)
            if bet.wins is not None:  # the cheat knows the roll: pays as its win rate says
                paid = bet.amount * handler.max_multiplier(info.params) // 100 if rng.random() < bet.wins else 0
            payouts.append((bet.bet_id, paid))
        await ledger.settle(payouts, results=results)


async def set_clock(pool: asyncpg.Pool, bets: list[Bet]) -> None:
    """Give each bet the time the script says (placed then, settled 10 s later)."""
    timed = [bet for bet in bets if bet.at is not None]
    await pool.execute(
        "UPDATE bets SET created_at = t.at, settled_at = t.at + interval '10 seconds' "
        "FROM unnest($1::bigint[], $2::timestamptz[]) AS t(id, at) WHERE bets.id = t.id",
        [bet.bet_id for bet in timed], [bet.at for bet in timed])  # fmt: skip


async def new_player(ledger: Ledger, addresses: SigninAddresses, address: str, funds: int = 0) -> int:
    user = next_user_id()
    await sign_up(ledger, user)
    addresses.record(user, address)
    if funds:
        await ledger.deposit(user, funds, ref=f"fund-{user}")
    return user


async def star_deposit(pool: asyncpg.Pool, ledger: Ledger, user: int, stars: int, charge: str) -> None:
    """A Stars payment as the cashier records it: an order, paid by ``charge``, its chips credited."""

    async def order(conn: Connection) -> int:
        made = await open_order(conn, user, stars, 10, DepositLimits(1, 10_000, 100_000))
        assert not isinstance(made, str), made
        return made.id

    order_id = await in_transaction(pool, order)

    async def paid(conn: Connection) -> None:
        assert await mark_paid(conn, order_id, charge)

    await ledger.deposit(user, stars * 10, ref=charge, also=paid)


async def play_a_day(pool: asyncpg.Pool, ledger: Ledger) -> World:
    rng = random.Random(20260301)
    begun = dt.datetime.now(dt.UTC).replace(microsecond=0)
    world = World(Window(begun - dt.timedelta(hours=1), begun + dt.timedelta(hours=25)))

    def some_time() -> dt.datetime:
        return begun + dt.timedelta(seconds=rng.randrange(24 * 3600))

    rounds = {game: [await create_open_round(pool, game) for _ in range(n)] for game, n in ROUNDS.items()}
    addresses = SigninAddresses(pool)
    bets: list[Bet] = []

    # 200 honest players: a favourite game (50 bets) and 10 bets on the others, through the day. Four of them
    # share an address (a NAT), the others each have their own.
    for n in range(200):
        user = await new_player(ledger, addresses, "192.0.2.1" if n < 4 else f"10.0.{n // 250}.{n % 250}", 100_000)
        world.honest.append(user)
        favourite = rng.choice(list(ROUNDS))
        for game in [favourite] * 50 + [rng.choice(list(ROUNDS)) for _ in range(10)]:
            bets.append(honest_bet(rng, user, game, rounds))
            bets[-1].at = some_time()

    # A cheat: dice under 500 (5% to win, 19.80x) won 95% of the time, 200 bets.
    cheat = await new_player(ledger, addresses, "198.51.100.1", 100_000)
    world.abusers[(cheat, FlagKind.LUCK)] = "wins 5% dice bets 95% of the time"
    for _ in range(200):
        bets.append(Bet(cheat, "dice", rng.choice(rounds["dice"]), 10, {"target": 500, "side": "under"},
                        at=some_time(), wins=0.95))  # fmt: skip

    # A bot: 300 bets of 1 chip within one minute, always under 5000 (an honest game, just fast).
    bot = await new_player(ledger, addresses, "198.51.100.2", 100_000)
    world.abusers[(bot, FlagKind.BET_VELOCITY)] = "300 bets in a minute"
    burst = begun.replace(second=0) + dt.timedelta(hours=3)
    for i in range(300):
        bets.append(Bet(bot, "dice", rng.choice(rounds["dice"]), 1, {"target": 5000, "side": "under"},
                        at=burst + dt.timedelta(milliseconds=150 * i)))  # fmt: skip

    # Two accounts of one player on both sides of 30 dice rounds, with the same stake.
    low = await new_player(ledger, addresses, "198.51.100.3", 100_000)
    high = await new_player(ledger, addresses, "198.51.100.4", 100_000)
    world.abusers[(low, FlagKind.BOTH_SIDES)] = world.abusers[(high, FlagKind.BOTH_SIDES)] = "both sides"
    for round_id in rounds["dice"][:30]:
        at = some_time()
        bets.append(Bet(low, "dice", round_id, 50, {"target": 5000, "side": "under"}, at=at))
        bets.append(Bet(high, "dice", round_id, 50, {"target": 4999, "side": "over"}, at=at))

    await place(ledger, bets)
    await settle(ledger, rng, bets)
    await set_clock(pool, bets)

    # A refund cycler: three Stars payments, each played through, then refunded. And an honest player who asks
    # for a refund once, without having played.
    refunds = Refunds(pool, ledger, bot_id=1)
    cycler = await new_player(ledger, addresses, "198.51.100.5")
    world.abusers[(cycler, FlagKind.REFUND_CYCLING)] = "three refunds"
    for n in range(3):
        charge = f"charge-{cycler}-{n}"
        await star_deposit(pool, ledger, cycler, 50, charge)
        played = [Bet(cycler, "dice", rng.choice(rounds["dice"][30:]), 100, {"target": 5000, "side": "over"})
                  for _ in range(4)]  # fmt: skip
        await place(ledger, played)
        await settle(ledger, rng, played)
        await refunds.reverse(charge, source=RefundSource.OPERATOR, reason="asked for it back")
    regretful = world.honest[0]
    await star_deposit(pool, ledger, regretful, 20, f"charge-{regretful}")
    await refunds.reverse(f"charge-{regretful}", source=RefundSource.OPERATOR, reason="bought by mistake")

    # Six new accounts from one address, each taking the welcome credit.
    for _ in range(6):
        farmed = await new_player(ledger, addresses, FARM_ADDRESS)
        world.abusers[(farmed, FlagKind.WELCOME_FARMING)] = "welcome farm"
    await addresses.close()
    return world


async def test_the_report_flags_the_abusers_and_none_of_the_honest_players(pool: asyncpg.Pool) -> None:
    ledger = Ledger(pool, welcome_credit=1000)
    await ledger.start()
    try:
        world = await play_a_day(pool, ledger)
    finally:
        await ledger.close()
    assert await pool.fetchval("SELECT count(*) FROM bets WHERE status = 'accepted'") == 0

    async with pool.acquire() as conn:
        report = await run_report(conn, world.window, HANDLERS)
    found = {(flag.user_id, flag.kind) for flag in report.flags}
    assert found == set(world.abusers), {flag.user_id: flag.summary for flag in report.flags}
    assert not {user for user, _ in found} & set(world.honest)
    assert report.new == found
    by_kind = {flag.kind: flag for flag in report.flags}
    assert by_kind[FlagKind.LUCK].score > 20
    assert by_kind[FlagKind.BET_VELOCITY].score == 300
    assert by_kind[FlagKind.REFUND_CYCLING].score == 3
    assert by_kind[FlagKind.BOTH_SIDES].score == 30
    assert by_kind[FlagKind.WELCOME_FARMING].evidence["address"] == FARM_ADDRESS

    # Running it again over the same window adds no row; the flags are known now.
    async with pool.acquire() as conn:
        again = await run_report(conn, world.window, HANDLERS)
        stored = await list_flags(conn, limit=1000)
    assert {(flag.user_id, flag.kind) for flag in again.flags} == found and again.new == frozenset()
    assert len(stored) == len(found) == await pool.fetchval("SELECT count(*) FROM risk_flags")

    # A reviewed flag keeps what the reviewer saw; a later window is a new row.
    luck = next(flag for flag in stored if flag.kind is FlagKind.LUCK)
    async with pool.acquire() as conn:
        assert await mark_reviewed(conn, luck.id, "alice") and not await mark_reviewed(conn, luck.id, "bob")
        assert [f.id for f in await list_flags(conn, unreviewed=True, limit=1000)] == [
            f.id for f in stored if f.id != luck.id]  # fmt: skip
        assert [f.kind for f in await list_flags(conn, user_id=luck.user_id)] == [FlagKind.LUCK]
        later = Window(world.window.start, world.window.end + dt.timedelta(hours=1))
        assert len((await run_report(conn, later, HANDLERS)).new) == len(found)
    assert await pool.fetchval("SELECT count(*) FROM risk_flags") == 2 * len(found)


async def test_the_command_writes_and_prints_the_flags(
    pool: asyncpg.Pool, empty_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``croupier risk report`` as a user runs it (a process of its own): two refunds of one player, as
    server/telegram/refunds.py records them, flagged once however often it runs."""
    await pool.execute("INSERT INTO users (id, first_name) VALUES (77, 'cycler')")
    await pool.execute(
        "INSERT INTO star_refunds (telegram_payment_charge_id, user_id, credited, taken, source, reason, created_at) "
        "VALUES ('c1', 77, 500, 500, 'telegram', 'x', '2026-01-10T10:00Z'), "
        "('c2', 77, 500, 120, 'telegram', 'x', '2026-01-10T14:00Z')"
    )
    env = clean_env(CROUPIER_DATA_DIR=str(tmp_path / "state"), DATABASE_URL=empty_database)
    window = ["--since", "2026-01-10", "--until", "2026-01-11"]
    first = subprocess.run([sys.executable, "-m", "server", "risk", "report", *window, "--json"], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert first.returncode == 0, first.stderr
    [flag] = orjson.loads(first.stdout)["flags"]
    assert (flag["user_id"], flag["kind"], flag["score"], flag["new"]) == (77, "refund_cycling", 2, True)
    again = subprocess.run([sys.executable, "-m", "server", "risk", "report", *window], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == "risk report 2026-01-10 00:00 to 2026-01-11 00:00 UTC: 1 flag(s), 0 new"
    assert again.stdout.splitlines()[2].split()[:3] == ["77", "refund_cycling", "2"]
    assert await pool.fetchval("SELECT count(*) FROM risk_flags") == 1

    settings = make_settings(None, tmp_path)
    assert set(game_handlers(settings)) == set(registered_games())  # every game: old bets may be of any
    assert await risk_report(settings, empty_database, since="nope", until=None, as_json=True) == 2
    assert "--since must be a date" in capsys.readouterr().err


async def test_sign_in_addresses_are_recorded_once_off_the_sign_in_path(pool: asyncpg.Pool) -> None:
    addresses = SigninAddresses(pool, every=0.01, max_pending=3)
    addresses.start()
    addresses.record(1, "192.0.2.1")
    addresses.record(1, "192.0.2.1")
    addresses.record(1, "::ffff:192.0.2.2")
    addresses.record(2, "/run/croupier.sock")  # not an IP address: ignored
    addresses.record(3, "2001:db8::1")
    addresses.record(4, "192.0.2.4")  # a fourth pending pair: over max_pending, dropped
    assert addresses.dropped == 1
    for _ in range(200):
        if await pool.fetchval("SELECT count(*) FROM signin_addresses") == 3:
            break
        await asyncio.sleep(0.01)
    addresses.record(1, "192.0.2.1")  # written already: remembered, not pending again
    assert await addresses.flush() == 0
    await addresses.close()
    rows = await pool.fetch("SELECT user_id, host(address) AS address FROM signin_addresses ORDER BY 1, 2")
    assert [(row["user_id"], row["address"]) for row in rows] == [(1, "192.0.2.1"), (1, "::ffff:192.0.2.2"),
                                                                  (3, "2001:db8::1")]  # fmt: skip
