"""The luck detector on synthetic bet groups, against the games' real moments (no database)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from server.games import registered_games
from server.risk.flags import FlagKind
from server.risk.luck import BetGroup, LuckRule, Tally, luck_flags, tally
from server.rounds.handler import BetInfo, RoundHandler

HANDLERS: dict[str, RoundHandler[Any, Any]] = {name: game() for name, game in registered_games().items()}


def groups_of(user: int, game: str, params: dict[str, Any], amount: int, payouts: list[int],
              cashout: int | None = None, first_round: int = 0) -> list[BetGroup]:  # fmt: skip
    """One bet a round, in rounds ``first_round``, ``first_round + 1``, ..."""
    return [BetGroup(user, game, first_round + n, params, amount, cashout, 1, paid, paid * paid, paid)
            for n, paid in enumerate(payouts)]  # fmt: skip


def honest(rng: random.Random, user: int, game: str, params: dict[str, Any], amount: int, n: int) -> list[BetGroup]:
    """``n`` bets whose outcomes are drawn from the bet's true odds."""
    handler = HANDLERS[game]
    bet = handler.read_bet(params, amount)
    if game == "dice":
        chance, pays = (bet.target if bet.side == "under" else 9999 - bet.target) / 10_000, handler.max_multiplier(bet)
        payouts = [amount * pays // 100 if rng.random() < chance else 0 for _ in range(n)]
    elif game == "roulette":
        payouts = [handler.payout(BetInfo(0, user, amount, bet), {"number": rng.randrange(37)}) for _ in range(n)]
    else:
        raise AssertionError(game)
    return groups_of(user, game, params, amount, payouts)


def test_a_cheat_winning_dice_at_95_percent_with_5_percent_odds_is_flagged() -> None:
    rng = random.Random(5)
    won = 10 * 1980 // 100
    cheat = groups_of(1, "dice", {"target": 500, "side": "under"}, 10, [won if rng.random() < 0.95 else 0
                                                                        for _ in range(200)])  # fmt: skip
    [flag] = luck_flags(tally(cheat, HANDLERS))
    assert (flag.user_id, flag.kind) == (1, FlagKind.LUCK) and flag.score > 50
    [game] = flag.evidence["games"]
    assert game["game"] == "dice" and game["bets"] == 200 and game["bernstein_bound"] < 1e-100
    assert flag.summary.startswith("dice: z = ")


def test_honest_players_are_not_flagged() -> None:
    rng = random.Random(7)
    groups = []
    for user in range(400):
        groups += honest(rng, user, "dice", {"target": rng.randrange(500, 9500), "side": "over"}, 10, 120)
        groups += honest(rng, user, "roulette", {"type": "straight", "numbers": [user % 37]}, 5, 120)
    tallies = tally(groups, HANDLERS)
    assert luck_flags(tallies) == []
    zs = [t.z for t in tallies.values()]
    assert -0.5 < sum(zs) / len(zs) < 0.2  # centred (rounding down makes honest players a hair unlucky)


def test_the_bernstein_guard_keeps_a_lucky_long_shot_player_unflagged() -> None:
    """Ten straight-up hits in 100 spins: z is over 4, but long shots do that far more often than 3e-5."""
    payouts = [36 * 5] * 10 + [0] * 90
    [(key, found)] = tally(groups_of(1, "roulette", {"type": "straight", "numbers": [7]}, 5, payouts), HANDLERS).items()
    assert found.z > 4 and found.bernstein > 1e-3
    assert luck_flags({key: found}) == []
    assert luck_flags({key: found}, LuckRule(bernstein=1.0)) != []  # the normal approximation alone would flag


def test_too_few_bets_are_not_judged() -> None:
    cheat = groups_of(1, "dice", {"target": 500, "side": "under"}, 10, [198] * 49)
    assert luck_flags(tally(cheat, HANDLERS)) == []
    assert luck_flags(tally(cheat, HANDLERS), LuckRule(min_bets=49)) != []


def test_crash_played_by_hand_uses_the_spread_of_the_returns() -> None:
    """An honest hand player aiming at 10x wins 1 in 10: the wins recorded at 10x are not luck."""
    rng = random.Random(3)
    crash = HANDLERS["crash"]
    wins = losses = 0
    for _ in range(2000):
        if rng.random() < crash.reach_chance(1000):
            wins += 1
        else:
            losses += 1
    groups = [*groups_of(1, "crash", {}, 10, [100] * wins, cashout=1000),
              *groups_of(1, "crash", {}, 10, [0] * losses, first_round=wins)]  # fmt: skip
    [(_, found)] = tally(groups, HANDLERS).items()
    assert abs(found.z) < 3 and found.bets == 2000
    assert luck_flags(tally(groups, HANDLERS)) == []
    # Read as bets aimed at 10x from the start, the same wins would look like luck only if they were more.
    cheat = [*groups_of(2, "crash", {}, 10, [100] * 600, cashout=1000),
             *groups_of(2, "crash", {}, 10, [0] * 400, first_round=600)]  # fmt: skip
    assert [flag.user_id for flag in luck_flags(tally(cheat, HANDLERS))] == [2]


def test_unknown_games_and_unreadable_params_are_left_out() -> None:
    groups = [*groups_of(1, "blackjack", {}, 10, [20] * 100),
              *groups_of(1, "dice", {"target": 0, "side": "sideways"}, 10, [20] * 100)]  # fmt: skip
    tallies = tally(groups, HANDLERS)
    assert list(tallies) == [(1, "dice")] and tallies[(1, "dice")].skipped == 100 and tallies[(1, "dice")].bets == 0


def test_a_tally_without_variance_has_no_z() -> None:
    assert Tally().z == 0.0 and Tally().bernstein == 1.0
    assert math.isclose(Tally(bets=1, returned=2.0, expected=1.0, variance=1.0).z, 1.0)


@pytest.mark.parametrize("games", [1, 2])
def test_one_flag_per_user_with_every_lucky_game(games: int) -> None:
    groups = groups_of(1, "dice", {"target": 500, "side": "under"}, 10, [198] * 100)
    if games == 2:
        groups += groups_of(1, "roulette", {"type": "red"}, 10, [20] * 100)
    [flag] = luck_flags(tally(groups, HANDLERS))
    assert len(flag.evidence["games"]) == games and flag.evidence["games"][0]["game"] == "dice"


def test_bets_of_one_round_count_as_one_draw_unless_each_draws_its_own() -> None:
    """Ten bets on red in each of 20 spins, 15 spins won: one lucky streak of 20 spins, not of 200 bets."""
    spins = [BetGroup(1, "roulette", n, {"type": "red"}, 10, None, 10, 200 if n < 15 else 0,
                      10 * 20 * 20 if n < 15 else 0, 20 if n < 15 else 0) for n in range(20)]  # fmt: skip
    found = tally(spins, HANDLERS)[(1, "roulette")]
    one_spin = HANDLERS["roulette"].return_moments(
        BetInfo(0, 1, 10, HANDLERS["roulette"].read_bet({"type": "red"}, 10))
    )
    assert found.bets == 200 and found.variance == pytest.approx(20 * 100 * one_spin.variance)
    assert found.z == pytest.approx((300 - 200 * one_spin.mean) / math.sqrt(20 * 100 * one_spin.variance))
    assert 2 < found.z < 4 and luck_flags({(1, "roulette"): found}) == []  # as 200 independent bets: z = 7.5
    balls = [BetGroup(1, "plinko", 1, {"risk": "low"}, 10, None, 200, 200 * 10, 200 * 100, 10)]  # 200 balls at 1x
    plinko = HANDLERS["plinko"].return_moments(BetInfo(0, 1, 10, HANDLERS["plinko"].read_bet({"risk": "low"}, 10)))
    assert tally(balls, HANDLERS)[(1, "plinko")].variance == pytest.approx(200 * plinko.variance)
