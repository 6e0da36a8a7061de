"""The v1 games: bet validation names the bad param, payouts follow the contract, RTP is proven."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server.games import configure_games, registered_games
from server.games.crash import Crash
from server.games.dice import Dice
from server.games.roulette import Roulette
from server.rounds.fair import FairRng
from server.rounds.handler import ActionRefused, BetInfo, InvalidBet, RoundContext, RunState
from server.rounds.simulator import simulate

LOG = logging.getLogger("test")


def bet(params: dict[str, Any], amount: int = 100, cashout: int | None = None) -> BetInfo:
    return BetInfo(bet_id=1, user_id=1, amount=amount, params=params, cashout=cashout)


@pytest.mark.parametrize(
    ("handler", "params", "field"),
    [
        (Crash(), {"auto_cashout": 100}, "params.auto_cashout"),
        (Crash(), {"auto_cashout": 1.5}, "params.auto_cashout"),
        (Crash(), {"auto_cashout": True}, "params.auto_cashout"),
        (Crash(), {"autocashout": 200}, "params"),
        (Dice(), {"target": 0, "side": "under"}, "params.target"),
        (Dice(), {"target": 9999, "side": "over"}, "params.target"),
        (Dice(), {"target": "50", "side": "over"}, "params.target"),
        (Dice(), {"target": 5000, "side": "sideways"}, "params.side"),
        (Dice(), {"target": 9998, "side": "under"}, "params.target"),  # 99.98%: cannot pay above the stake
        (Dice(), {"side": "under"}, "params.target"),
        (Roulette(), {"type": "snake", "numbers": []}, "params.type"),
        (Roulette(), {"type": "straight", "numbers": [37]}, "params.numbers"),
        (Roulette(), {"type": "split", "numbers": [1, 5]}, "params.numbers"),
        (Roulette(), {"type": "split", "numbers": [3, 4]}, "params.numbers"),
        (Roulette(), {"type": "street", "numbers": [2, 3, 4]}, "params.numbers"),
        (Roulette(), {"type": "corner", "numbers": [3, 4, 6, 7]}, "params.numbers"),
        (Roulette(), {"type": "line", "numbers": [1, 2, 3, 4, 5, 7]}, "params.numbers"),
        (Roulette(), {"type": "dozen", "numbers": [4]}, "params.numbers"),
        (Roulette(), {"type": "red", "numbers": [1]}, "params.numbers"),
        (Roulette(), {"type": "red", "numbers": "all"}, "params.numbers"),
        (Roulette(), {"type": "red", "colour": "red"}, "params"),
    ],
)
def test_invalid_params_name_the_field(handler: Any, params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidBet) as info:
        handler.validate_bet(params)
    assert info.value.field == field and str(info.value)


def test_valid_params_are_normalised() -> None:
    assert Crash().validate_bet({}) == {}
    assert Crash().validate_bet({"auto_cashout": 250}) == {"auto_cashout": 250}
    assert Dice().validate_bet({"target": 5000, "side": "over"}) == {"target": 5000, "side": "over"}
    assert Roulette().validate_bet({"type": "split", "numbers": [5, 2]}) == {"type": "split", "numbers": [2, 5]}
    for kind, numbers in [("split", [0, 1]), ("street", [0, 2, 3]), ("corner", [0, 1, 2, 3]),
                          ("corner", [5, 6, 8, 9]), ("line", [31, 32, 33, 34, 35, 36]), ("column", [3])]:  # fmt: skip
        Roulette().validate_bet({"type": kind, "numbers": numbers})


def test_dice_payout_multiplier_and_results() -> None:
    dice = Dice()
    assert dice.multiplier(5000, "under") == 198  # floor(100 * 0.99 / 0.5)
    assert dice.multiplier(100, "under") == 9900
    assert dice.payout(bet({"target": 5000, "side": "under"}), {"roll": 4999}) == 198
    assert dice.payout(bet({"target": 5000, "side": "under"}), {"roll": 5000}) == 0
    assert dice.payout(bet({"target": 5000, "side": "over"}), {"roll": 5001}) == dice.multiplier(5000, "over")
    assert dice.payout(bet({"target": 5000, "side": "over"}), {"roll": 5000}) == 0


@pytest.mark.parametrize(
    ("kind", "numbers", "winning", "losing", "odds"),
    [
        ("straight", [17], 17, 18, 35),
        ("split", [17, 20], 20, 18, 17),
        ("street", [16, 17, 18], 16, 19, 11),
        ("corner", [17, 18, 20, 21], 21, 19, 8),
        ("line", [16, 17, 18, 19, 20, 21], 19, 22, 5),
        ("dozen", [2], 24, 25, 2),
        ("column", [1], 34, 35, 2),
        ("red", [], 1, 2, 1),
        ("black", [], 2, 1, 1),
        ("odd", [], 35, 0, 1),
        ("even", [], 36, 0, 1),
        ("low", [], 18, 19, 1),
        ("high", [], 19, 18, 1),
    ],
)
def test_roulette_standard_payouts(kind: str, numbers: list[int], winning: int, losing: int, odds: int) -> None:
    roulette = Roulette()
    placed = bet(roulette.validate_bet({"type": kind, "numbers": numbers}))
    assert roulette.payout(placed, {"number": winning}) == 100 * (odds + 1)
    assert roulette.payout(placed, {"number": losing}) == 0
    assert roulette.declared_rtp(placed.params) == pytest.approx(36 / 37)


def test_crash_payouts_cashouts_and_force_point() -> None:
    crash = Crash()
    assert crash.payout(bet({}, cashout=150), {"crash_point": 200}) == 150
    assert crash.payout(bet({"auto_cashout": 150}), {"crash_point": 200}) == 150
    assert crash.payout(bet({"auto_cashout": 200}), {"crash_point": 200}) == 0  # must be below the crash point
    assert crash.payout(bet({"auto_cashout": 300}, cashout=120), {"crash_point": 500}) == 120
    assert crash.payout(bet({}), {"crash_point": 500}) == 0  # never cashed out
    assert crash.payout(bet({}), {"crash_point": 500, "force_point": 250}) == 250
    assert crash.payout(bet({"auto_cashout": 300}), {"crash_point": 500, "force_point": 250}) == 250


def test_crash_cashout_is_judged_against_server_time() -> None:
    crash = Crash({"growth_per_ms": 0.001})
    clock = {"now": 1_000}
    ctx = RoundContext(1, lambda: clock["now"], FairRng("00" * 32, "s", "crash"), crash.params, LOG)
    state = RunState(started_ms=1_000, outcome={"crash_point": 300}, bets=[bet({})])
    assert crash.start(ctx, state) == {}
    clock["now"] = 1_000 + crash.elapsed_for(200)
    result = crash.action(ctx, state, state.bets[0], "cashout", {})
    assert result.cashout == crash.multiplier(crash.elapsed_for(200)) and result.result["payout"] >= 200
    with pytest.raises(ActionRefused, match="already cashed out"):
        crash.action(ctx, state, bet({}, cashout=200), "cashout", {})
    with pytest.raises(ActionRefused, match="automatically"):
        crash.action(ctx, state, bet({"auto_cashout": 150}), "cashout", {})
    with pytest.raises(ActionRefused, match="no action"):
        crash.action(ctx, state, bet({}), "jump", {})
    clock["now"] = 1_000 + crash.elapsed_for(300)
    with pytest.raises(ActionRefused, match=r"crashed at 3\.00x"):
        crash.action(ctx, state, bet({}), "cashout", {})
    assert crash.tick(ctx, state).done


def test_crash_exposure_cap_forces_everyone_out() -> None:
    crash = Crash({"max_exposure": 10_000})
    ctx = RoundContext(1, lambda: 0, FairRng("00" * 32, "s", "crash"), crash.params, LOG)
    state = RunState(0, {"crash_point": 1000}, [bet({}, amount=2_000), bet({}, amount=3_000)])
    assert crash.start(ctx, state) == {"force_point": 200}  # 5,000 staked * 2.00x reaches the 10,000 cap
    small = RunState(0, {"crash_point": 150}, [bet({}, amount=100)])
    assert crash.start(ctx, small) == {}


@pytest.mark.parametrize(
    ("game", "params"),
    [
        ("crash", {"auto_cashout": 200}),
        ("crash", {"auto_cashout": 110}),
        ("crash", {"auto_cashout": 1000}),
        ("dice", {"target": 4950, "side": "under"}),
        ("dice", {"target": 9000, "side": "over"}),
        ("dice", {"target": 500, "side": "under"}),
        ("roulette", {"type": "red", "numbers": []}),
        ("roulette", {"type": "straight", "numbers": [17]}),
        ("roulette", {"type": "dozen", "numbers": [3]}),
        ("roulette", {"type": "corner", "numbers": [1, 2, 4, 5]}),
    ],
)
def test_simulated_rtp_is_within_its_interval_of_the_declared_rtp(game: str, params: dict[str, Any]) -> None:
    handler = registered_games()[game]()
    report = simulate(handler, 200_000, params, start_seed="5" * 64)
    assert report.within_interval, report.summary()
    assert 0 < report.hit_rate < 1 and report.ci95 < 0.06


def test_simulation_is_deterministic_and_catches_a_wrong_declaration() -> None:
    first = simulate(Dice(), 20_000, {"target": 5000, "side": "under"})
    again = simulate(Dice(), 20_000, {"target": 5000, "side": "under"})
    assert (first.rtp, first.hit_rate, first.max_exposure) == (again.rtp, again.hit_rate, again.max_exposure)

    class Generous(Dice):
        def declared_rtp(self, params: Any) -> float:
            return 1.05  # promises more than it pays

    assert not simulate(Generous(), 200_000, {"target": 5000, "side": "under"}).within_interval


def test_configure_games_checks_names_params_and_limits() -> None:
    handlers, rules = configure_games(("dice",), {"dice": {"house_edge_bp": 200, "max_bet": 50}},
                                      min_bet=1, max_bet=1000, max_payout=10_000)  # fmt: skip
    assert handlers["dice"].params["house_edge_bp"] == 200 and rules["dice"].max_bet == 50
    with pytest.raises(ValueError, match="unknown game"):
        configure_games(("poker",), {}, min_bet=1, max_bet=10, max_payout=10)
    with pytest.raises(ValueError, match="unknown params"):
        configure_games(("dice",), {"dice": {"edge": 1}}, min_bet=1, max_bet=10, max_payout=10)
    with pytest.raises(ValueError, match="min_bet"):
        configure_games(("dice",), {"dice": {"min_bet": 20}}, min_bet=1, max_bet=10, max_payout=10)
