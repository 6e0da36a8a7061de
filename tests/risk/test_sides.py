"""Both sides of a round: which bets hedge each other, pairs counted round by round (no database)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from server.games import registered_games
from server.risk.flags import FlagKind
from server.risk.sides import PairTally, RoundBet, SidesRule, hedge, hedging_pairs, sides_flags
from server.rounds.handler import RoundHandler

HANDLERS: dict[str, RoundHandler[Any, Any]] = {name: game() for name, game in registered_games().items()}


def under(target: int) -> dict[str, Any]:
    return {"target": target, "side": "under"}


def over(target: int) -> dict[str, Any]:
    return {"target": target, "side": "over"}


@pytest.mark.parametrize(
    ("game", "a", "b", "hedged"),
    [
        ("dice", under(5000), over(4999), True),  # every roll pays exactly one
        ("dice", under(5000), over(5000), True),  # roll 5000 pays neither: 9,999 of 10,000 covered
        ("dice", under(5000), over(4000), False),  # rolls 4001-4999 pay both
        ("dice", under(3000), over(7000), False),  # covers 5,999 rolls only
        ("dice", under(5000), under(5000), False),
        ("dice", over(4999), under(5000), True),  # either order
        ("roulette", {"type": "red"}, {"type": "black"}, True),
        ("roulette", {"type": "odd"}, {"type": "even"}, True),
        ("roulette", {"type": "low"}, {"type": "high"}, True),
        ("roulette", {"type": "red"}, {"type": "odd"}, False),  # overlap
        ("roulette", {"type": "dozen", "numbers": [1]}, {"type": "dozen", "numbers": [2]}, False),  # 24 of 37
        ("roulette", {"type": "red"}, {"type": "straight", "numbers": [2]}, False),
        ("wheel", {"type": "colour", "colour": "red"}, {"type": "colour", "colour": "black"}, True),  # 18 of 20
        ("wheel", {"type": "colour", "colour": "red"}, {"type": "colour", "colour": "gold"}, False),
        ("wheel", {"type": "spin"}, {"type": "colour", "colour": "black"}, False),
        ("crash", {"auto_cashout": 200}, {}, False),
        ("dice", {"target": "x"}, over(1), False),  # params of another shape
    ],
)
def test_which_bets_hedge(game: str, a: dict[str, Any], b: dict[str, Any], hedged: bool) -> None:
    assert hedge(game, a, b, HANDLERS) is hedged


def test_pairs_are_counted_once_per_round_across_games() -> None:
    bets = []
    for round_id in range(1, 31):
        bets += [RoundBet("dice", round_id, 1, 10, under(5000)), RoundBet("dice", round_id, 2, 10, over(4999)),
                 RoundBet("dice", round_id, 2, 15, over(4999)),  # a second bet of the pair: the round counts once
                 RoundBet("dice", round_id, 3, 10, under(5000)),  # a third player on 1's side hedges 2 as well
                 RoundBet("dice", round_id, 1, 10, over(4999))]  # fmt: skip  # 1 hedging themself: not a pair
    bets += [RoundBet("roulette", 100, 1, 10, {"type": "red"}), RoundBet("roulette", 100, 2, 50, {"type": "black"})]
    pairs = hedging_pairs(bets, HANDLERS)
    assert set(pairs) == {(1, 2), (2, 3), (1, 3)}
    one_two = pairs[(1, 2)]
    assert (one_two.rounds, one_two.matched, one_two.games) == (31, 30, {"dice": 30, "roulette": 1})
    assert one_two.examples == list(range(1, 11))


def test_the_pair_is_flagged_when_it_hedges_most_of_its_common_rounds() -> None:
    pairs = {(1, 2): PairTally(1, 2, rounds=30, matched=30, games={"dice": 30}, examples=[5]),
             (3, 4): PairTally(3, 4, rounds=30, matched=30, games={"roulette": 30}),  # of 100 common rounds
             (5, 6): PairTally(5, 6, rounds=6, matched=6, games={"dice": 6}),  # few, but on one address
             (7, 8): PairTally(7, 8, rounds=6, games={"dice": 6}),
             (9, 10): PairTally(9, 10, rounds=40, matched=20, games={"dice": 40})}  # fmt: skip  # stakes apart
    flags = sides_flags(pairs, {(1, 2): 32, (3, 4): 100, (5, 6): 6, (7, 8): 6, (9, 10): 40},
                        {(5, 6): ["203.0.113.7"]})  # fmt: skip
    assert sorted(flag.user_id for flag in flags) == [1, 2, 5, 6]
    one = next(flag for flag in flags if flag.user_id == 1)
    assert (one.kind, one.score) == (FlagKind.BOTH_SIDES, 30)
    assert one.summary == "hedged user 2 in 30 of the 32 rounds both played (dice 30); stakes matched in 30"
    assert one.evidence["partners"][0]["example_rounds"] == [5]
    five = next(flag for flag in flags if flag.user_id == 5)
    assert five.summary.endswith("shared address 203.0.113.7")
    assert sides_flags(pairs, {}, {}, SidesRule(min_rounds=31)) == []


def test_players_picking_sides_at_random_are_not_flagged() -> None:
    rng = random.Random(11)
    bets = []
    for round_id in range(1000):
        for user in rng.sample(range(40), 12):
            kind = rng.choice(["red", "black", "odd", "even", "low", "high"])
            bets.append(RoundBet("roulette", round_id, user, 10, {"type": kind}))
    pairs = hedging_pairs(sorted(bets, key=lambda bet: bet.round_id), HANDLERS)
    assert max(tally.rounds for tally in pairs.values()) >= 20  # regulars share many rounds, hedging in some
    common: dict[tuple[int, int], int] = {}
    by_round: dict[int, set[int]] = {}
    for bet in bets:
        by_round.setdefault(bet.round_id, set()).add(bet.user_id)
    for users in by_round.values():
        for a in users:
            for b in users:
                if a < b:
                    common[(a, b)] = common.get((a, b), 0) + 1
    assert sides_flags(pairs, common, {}) == []
