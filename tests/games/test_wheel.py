"""The wheel of fortune: bets and params name what is wrong, payouts follow the table, the RTP is exact."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from server.games.testing import TEST_SALT, TEST_SEED, GameTable, Pushed
from server.games.wheel import Colour, Spin, Wheel
from server.rounds.fair import FairRng
from server.rounds.handler import InvalidBet
from server.rounds.simulator import simulate

SPIN = {"type": "spin"}
RED, BLACK, GOLD = ({"type": "colour", "colour": colour} for colour in ("red", "black", "gold"))
TWO_COLOURS = {"colour_pays": {"red": 196, "black": 196}}


def segments(*pairs: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"multiplier": multiplier, "colour": colour} for multiplier, colour in pairs]


@pytest.mark.parametrize(
    ("params", "game", "field"),
    [
        ({"type": "jackpot"}, {}, "params.type"),
        ({}, {}, "params.type"),
        ({"colour": "red"}, {}, "params.type"),
        ({"type": "colour"}, {}, "params.colour"),
        ({"type": "colour", "colour": "pink"}, {}, "params.colour"),
        ({"type": "colour", "colour": 1}, {}, "params.colour"),
        ({"type": "spin", "colour": "red"}, {}, "params.colour"),
        (GOLD, TWO_COLOURS, "params.colour"),  # a colour this wheel pays nothing on
    ],
)
def test_a_bad_bet_is_refused_naming_its_field(params: dict[str, Any], game: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidBet) as info:
        GameTable(Wheel(game)).bet(100, params)
    assert info.value.field == field and str(info.value)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"segments": segments((200, "red"))}, "params.segments"),
        ({"segments": segments(*[(100, "red")] * 65)}, "params.segments"),
        ({"segments": segments((200, "red"), (-1, "black"))}, "params.segments[1].multiplier"),
        ({"segments": segments((200, "red"), (0, "pink"))}, "params.segments[1].colour"),
        ({"segments": segments((200, "red"), (0, "black"))}, "params.colour_pays"),  # pays gold: none on the wheel
        ({"colour_pays": {"red": 100}}, "params.colour_pays"),  # must pay more than the stake
        ({"colour_pays": {"pink": 300}}, "colour_pays"),
        ({"running_ms": -1}, "params.running_ms"),
        ({"max_exposure": 0}, "params.max_exposure"),
        ({"segment": []}, "params.segment"),
    ],
)
def test_bad_params_are_refused_at_construction_naming_the_field(params: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=r"^wheel: ") as info:
        Wheel(params)
    assert named in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("segment", "spin", "red", "black", "gold"),
    [
        (0, 300, 0, 0, 980),  # gold 3.00x
        (2, 0, 0, 218, 0),  # black, nothing for a spin
        (5, 200, 218, 0, 0),  # red 2.00x
        (10, 300, 0, 0, 980),  # gold 3.00x
        (11, 120, 0, 218, 0),  # black 1.20x
        (12, 0, 218, 0, 0),  # red, nothing for a spin
    ],
)
def test_payouts_for_a_forced_segment_and_the_running_event_names_it(
    segment: int, spin: int, red: int, black: int, gold: int
) -> None:
    table = GameTable(Wheel(), outcome={"segment": segment})
    bets = [table.bet(100, params, user=user) for user, params in enumerate((SPIN, RED, BLACK, GOLD), 1)]
    assert table.start() == {"segment": segment}
    assert table.events[0] == Pushed("running", 0, {"segment": segment})
    table.run()
    assert table.now == 5000 and len(table.events) == 1  # spins for running_ms, pushing no ticks
    assert table.settle() == {bet.bet_id: paid for bet, paid in zip(bets, (spin, red, black, gold), strict=True)}
    assert all(table.result(bet) is None for bet in bets)  # one outcome for everyone: no per-bet draw
    assert table.public_outcome() == {"segment": segment}


def test_payouts_round_down_and_scale_with_the_amount() -> None:
    table = GameTable(Wheel(), outcome={"segment": 1})  # red 1.20x
    spin, red = table.bet(7, SPIN), table.bet(1_000, RED)
    assert table.settle() == {spin.bet_id: 8, red.bet_id: 2_180}  # 7 * 1.20 = 8.4


def test_the_segment_is_the_fair_rngs_draw_below_the_wheels_size() -> None:
    assert GameTable(Wheel()).outcome == {"segment": FairRng(TEST_SEED, TEST_SALT, "wheel").below(20)}
    small = Wheel({"segments": segments((150, "red"), (0, "black"), (500, "gold")), "colour_pays": {"gold": 290}})
    for salt in ("a", "b", "c", "d"):
        drawn = FairRng(TEST_SEED, salt, "wheel").below(3)
        assert small.outcome(FairRng(TEST_SEED, salt, "wheel")) == {"segment": drawn}
    seen = {small.outcome(FairRng(TEST_SEED, str(salt), "wheel"))["segment"] for salt in range(50)}
    assert seen == {0, 1, 2}


def test_declared_rtp_max_multiplier_and_exposure_come_from_the_table() -> None:
    wheel = Wheel()
    assert len(wheel.params.segments) == 20
    assert wheel.declared_rtp(Spin()) == 1960 / 2000 == 0.98
    assert wheel.declared_rtp(Colour(colour="red")) == wheel.declared_rtp(Colour(colour="black")) == 9 * 218 / 2000
    assert wheel.declared_rtp(Colour(colour="gold")) == 2 * 980 / 2000
    for bet in (Spin(), Colour(colour="red"), Colour(colour="black"), Colour(colour="gold")):
        assert 0.95 <= wheel.declared_rtp(bet) <= 0.99
    highest = [wheel.max_multiplier(bet) for bet in (Spin(), Colour(colour="red"), Colour(colour="gold"))]
    assert highest == [300, 218, 980]
    assert wheel.exposure_cap() == 100_000_000 and Wheel({"max_exposure": 5_000}).exposure_cap() == 5_000
    custom = Wheel({"segments": segments((150, "red"), (0, "black"), (500, "gold"), (0, "red")), **TWO_COLOURS})
    assert custom.declared_rtp(Spin()) == 650 / 400 and custom.declared_rtp(Colour(colour="red")) == 2 * 196 / 400


def test_a_bet_that_could_pay_more_than_max_payout_is_refused() -> None:
    table = GameTable(Wheel(), max_payout=1_000)
    table.bet(300, SPIN)  # at most 900
    with pytest.raises(InvalidBet) as info:
        table.bet(200, GOLD)  # 200 * 9.80 = 1,960
    assert info.value.field == "amount"


@pytest.mark.parametrize("strategy", sorted(Wheel.strategies))
def test_simulated_rtp_is_within_the_interval_of_the_declared_one(strategy: str) -> None:
    report = simulate(Wheel(), 20_000, Wheel.strategies[strategy])
    assert report.within_interval, report.summary()


def test_strategies_name_a_spin_and_every_colour_that_pays() -> None:
    assert dict(Wheel.strategies) == {"spin": SPIN, "red": RED, "black": BLACK, "gold": GOLD}


def test_the_bet_schema_is_a_union_tagged_by_type() -> None:
    schema = msgspec.json.schema(Wheel.bet_type)
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == {"spin", "colour"}
    assert len(schema["anyOf"]) == 2
    colour = schema["$defs"]["Colour"]["properties"]
    assert colour["type"] == {"enum": ["colour"]} and sorted(colour["colour"]["enum"]) == ["black", "gold", "red"]
    assert Wheel().bet_wire(Colour(colour="gold")) == GOLD and Wheel().bet_wire(Spin()) == SPIN
