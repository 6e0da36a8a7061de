"""Plinko: each bet's ball is drawn from its own fair stream, reproducibly; slots are binomial; the RTP is exact."""

from __future__ import annotations

import hashlib
import hmac
from itertools import product
from typing import Any

import msgspec
import pytest

from server.games.plinko import RISKS, Plinko, PlinkoBet
from server.games.testing import TEST_SALT, TEST_SEED, GameTable
from server.rounds.fair import FairRng
from server.rounds.handler import BetInfo, InvalidBet
from server.rounds.simulator import simulate

STAKE_8 = {
    "low": [560, 210, 110, 100, 50, 100, 110, 210, 560],
    "medium": [1300, 300, 130, 70, 40, 70, 130, 300, 1300],
    "high": [2900, 400, 150, 30, 20, 30, 150, 400, 2900],
}
STAKE_12 = {
    "rows": 12,
    "low": [1000, 300, 160, 140, 110, 100, 50, 100, 110, 140, 160, 300, 1000],
    "medium": [3300, 1100, 400, 200, 110, 60, 30, 60, 110, 200, 400, 1100, 3300],
    "high": [17000, 2400, 810, 200, 70, 20, 20, 20, 70, 200, 810, 2400, 17000],
}


def path_by_hand(seed: str, salt: str, bet_id: int, rows: int = 8) -> list[int]:
    """The ball's path as a player re-derives it: one ``below(2)`` per row on the bet's own stream."""
    rng = FairRng(seed, salt, "plinko").for_bet(bet_id)
    return [rng.below(2) for _ in range(rows)]


def path_from_hmac(seed: str, salt: str, bet_id: int, rows: int = 8) -> list[int]:
    """The same, from the HMAC stream alone, as the module docstring tells a player to compute it."""
    blocks = (hmac.new(seed.encode(), f"plinko:{salt}:bet:{bet_id}:{c}".encode(), hashlib.sha256) for c in range(2))
    stream = "".join(block.hexdigest() for block in blocks)
    return [int(stream[5 * i : 5 * i + 5], 16) % 2 for i in range(rows)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"risk": "extreme"}, "params.risk"),
        ({}, "params.risk"),
        ({"risk": 1}, "params.risk"),
        ({"risk": "LOW"}, "params.risk"),
        ({"risk": "low", "rows": 12}, "params.rows"),  # rows are the game's, not the bet's
    ],
)
def test_a_bad_bet_is_refused_naming_its_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidBet) as info:
        GameTable(Plinko()).bet(100, params)
    assert info.value.field == field and str(info.value)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"rows": 12}, "params.low"),  # 12 rows need tables of 13
        ({"rows": 7}, "params.rows"),
        ({"rows": 17}, "params.rows"),
        ({**STAKE_12, "medium": STAKE_8["medium"]}, "params.medium"),
        ({"high": [2900, 400, 150, 30, 20, 30, 150, 400, 2800]}, "params.high"),  # not symmetric
        ({"low": [-1, 0, 0, 0, 0, 0, 0, 0, -1]}, "params.low[0]"),
        ({"low": "flat"}, "params.low"),
        ({"max_exposure": 0}, "params.max_exposure"),
        ({"risk": "low"}, "params.risk"),
    ],
)
def test_bad_params_are_refused_at_construction_naming_the_field(params: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=r"^plinko: ") as info:
        Plinko(params)
    assert named in str(info.value) and "\n" not in str(info.value)


def test_each_bet_drops_its_own_ball_reproducibly_from_seed_salt_and_bet_id() -> None:
    table = GameTable(Plinko())
    bets = [table.bet(amount, {"risk": risk}) for amount in (100, 250) for risk in ("low", "medium", "high")]
    assert table.outcome == {} and table.start() == {}  # nothing shared, nothing to show while running
    payouts = table.settle()
    results = [table.result(bet) for bet in bets]
    for bet, result in zip(bets, results, strict=True):
        assert result is not None
        assert result["path"] == path_by_hand(TEST_SEED, TEST_SALT, bet.bet_id)
        assert result["path"] == path_from_hmac(TEST_SEED, TEST_SALT, bet.bet_id)
        assert result["slot"] == sum(result["path"]) and set(result["path"]) <= {0, 1}
        assert payouts[bet.bet_id] == bet.amount * STAKE_8[bet.params.risk][result["slot"]] // 100
    assert len({tuple(result["path"]) for result in results if result}) == len(bets)  # six bets, six balls
    assert table.public_outcome() == {}

    again = GameTable(Plinko())
    for bet in bets:
        again.bet(bet.amount, {"risk": bet.params.risk})
    assert again.settle() == payouts and [again.result(bet) for bet in bets] == results
    other_salt = GameTable(Plinko(), salt="another salt")
    other_salt.bet(100, {"risk": "low"})
    other_salt.settle()
    assert other_salt.result(bets[0]) != results[0]


def test_more_rows_draw_a_longer_path_across_hash_blocks() -> None:
    table = GameTable(Plinko({**STAKE_12, "rows": 12}))
    bet = table.bet(100, {"risk": "high"})
    table.settle()
    result = table.result(bet)
    assert result is not None and len(result["path"]) == 12
    assert result["path"] == path_by_hand(TEST_SEED, TEST_SALT, bet.bet_id, 12)
    # 16 rows read 80 digits: past the first 64-digit block into the second
    assert path_by_hand(TEST_SEED, TEST_SALT, 5, 16) == path_from_hmac(TEST_SEED, TEST_SALT, 5, 16)


def test_the_slot_distribution_is_binomial() -> None:
    plinko, rng = Plinko(), FairRng(TEST_SEED, TEST_SALT, "plinko")
    balls = 10_000
    counts = [0] * 9
    for bet_id in range(balls):
        ball = BetInfo(bet_id, 1, 100, PlinkoBet(risk="low"))
        result = plinko.bet_result(rng.for_bet(bet_id), ball, {})
        counts[result["slot"]] += 1
    expected = [balls * (1, 8, 28, 56, 70, 56, 28, 8, 1)[slot] / 256 for slot in range(9)]
    chi_square = sum((seen - wanted) ** 2 / wanted for seen, wanted in zip(counts, expected, strict=True))
    assert chi_square < 26.12, (counts, chi_square)  # 8 degrees of freedom, p = 0.001


def test_declared_rtp_is_exact_and_matches_every_path_counted() -> None:
    plinko = Plinko()
    exact = {"low": 25340 / 25600, "medium": 25320 / 25600, "high": 25360 / 25600}
    for risk in RISKS:
        table = STAKE_8[risk]
        every_path = sum(table[sum(path)] for path in product((0, 1), repeat=8)) / (256 * 100)
        declared = plinko.declared_rtp(PlinkoBet(risk=risk))
        assert declared == every_path == exact[risk]
        assert 0.95 <= declared <= 0.991  # Stake's high table returns 0.990625
        assert plinko.max_multiplier(PlinkoBet(risk=risk)) == max(table)
    twelve = Plinko(STAKE_12)
    assert twelve.declared_rtp(PlinkoBet(risk="low")) == pytest.approx(4054.2 / 4096)
    assert Plinko().exposure_cap() == 100_000_000 and Plinko({"max_exposure": 7}).exposure_cap() == 7


def test_a_ball_that_could_pay_more_than_max_payout_is_refused() -> None:
    table = GameTable(Plinko(), max_payout=10_000)
    table.bet(1_000, {"risk": "low"})  # at most 5,600
    with pytest.raises(InvalidBet) as info:
        table.bet(400, {"risk": "high"})  # 400 * 29.00 = 11,600
    assert info.value.field == "amount"


@pytest.mark.parametrize("strategy", sorted(Plinko.strategies))
def test_simulated_rtp_is_within_the_interval_of_the_declared_one(strategy: str) -> None:
    report = simulate(Plinko(), 10_000, Plinko.strategies[strategy])
    assert report.within_interval, report.summary()


def test_the_bet_schema_enumerates_the_risks() -> None:
    schema = msgspec.json.schema(Plinko.bet_type)
    risk = schema["$defs"]["PlinkoBet"]["properties"]["risk"]
    assert sorted(risk["enum"]) == ["high", "low", "medium"]
    assert schema["$defs"]["PlinkoBet"]["required"] == ["risk"]
    assert dict(Plinko.strategies) == {risk: {"risk": risk} for risk in ("low", "medium", "high")}
