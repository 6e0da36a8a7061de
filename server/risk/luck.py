"""Luck: a player who wins far more than a game's odds allow over the bets they made.

For each user and game, over the bets settled won or lost in the window, each bet's return
``r = payout / amount`` is compared with what the game says it should be before the round is played
(:meth:`~server.rounds.handler.RoundHandler.return_moments`: a mean and a variance for the bet's params,
amount and cash-out)::

    z = (sum of r - sum of means) / sqrt(sum of variances)

Bets of one round of a game with one outcome for everyone (dice, roulette, crash, the wheel) rise and fall
together (red and 7 on the same spin): such a round counts as one draw, with the mean of its bets and, for
variance, the square of the sum of their standard deviations (what it would be were they perfectly
correlated, so never less than it is): a player spreading bets over one spin does not look steadier than
they are. Bets of a game drawing each bet's result from its own stream (plinko) are independent and their
variances add.

The pair is flagged when all of these hold:

- at least ``min_bets`` (50) bets;
- ``z >= 4``. Under the normal approximation an honest player gets there with probability about 3.2e-5
  per player and game (the one-sided tail of a standard normal at 4): with 10,000 active players on 3
  games each, about one false flag per window;
- Bernstein's bound on the same excess is at most 1e-3: ``exp(-t**2 / (2V + 2bt/3))``, with ``t`` the
  excess, ``V`` the sum of variances and ``b`` the most one round's bets can return above their mean. It
  holds for any odds, where the normal approximation does not: an honest player of long shots (a roulette
  number, 35 to 1) reaches ``z >= 4`` over 100 spins with 10 hits, which happens 4e-4 of the time (one in
  2,500, not 3e-5); with the bound they need 12, which happens 1.8e-5 of the time. So the rate of false
  flags is at most 1e-3 per player and game whatever they play (Bernstein's bound is a bound), about 3e-5
  for bets near even money, and no more than that for long shots in the cases worked out above.

A bet played by hand (a crash bet cashed out by hand, or left to crash: ``Moments.by_hand``) counts with
the mean of any plan, and the spread of its round is estimated from the round's own return,
``(R - mean) ** 2``: a cash-out by hand is only recorded when it won, so its recorded multiplier says
nothing of the bets that lost. (That mean, 1 - edge, leaves out the rounding down of small payouts, so
small hand-played stakes look a little unlucky: the safe side.) The moments leave out the operator's
``max_payout`` and crash's ``force_point``, which only ever lower a return: a player they cut looks less
lucky, never more. Moments are taken with the game's params as the report runs them
(``CROUPIER_GAME_PARAMS``): a change of house edge during the window is not seen.

The SQL sums the window's bets per (user, game, round, params, amount, cash-out) in the database: about one
row per bet for a player betting once a round, fewer for one betting many times alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..db.transactions import Connection
from ..rounds.handler import BetInfo, Moments, RoundHandler
from .flags import Flag, FlagKind, Window


@dataclass(frozen=True, slots=True)
class LuckRule:
    """The thresholds (see the module)."""

    min_bets: int = 50
    z: float = 4.0
    bernstein: float = 1e-3


RULE = LuckRule()


@dataclass(frozen=True, slots=True)
class BetGroup:
    """A user's settled bets of one round with the same params, amount and cash-out, summed."""

    user_id: int
    game: str
    round_id: int
    params: Mapping[str, Any]
    amount: int
    cashout: int | None
    bets: int
    paid: int
    """The sum of their payouts."""
    paid_squares: int
    """The sum of their payouts squared."""
    top_paid: int
    """The largest payout among them."""


@dataclass(slots=True)
class Tally:
    """One user's luck at one game, summed over their bets."""

    bets: int = 0
    returned: float = 0.0
    """The sum of the returns ``r``."""
    expected: float = 0.0
    """The sum of their means."""
    variance: float = 0.0
    spread: float = 0.0
    """The most one round's bets (one bet, in a game drawing per bet) could return above their mean
    (Bernstein's ``b``)."""
    staked: int = 0
    paid: int = 0
    skipped: int = 0
    """Bets whose params the game no longer reads (left out)."""

    @property
    def excess(self) -> float:
        return self.returned - self.expected

    @property
    def z(self) -> float:
        return self.excess / math.sqrt(self.variance) if self.variance > 0 else 0.0

    @property
    def bernstein(self) -> float:
        """Bernstein's bound on the chance of an excess this large (1 when there is none)."""
        t = self.excess
        if t <= 0:
            return 1.0
        return math.exp(-t * t / (2 * self.variance + 2 * self.spread * t / 3))


@dataclass(slots=True)
class _RoundOfBets:
    """One user's bets in one round of a game with one outcome for everyone: they rise and fall together."""

    returned: float = 0.0
    expected: float = 0.0
    deviation: float = 0.0
    """The sum of the bets' standard deviations: the round's, were they perfectly correlated (at most that)."""
    top: float = 0.0
    by_hand: bool = False


_GROUPS = """
SELECT user_id, game, round_id, params, amount, cashout, count(*) AS bets, sum(payout) AS paid,
       sum(payout::numeric * payout) AS paid_squares, max(payout) AS top_paid
FROM bets
WHERE status IN ('won', 'lost') AND settled_at >= $1 AND settled_at < $2
GROUP BY user_id, game, round_id, params, amount, cashout
"""


async def bet_groups(conn: Connection, window: Window) -> list[BetGroup]:
    """The bets settled won or lost in ``window``, summed per (user, game, round, params, amount, cash-out).

    A scan of the window's bets (``settled_at`` has no index: the report is offline, and an index would
    cost every settlement on the hot path)."""
    rows = await conn.fetch(_GROUPS, window.start, window.end)
    return [
        BetGroup(
            row["user_id"],
            row["game"],
            row["round_id"],
            orjson.loads(row["params"]),
            row["amount"],
            row["cashout"],
            row["bets"],
            int(row["paid"]),
            int(row["paid_squares"]),
            row["top_paid"],
        )
        for row in rows
    ]


def tally(groups: Iterable[BetGroup], handlers: Mapping[str, RoundHandler[Any, Any]]) -> dict[tuple[int, str], Tally]:
    """Sum ``groups`` per (user, game) against the moments the games' ``handlers`` give (see the module for
    how bets of one round count). Bets of a game without a handler are left out; so are bets whose params
    the game no longer reads (``skipped``)."""
    tallies: dict[tuple[int, str], Tally] = {}
    rounds: dict[tuple[int, str, int], _RoundOfBets] = {}
    known: dict[tuple[str, bytes, int, int | None], tuple[Moments, float | None]] = {}
    for group in groups:
        handler = handlers.get(group.game)
        if handler is None:
            continue
        into = tallies.setdefault((group.user_id, group.game), Tally())
        key = (group.game, orjson.dumps(group.params, option=orjson.OPT_SORT_KEYS), group.amount, group.cashout)
        found = known.get(key)
        if found is None:
            try:
                bet = BetInfo(0, group.user_id, group.amount, handler.load_bet(group.params), group.cashout)
                most = handler.max_multiplier(bet.params)
                found = known[key] = (handler.return_moments(bet), None if most is None else most / 100)
            except (ValueError, TypeError):  # msgspec's ValidationError is a ValueError
                into.skipped += group.bets
                continue
        moments, ceiling = found
        n, amount = group.bets, group.amount
        returned = group.paid / amount
        top = ceiling if ceiling is not None else group.top_paid / amount
        into.bets += n
        into.returned += returned
        into.expected += n * moments.mean
        into.staked += n * amount
        into.paid += group.paid
        if type(handler).bet_result is not RoundHandler.bet_result:  # each bet its own draw: independent
            if moments.by_hand:  # the spread from the returns: the sum of (r - mean)^2
                squares = group.paid_squares / (amount * amount)
                into.variance += max(squares - 2 * moments.mean * returned + n * moments.mean**2, 0.0)
            else:
                into.variance += n * moments.variance
            into.spread = max(into.spread, top - moments.mean)
            continue
        joint = rounds.setdefault((group.user_id, group.game, group.round_id), _RoundOfBets())
        joint.returned += returned
        joint.expected += n * moments.mean
        joint.top += n * top
        if moments.by_hand:
            joint.by_hand = True
        else:
            joint.deviation += n * math.sqrt(moments.variance)
    for (user_id, game, _), joint in rounds.items():
        into = tallies[(user_id, game)]
        # A round with a bet played by hand: its spread from its own return, (R - mean)^2.
        into.variance += (joint.returned - joint.expected) ** 2 if joint.by_hand else joint.deviation**2
        into.spread = max(into.spread, joint.top - joint.expected)
    return tallies


def luck_flags(tallies: Mapping[tuple[int, str], Tally], rule: LuckRule = RULE) -> list[Flag]:
    """One flag per user lucky at one game or more (see the module); the score is their largest ``z``."""
    lucky: dict[int, list[tuple[str, Tally]]] = {}
    for (user_id, game), found in tallies.items():
        if found.bets >= rule.min_bets and found.z >= rule.z and found.bernstein <= rule.bernstein:
            lucky.setdefault(user_id, []).append((game, found))
    flags = []
    for user_id, games in lucky.items():
        games.sort(key=lambda item: -item[1].z)
        game, top = games[0]
        flags.append(Flag(user_id, FlagKind.LUCK, round(top.z, 2), {
            "summary": f"{game}: z = {top.z:.1f} over {top.bets} bets, returned {top.returned:.1f} stakes where "
                       f"{top.expected:.1f} were expected (paid {top.paid} on {top.staked} staked)"
                       + (f"; and {len(games) - 1} game(s) more" if len(games) > 1 else ""),
            "games": [{
                "game": name, "bets": t.bets, "z": round(t.z, 3), "returned": round(t.returned, 3),
                "expected": round(t.expected, 3), "variance": round(t.variance, 3),
                "bernstein_bound": t.bernstein, "staked": t.staked, "paid": t.paid,
            } for name, t in games],
            "rule": {"min_bets": rule.min_bets, "z": rule.z, "bernstein": rule.bernstein},
        }))  # fmt: skip
    return flags
