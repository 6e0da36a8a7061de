"""Each game's exact return moments agree with the default estimate, which plays the bet through the game's own
fair draws (deterministic: a fixed seed chain)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from server.games import registered_games
from server.games.crash import Crash
from server.rounds.handler import BetInfo, Moments, RoundHandler

ROUNDS = 40_000
CASES = [
    ("dice", {"target": 4950, "side": "under"}, 10, None),
    ("dice", {"target": 500, "side": "under"}, 7, None),  # 19.80x, rounded down on 7 chips
    ("dice", {"target": 9000, "side": "over"}, 100, None),
    ("roulette", {"type": "red"}, 10, None),
    ("roulette", {"type": "straight", "numbers": [17]}, 5, None),
    ("roulette", {"type": "corner", "numbers": [1, 2, 4, 5]}, 3, None),
    ("crash", {"auto_cashout": 200}, 10, None),
    ("crash", {"auto_cashout": 1000}, 3, None),
    ("crash", {}, 10, 150),  # cashed out by hand at 1.50x: the moments of a bet aimed there
    ("wheel", {"type": "spin"}, 7, None),
    ("wheel", {"type": "colour", "colour": "gold"}, 10, None),
    ("plinko", {"risk": "high"}, 3, None),
    ("plinko", {"risk": "low"}, 100, None),
]


def bet_of(handler: RoundHandler[Any, Any], params: dict[str, Any], amount: int, cashout: int | None) -> BetInfo[Any]:
    return BetInfo(0, 0, amount, handler.read_bet(params, amount), cashout)


@pytest.mark.parametrize(("game", "params", "amount", "cashout"), CASES)
def test_exact_moments_agree_with_the_games_own_draws(
    game: str, params: dict[str, Any], amount: int, cashout: int | None
) -> None:
    handler = registered_games()[game]()
    handler.moments_rounds = ROUNDS  # type: ignore[misc]
    bet = bet_of(handler, params, amount, cashout)
    exact = handler.return_moments(bet)
    simulated = RoundHandler.return_moments(handler, bet)  # the default: simulation
    assert type(handler).return_moments is not RoundHandler.return_moments  # the game has exact figures
    standard_error = math.sqrt(exact.variance / ROUNDS)
    assert abs(simulated.mean - exact.mean) <= 4 * standard_error, (exact, simulated)
    assert simulated.variance == pytest.approx(exact.variance, rel=0.1), (exact, simulated)
    assert RoundHandler.return_moments(handler, bet) == simulated  # deterministic, and cached


def test_the_means_are_the_declared_return_up_to_rounding_down() -> None:
    games = registered_games()
    for game, params, _, cashout in CASES:
        if cashout is not None:
            continue
        handler = games[game]()
        bet = bet_of(handler, params, 10**6, None)  # a stake where rounding down does not show
        assert handler.return_moments(bet).mean == pytest.approx(handler.declared_rtp(bet.params), abs=1e-6), game


def test_rounding_down_lowers_the_mean() -> None:
    dice = registered_games()["dice"]()
    big, small = (dice.return_moments(bet_of(dice, {"target": 5000, "side": "under"}, a, None)) for a in (10**6, 10))
    assert small.mean < big.mean  # 1.98x: 10 chips win 19
    assert (big.mean, small.mean) == (pytest.approx(0.5 * 1.98), pytest.approx(0.5 * 1.9))


def test_a_crash_bet_played_by_hand_returns_the_house_edge_whatever_the_plan() -> None:
    crash = Crash({"house_edge_bp": 200})
    auto = crash.return_moments(bet_of(crash, {"auto_cashout": 300}, 100, None))
    assert not auto.by_hand and auto.mean == pytest.approx(0.98) and auto.variance == pytest.approx(0.98 * 3 - 0.98**2)
    by_hand = crash.return_moments(bet_of(crash, {}, 100, 250))  # cashed out by hand at 2.50x
    assert by_hand.by_hand and by_hand.mean == pytest.approx(0.98)
    assert by_hand.variance == pytest.approx(0.98 * 2.5 - 0.98**2)
    lost = crash.return_moments(bet_of(crash, {}, 100, None))  # left to crash: its plan is unknown
    assert lost.by_hand and lost.mean == pytest.approx(0.98) and math.isnan(lost.variance)
    early = crash.return_moments(bet_of(crash, {"auto_cashout": 500}, 100, 150))  # out by hand before its auto
    assert early.by_hand and early.mean == pytest.approx(0.98)
    assert crash.reach_chance(100_000_000) == 0.0 and Crash({"house_edge_bp": -10_000}).reach_chance(150) == 1.0


def test_moments_of_a_distribution() -> None:
    assert Moments.of([(0.5, 2.0)]) == Moments(1.0, 1.0)
    assert Moments.of([(0.25, 1.0), (0.75, 1.0)]) == Moments(1.0, 0.0)
    mean, variance, by_hand = Moments.of([])
    assert (mean, variance, by_hand) == (0.0, 0.0, False)
