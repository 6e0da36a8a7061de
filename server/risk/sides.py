"""Both sides of a round: accounts whose bets cover each other in the same rounds, round after round.

One player with two accounts who bets ``under 5000`` on one and ``over 4999`` on the other wins on one
and loses on the other every round: chips move between the accounts at the cost of the house edge (to
launder chips, to turn welcome credits farmed on many accounts into one balance, to climb a leaderboard
or meet a wagering requirement while risking nothing). Two bets of one round *hedge* each other when no
outcome pays both and together they win on at least 90% of the outcomes:

- dice: ``under T`` and ``over T'`` with ``T' >= T - 1`` (no roll wins both) covering 9,000 rolls or more;
- roulette: two bets covering no pocket in common and 34 pockets or more (red and black, odd and even,
  low and high: 36 of 37);
- the wheel: colour bets on two colours whose segments make 90% of the wheel (red and black: 18 of 20).

A pair of accounts is flagged, both of them, when in the window they hedged each other in at least
``min_rounds`` (20) rounds, in at least ``share`` (75%) of the rounds of those games both played, and with
stakes within a factor of 2 of each other in at least ``share`` of the hedged rounds (a hedge that moves
value: 1 chip against 50 is not one); a pair that signed in from a common address (``signin_addresses``)
needs only ``min_rounds_same_address`` (5) rounds. Players picking sides at random hedge each other in a
few of their common rounds, not three in four; a bot always on ``under 5000`` beside a player always on
``over 4999`` does, but with stakes far apart. Two honest habits with like stakes (one player always on red,
another always on black, at the same tables) do look alike, which is why this is a flag for a person to
read: the evidence gives the partner, the rounds, how often the stakes matched and the shared addresses.
The score is the number of hedged rounds with the partner most hedged with.

The bets are read round by round (one round's bets in memory at a time); within a round, each distinct
pair of bet params is judged once, so the work is the number of hedging pairs of bets, which is small
unless a round holds hundreds of players on both colours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..db.transactions import Connection
from ..games.dice import winning_rolls
from ..games.roulette import covered
from ..rounds.handler import RoundHandler
from .flags import Flag, FlagKind, Window

COVER = 0.9
"""The share of the outcomes two hedging bets win on together, at least."""
GAMES = ("dice", "roulette", "wheel")
"""The games where two bets can hedge each other."""


@dataclass(frozen=True, slots=True)
class SidesRule:
    """The thresholds (see the module)."""

    min_rounds: int = 20
    min_rounds_same_address: int = 5
    share: float = 0.75


RULE = SidesRule()


@dataclass(frozen=True, slots=True)
class RoundBet:
    """A bet as this detector reads it."""

    game: str
    round_id: int
    user_id: int
    amount: int
    params: Mapping[str, Any]


@dataclass(slots=True)
class PairTally:
    """What two accounts (``low`` < ``high`` by id) did against each other."""

    low: int
    high: int
    rounds: int = 0
    """Rounds in which they hedged each other."""
    matched: int = 0
    """Of those, rounds where the stakes were within a factor of 2."""
    games: dict[str, int] = field(default_factory=dict)
    examples: list[int] = field(default_factory=list)
    """Some of the rounds (the first 10)."""


def hedge(
    game: str, a: Mapping[str, Any], b: Mapping[str, Any], handlers: Mapping[str, RoundHandler[Any, Any]]
) -> bool:
    """Whether bets ``a`` and ``b`` (params as stored) of one round of ``game`` hedge each other (see the module)."""
    try:
        if game == "dice":
            return _dice_hedge(a, b)
        if game == "roulette":
            one, two = covered(a["type"], list(a.get("numbers", []))), covered(b["type"], list(b.get("numbers", [])))
            return not one & two and len(one) + len(two) >= COVER * 37
        if game == "wheel" and "wheel" in handlers:
            return _wheel_hedge(a, b, handlers["wheel"])
    except (KeyError, TypeError, ValueError, IndexError):  # params of another shape: not a bet we can judge
        return False
    return False


def _dice_hedge(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if {a["side"], b["side"]} != {"under", "over"}:
        return False
    under, over = (a, b) if a["side"] == "under" else (b, a)
    low, high = int(under["target"]), int(over["target"])
    return high >= low - 1 and winning_rolls(low, "under") + winning_rolls(high, "over") >= COVER * 10_000


def _wheel_hedge(a: Mapping[str, Any], b: Mapping[str, Any], wheel: RoundHandler[Any, Any]) -> bool:
    if a.get("type") != "colour" or b.get("type") != "colour" or a["colour"] == b["colour"]:
        return False
    segments = wheel.params.segments
    landing = sum(1 for segment in segments if segment.colour in (a["colour"], b["colour"]))
    return bool(landing >= COVER * len(segments))


class HedgeCounter:
    """Counts, per pair of accounts, the rounds in which they hedged each other: :meth:`add` the bets
    ordered by (game, round) (each round is judged when the next one begins), then read :meth:`pairs`."""

    def __init__(self, handlers: Mapping[str, RoundHandler[Any, Any]]) -> None:
        self._handlers = handlers
        self._pairs: dict[tuple[int, int], PairTally] = {}
        self._judged: dict[tuple[str, bytes, bytes], bool] = {}
        self._round: list[RoundBet] = []

    def add(self, bet: RoundBet) -> None:
        """The next bet; bets of one round come together."""
        if self._round and (bet.game, bet.round_id) != (self._round[0].game, self._round[0].round_id):
            self._judge_round()
        self._round.append(bet)

    def pairs(self) -> dict[tuple[int, int], PairTally]:
        """Every pair that hedged at least once, by (lower id, higher id)."""
        if self._round:
            self._judge_round()
        return self._pairs

    def _judge_round(self) -> None:
        bets, self._round = self._round, []
        game, round_id = bets[0].game, bets[0].round_id
        kinds: dict[bytes, list[RoundBet]] = {}
        for bet in bets:
            kinds.setdefault(orjson.dumps(bet.params, option=orjson.OPT_SORT_KEYS), []).append(bet)
        names = sorted(kinds)
        hedged: dict[tuple[int, int], tuple[int, int]] = {}  # pair -> their stakes, once per round
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                verdict = self._judged.get((game, first, second))
                if verdict is None:
                    verdict = hedge(game, kinds[first][0].params, kinds[second][0].params, self._handlers)
                    self._judged[(game, first, second)] = verdict
                if not verdict:
                    continue
                for a in kinds[first]:
                    for b in kinds[second]:
                        if a.user_id != b.user_id:
                            pair = (a.user_id, b.user_id) if a.user_id < b.user_id else (b.user_id, a.user_id)
                            hedged.setdefault(pair, (a.amount, b.amount))
        for (low, high), (one, two) in hedged.items():
            found = self._pairs.get((low, high))
            if found is None:
                found = self._pairs[(low, high)] = PairTally(low, high)
            found.rounds += 1
            found.matched += 1 if max(one, two) <= 2 * min(one, two) else 0
            found.games[game] = found.games.get(game, 0) + 1
            if len(found.examples) < 10:
                found.examples.append(round_id)


def hedging_pairs(
    bets: Iterable[RoundBet], handlers: Mapping[str, RoundHandler[Any, Any]]
) -> dict[tuple[int, int], PairTally]:
    """:class:`HedgeCounter` over ``bets`` (ordered by game and round)."""
    counter = HedgeCounter(handlers)
    for bet in bets:
        counter.add(bet)
    return counter.pairs()


def sides_flags(
    pairs: Mapping[tuple[int, int], PairTally],
    shared_rounds: Mapping[tuple[int, int], int],
    shared_addresses: Mapping[tuple[int, int], list[str]],
    rule: SidesRule = RULE,
) -> list[Flag]:
    """Both accounts of every pair that hedged each other too often (see the module): ``shared_rounds``
    is, per pair, the rounds of the hedging games both played in the window; ``shared_addresses`` the
    addresses both signed in from. One flag per account, with every partner in its evidence."""
    partners: dict[int, list[tuple[int, PairTally, int, list[str]]]] = {}
    for pair, tally in pairs.items():
        addresses = shared_addresses.get(pair, [])
        least = rule.min_rounds_same_address if addresses else rule.min_rounds
        both = max(shared_rounds.get(pair, tally.rounds), tally.rounds)
        if tally.rounds < least or tally.rounds < rule.share * both or tally.matched < rule.share * tally.rounds:
            continue
        partners.setdefault(tally.low, []).append((tally.high, tally, both, addresses))
        partners.setdefault(tally.high, []).append((tally.low, tally, both, addresses))
    flags = []
    for user_id, theirs in partners.items():
        theirs.sort(key=lambda item: (-item[1].rounds, item[0]))
        partner, top, both, addresses = theirs[0]
        games = ", ".join(f"{game} {n}" for game, n in sorted(top.games.items()))
        flags.append(Flag(user_id, FlagKind.BOTH_SIDES, top.rounds, {
            "summary": f"hedged user {partner} in {top.rounds} of the {both} rounds both played ({games}); stakes "
                       f"matched in {top.matched}" + (f"; shared address {addresses[0]}" if addresses else "")
                       + (f"; {len(theirs) - 1} partner(s) more" if len(theirs) > 1 else ""),
            "partners": [{
                "user_id": other, "hedged_rounds": tally.rounds, "rounds_both_played": rounds,
                "stakes_matched": tally.matched, "games": tally.games, "example_rounds": tally.examples,
                "shared_addresses": shared,
            } for other, tally, rounds, shared in theirs],
            "rule": {"min_rounds": rule.min_rounds, "min_rounds_same_address": rule.min_rounds_same_address,
                     "share": rule.share, "cover": COVER},
        }))  # fmt: skip
    return flags


# ------------------------------------------------------------------ the SQL

_ROUND_BETS = """
SELECT game, round_id, user_id, amount, params FROM bets
WHERE game = ANY($1::text[]) AND status <> 'refunded' AND created_at >= $2 AND created_at < $3
ORDER BY game, round_id
"""

_SHARED_ROUNDS = """
SELECT p.low, p.high,
       (SELECT count(*) FROM (SELECT game, round_id FROM bets
                              WHERE user_id = p.low AND game = ANY($3::text[]) AND created_at >= $4 AND created_at < $5
                              INTERSECT
                              SELECT game, round_id FROM bets
                              WHERE user_id = p.high AND game = ANY($3::text[]) AND created_at >= $4
                                AND created_at < $5) AS common) AS rounds
FROM unnest($1::bigint[], $2::bigint[]) AS p(low, high)
"""

_SHARED_ADDRESSES = """
SELECT p.low, p.high, array_agg(host(a.address) ORDER BY a.address) AS addresses
FROM unnest($1::bigint[], $2::bigint[]) AS p(low, high)
JOIN signin_addresses a ON a.user_id = p.low
JOIN signin_addresses b ON b.user_id = p.high AND b.address = a.address
GROUP BY p.low, p.high
"""


async def round_bets(conn: Connection, window: Window, games: Iterable[str] = GAMES) -> AsyncIterator[RoundBet]:
    """The bets placed in ``window`` on the hedging games (refunded ones left out), ordered by (game, round),
    read through a cursor. ``conn`` must be in a transaction."""
    async for row in conn.cursor(_ROUND_BETS, list(games), window.start, window.end, prefetch=5000):
        yield RoundBet(row["game"], row["round_id"], row["user_id"], row["amount"], orjson.loads(row["params"]))


async def shared_rounds(conn: Connection, pairs: Iterable[tuple[int, int]], window: Window,
                        games: Iterable[str] = GAMES) -> dict[tuple[int, int], int]:  # fmt: skip
    """Per pair (low, high), the rounds of ``games`` both placed a bet in during ``window``."""
    pairs = list(pairs)
    if not pairs:
        return {}
    rows = await conn.fetch(_SHARED_ROUNDS, [low for low, _ in pairs], [high for _, high in pairs], list(games),
                            window.start, window.end)  # fmt: skip
    return {(row["low"], row["high"]): row["rounds"] for row in rows}


async def shared_addresses(conn: Connection, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], list[str]]:
    """Per pair (low, high), the client addresses both signed in from (``signin_addresses``)."""
    pairs = list(pairs)
    if not pairs:
        return {}
    rows = await conn.fetch(_SHARED_ADDRESSES, [low for low, _ in pairs], [high for _, high in pairs])
    return {(row["low"], row["high"]): list(row["addresses"]) for row in rows}
