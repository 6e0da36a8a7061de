"""What settled bets do to the boards (:func:`server.leaderboards.plan`): pure, on fixed times."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import get_args

from protocol import messages as m
from server.leaderboards import Board, BoardKey, Planner, SettledBet, Win, plan
from server.leaderboards.boards import METRICS, parse_key
from server.leaderboards.periods import PERIODS, time_zone

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
BERLIN = time_zone("Europe/Berlin")


def bet(bet_id: int, user: int, stake: int, payout: int, *, game: str = "dice", at: datetime = NOW) -> SettledBet:
    return SettledBet(bet_id, user, game, stake, payout, at)


def test_keys_name_scope_metric_period_and_period_key() -> None:
    key = Board("dice", "win", "day").at(NOW, UTC)
    assert key.key == "lb:dice:win:day:2026-12-03"
    assert key.wins_key == "lb:dice:win:day:2026-12-03:bets"
    assert Board("all", "net", "all").at(NOW, UTC).key == "lb:all:net:all:all"
    assert parse_key(key.key) == key
    assert parse_key("lb:my:game:net:week:2026-W49") == BoardKey(Board("my:game", "net", "week"), "2026-W49")
    for other in (
        "lb:batch:17",
        key.wins_key,
        "lb:dice:net:all:2026-12-03",
        "lb:dice:gross:day:x",
        "x:dice:net:all:all",
    ):
        assert parse_key(other) is None, other


def test_the_protocol_offers_exactly_the_metrics_and_periods_there_are() -> None:
    assert get_args(m.LeaderboardMetric) == METRICS
    assert get_args(m.LeaderboardPeriod) == PERIODS


def test_net_sums_payout_minus_stake_per_user_per_game_and_over_all_games() -> None:
    changes = plan([bet(1, 7, 10, 0), bet(2, 7, 10, 25), bet(3, 8, 5, 0, game="crash"), bet(4, 7, 4, 8, game="crash")],
                   UTC, NOW.timestamp())  # fmt: skip
    for period, pkey in (("day", "2026-12-03"), ("week", "2026-W49"), ("all", "all")):
        assert changes.net[f"lb:dice:net:{period}:{pkey}"] == {7: 5}
        assert changes.net[f"lb:crash:net:{period}:{pkey}"] == {8: -5, 7: 4}
        assert changes.net[f"lb:all:net:{period}:{pkey}"] == {7: 9, 8: -5}
    assert changes.bets == 4
    assert changes.boards == {f"{scope}:{metric}:{period}" for scope in ("dice", "crash", "all")
                              for metric in ("net", "win") for period in PERIODS}  # fmt: skip


def test_the_biggest_win_is_the_biggest_payout_above_the_stake_the_earlier_bet_on_a_tie() -> None:
    changes = plan([bet(5, 7, 10, 30), bet(3, 7, 1, 30), bet(9, 7, 100, 50), bet(4, 8, 10, 10), bet(6, 8, 10, 5)],
                   UTC, NOW.timestamp())  # fmt: skip
    wins = changes.wins["lb:dice:win:all:all"]
    assert wins == {7: Win(30, 3000, 3)}  # bet 3 (30x) and bet 5 (3x) paid 30: the earlier bet stands
    # A bet that paid back its stake (or less) is no win; bet 9 paid 50 for 100.
    assert 8 not in wins
    assert Win(30, 300, 5).beats(Win(29, 2900, 1)) and not Win(30, 300, 5).beats(Win(30, 3000, 3))
    assert Win(30, 3000, 3).beats(Win(30, 300, 5)) and Win(1, 101, 1).beats(None)


def test_the_multiplier_is_payout_over_stake_in_hundredths_rounded_down() -> None:
    assert bet(1, 1, 3, 10).win == Win(10, 333, 1)
    assert bet(1, 1, 10, 10).win is None


def test_a_bet_counts_in_the_period_of_its_settlement_in_the_boards_time_zone() -> None:
    late = NOW.replace(hour=23, minute=30)  # 00:30 on the 4th in Berlin
    changes = plan([bet(1, 7, 10, 20, at=late)], BERLIN, late.timestamp())
    assert "lb:dice:net:day:2026-12-04" in changes.net
    assert "lb:dice:net:day:2026-12-03" not in changes.net


def test_boards_that_have_expired_take_nothing_but_all_time_does() -> None:
    old = NOW - timedelta(days=10)
    changes = plan([bet(1, 7, 10, 20, at=old)], UTC, NOW.timestamp())
    assert sorted(changes.net) == ["lb:all:net:all:all", "lb:dice:net:all:all"]
    assert changes.expiries == dict.fromkeys([*changes.net, *changes.wins])
    fresh = plan([bet(1, 7, 10, 20)], UTC, NOW.timestamp())
    assert fresh.expiries["lb:dice:net:day:2026-12-03"] == int(datetime(2026, 12, 7, tzinfo=UTC).timestamp())
    assert fresh.expiries["lb:dice:win:week:2026-W49"] == int(datetime(2026, 12, 10, tzinfo=UTC).timestamp())


def test_planning_in_batches_in_any_order_gives_the_same_boards() -> None:
    rng = random.Random(7)
    bets = [bet(i, rng.randrange(5), 10, rng.choice([0, 0, 10, 19, 30, 50]), game=rng.choice(["dice", "crash"]),
                at=NOW - timedelta(hours=rng.randrange(48))) for i in range(1, 400)]  # fmt: skip
    whole = plan(bets, UTC, NOW.timestamp())
    rng.shuffle(bets)
    planner = Planner(UTC)
    pieces = [planner.plan(bets[start : start + 37], NOW.timestamp()) for start in range(0, len(bets), 37)]
    merged_net: dict[str, dict[int, int]] = {}
    merged_wins: dict[str, dict[int, Win]] = {}
    for piece in pieces:
        for key, scores in piece.net.items():
            for user, delta in scores.items():
                merged_net.setdefault(key, {})[user] = merged_net.get(key, {}).get(user, 0) + delta
        for key, wins in piece.wins.items():
            for user, win in wins.items():
                if win.beats(merged_wins.setdefault(key, {}).get(user)):
                    merged_wins[key][user] = win
    assert merged_net == whole.net
    assert merged_wins == whole.wins
