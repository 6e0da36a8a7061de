"""The v1 games: bet validation names the bad param, payouts follow the contract, RTP is proven.

Rounds are played with the game designer's harness (:class:`server.games.testing.GameTable`)."""

from __future__ import annotations

from typing import Any

import pytest

from server.games import configure_games, registered_games
from server.games.crash import Crash
from server.games.dice import Dice
from server.games.roulette import Roulette
from server.games.testing import GameTable
from server.rounds.handler import ActionRefused, InvalidBet
from server.rounds.simulator import simulate


@pytest.mark.parametrize(
    ("handler", "params", "field"),
    [
        (Crash(), {"auto_cashout": 100}, "params.auto_cashout"),
        (Crash(), {"auto_cashout": 1.5}, "params.auto_cashout"),
        (Crash(), {"auto_cashout": True}, "params.auto_cashout"),
        (Crash(), {"autocashout": 200}, "params.autocashout"),
        (Dice(), {"target": 0, "side": "under"}, "params.target"),
        (Dice(), {"target": 9999, "side": "over"}, "params.target"),
        (Dice(), {"target": "50", "side": "over"}, "params.target"),
        (Dice(), {"target": 5000, "side": "sideways"}, "params.side"),
        (Dice(), {"target": 5000}, "params.side"),
        (Dice(), {"target": 9998, "side": "under"}, "params.target"),  # 99.98%: cannot pay above the stake
        (Dice(), {"side": "under"}, "params.target"),
        (Roulette(), {"type": "snake", "numbers": []}, "params.type"),
        (Roulette(), {"type": "straight", "numbers": [37]}, "params.numbers[0]"),
        (Roulette(), {"type": "split", "numbers": [1, 5]}, "params.numbers"),
        (Roulette(), {"type": "split", "numbers": [3, 4]}, "params.numbers"),
        (Roulette(), {"type": "street", "numbers": [2, 3, 4]}, "params.numbers"),
        (Roulette(), {"type": "corner", "numbers": [3, 4, 6, 7]}, "params.numbers"),
        (Roulette(), {"type": "line", "numbers": [1, 2, 3, 4, 5, 7]}, "params.numbers"),
        (Roulette(), {"type": "dozen", "numbers": [4]}, "params.numbers"),
        (Roulette(), {"type": "red", "numbers": [1]}, "params.numbers"),
        (Roulette(), {"type": "red", "numbers": "all"}, "params.numbers"),
        (Roulette(), {"type": "red", "colour": "red"}, "params.colour"),
    ],
)
def test_invalid_params_name_the_field(handler: Any, params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidBet) as info:
        GameTable(handler).bet(100, params)
    assert info.value.field == field and str(info.value)


def test_valid_params_are_normalised() -> None:
    def accepted(handler: Any, params: dict[str, Any]) -> dict[str, Any]:
        wire: dict[str, Any] = handler.bet_wire(handler.read_bet(params, 100))
        return wire

    assert accepted(Crash(), {}) == {}
    assert accepted(Crash(), {"auto_cashout": 250}) == {"auto_cashout": 250}
    assert accepted(Dice(), {"target": 5000, "side": "over"}) == {"target": 5000, "side": "over"}
    assert accepted(Roulette(), {"type": "split", "numbers": [5, 2]}) == {"type": "split", "numbers": [2, 5]}
    assert accepted(Roulette(), {"type": "red"}) == {"type": "red"}
    for kind, numbers in [("split", [0, 1]), ("street", [0, 2, 3]), ("corner", [0, 1, 2, 3]),
                          ("corner", [5, 6, 8, 9]), ("line", [31, 32, 33, 34, 35, 36]), ("column", [3])]:  # fmt: skip
        accepted(Roulette(), {"type": kind, "numbers": numbers})


def test_a_bet_that_could_pay_over_the_cap_is_refused_naming_the_amount() -> None:
    table = GameTable(Dice(), max_payout=1_000)
    table.bet(10, {"target": 100, "side": "under"})  # 99.00x: 990
    with pytest.raises(InvalidBet) as info:
        table.bet(11, {"target": 100, "side": "under"})  # 1,089
    assert info.value.field == "amount" and "1089" in str(info.value)


def test_dice_payout_multiplier_and_results() -> None:
    dice = Dice()
    assert dice.multiplier(5000, "under") == 198  # floor(100 * 0.99 / 0.5)
    assert dice.multiplier(100, "under") == 9900
    for roll, side, paid in [(4999, "under", 198), (5000, "under", 0), (5001, "over", dice.multiplier(5000, "over")),
                             (5000, "over", 0)]:  # fmt: skip
        table = GameTable(dice, outcome={"roll": roll})
        placed = table.bet(100, {"target": 5000, "side": side})
        assert table.settle() == {placed.bet_id: paid}
        assert table.public_outcome() == {"roll": roll}


def test_games_of_one_outcome_draw_it_from_the_seed() -> None:
    a, b = GameTable(Dice(), seed="1" * 64), GameTable(Dice(), seed="2" * 64)
    assert GameTable(Dice(), seed="1" * 64).outcome == a.outcome != b.outcome
    assert a.start() == {} and a.events[0].kind == "running"
    assert a.run() == [] and a.now == Dice().params.running_ms  # no ticks pushed, done after running_ms


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
    for number, paid in [(winning, 100 * (odds + 1)), (losing, 0)]:
        table = GameTable(Roulette(), outcome={"number": number})
        placed = table.bet(100, {"type": kind, "numbers": numbers})
        assert table.settle() == {placed.bet_id: paid}
        assert Roulette().declared_rtp(placed.params) == pytest.approx(36 / 37)


def test_crash_payouts_cashouts_and_force_point() -> None:
    table = GameTable(Crash(), outcome={"crash_point": 200})
    auto_150, auto_200, never = (
        table.bet(100, {"auto_cashout": 150}),
        table.bet(100, {"auto_cashout": 200}),
        table.bet(100),
    )
    assert table.settle() == {auto_150.bet_id: 150, auto_200.bet_id: 0, never.bet_id: 0}  # below the point only
    table = GameTable(Crash(), outcome={"crash_point": 500, "force_point": 250})
    plain, auto_300 = table.bet(100), table.bet(100, {"auto_cashout": 300})
    assert table.settle() == {plain.bet_id: 250, auto_300.bet_id: 250}


def test_crash_cashout_is_judged_against_server_time() -> None:
    crash = Crash({"growth_per_ms": 0.001})
    table = GameTable(crash, outcome={"crash_point": 300})
    manual, auto, other = table.bet(100), table.bet(100, {"auto_cashout": 150}), table.bet(100)
    assert table.start() == {}  # the running event tells nothing of the crash point
    table.advance(crash.elapsed_for(200))
    result = table.act(manual, "cashout")
    assert result["multiplier"] == crash.multiplier(crash.elapsed_for(200)) and result["payout"] >= 200
    with pytest.raises(ActionRefused, match="already cashed out"):
        table.act(manual, "cashout")
    with pytest.raises(ActionRefused, match="automatically"):
        table.act(auto, "cashout")
    with pytest.raises(ActionRefused, match="no action"):
        table.act(other, "jump")
    ticks = table.advance(crash.elapsed_for(300))
    assert ticks[-1] == {"multiplier": 300, "crashed": True} and table.phase == "done"
    assert all(tick["multiplier"] < 300 for tick in ticks[:-1])
    assert table.settle() == {manual.bet_id: result["payout"], auto.bet_id: 150, other.bet_id: 0}


def test_crash_exposure_cap_forces_everyone_out() -> None:
    table = GameTable(Crash({"max_exposure": 10_000}), outcome={"crash_point": 1000})
    small, large = table.bet(2_000), table.bet(3_000)
    table.start()
    assert table.outcome["force_point"] == 200  # 5,000 staked * 2.00x reaches the 10,000 cap
    assert table.public_outcome() == {"crash_point": 1000, "force_point": 200}
    assert table.settle() == {small.bet_id: 4_000, large.bet_id: 6_000}
    calm = GameTable(Crash({"max_exposure": 10_000}), outcome={"crash_point": 150})
    calm.bet(100)
    calm.start()
    assert "force_point" not in calm.outcome


@pytest.mark.parametrize(
    ("game", "params"),
    [
        ("crash", {"auto_cashout": 200}),
        ("crash", {"auto_cashout": 110}),
        ("crash", {"auto_cashout": 1000}),
        ("dice", {"target": 4950, "side": "under"}),
        ("dice", {"target": 9000, "side": "over"}),
        ("dice", {"target": 500, "side": "under"}),
        ("roulette", {"type": "red"}),
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
        def declared_rtp(self, bet: Any) -> float:
            return 1.05  # promises more than it pays

    assert not simulate(Generous(), 200_000, {"target": 5000, "side": "under"}).within_interval


def test_configure_games_checks_names_params_and_limits() -> None:
    handlers, rules = configure_games(("dice",), {"dice": {"house_edge_bp": 200, "max_bet": 50}},
                                      min_bet=1, max_bet=1000, max_payout=10_000)  # fmt: skip
    assert handlers["dice"].params.house_edge_bp == 200 and rules["dice"].max_bet == 50
    with pytest.raises(ValueError, match="unknown game"):
        configure_games(("poker",), {}, min_bet=1, max_bet=10, max_payout=10)
    with pytest.raises(ValueError, match=r"dice: params\.edge: Object contains unknown field `edge`"):
        configure_games(("dice",), {"dice": {"edge": 1}}, min_bet=1, max_bet=10, max_payout=10)
    with pytest.raises(ValueError, match=r"dice: params.house_edge_bp: Expected `int` >= 0"):
        configure_games(("dice",), {"dice": {"house_edge_bp": -5}}, min_bet=1, max_bet=10, max_payout=10)
    with pytest.raises(ValueError, match="min_bet"):
        configure_games(("dice",), {"dice": {"min_bet": 20}}, min_bet=1, max_bet=10, max_payout=10)
