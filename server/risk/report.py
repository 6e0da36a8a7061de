"""One risk report: every detector over one window, in one snapshot of the database.

:func:`find_flags` reads (a repeatable-read, read-only transaction: every detector sees the same data)
and returns the flags, highest score first within each kind; :func:`run_report` also writes them
(:func:`~.flags.store_flags`, one row per user, kind and window). Both are what ``croupier risk report``
runs (:mod:`.commands`); a test or the back office may call them with a connection of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..db.transactions import Connection
from ..rounds.handler import RoundHandler
from .cycling import cycling_flags, refunded_deposits
from .farming import farming_flags, new_accounts
from .flags import Flag, FlagKind, Window, store_flags
from .luck import bet_groups, luck_flags, tally
from .sides import GAMES, RULE, HedgeCounter, round_bets, shared_addresses, shared_rounds, sides_flags
from .velocity import BET_RULE, DEPOSIT_RULE, busiest_bet_minutes, busiest_deposit_hours, velocity_flags

KIND_ORDER = list(FlagKind)


@dataclass(frozen=True, slots=True)
class Report:
    """What one report found: its window, its flags, and which of them were new (not stored before)."""

    window: Window
    flags: list[Flag]
    new: frozenset[tuple[int, FlagKind]]


async def find_flags(conn: Connection, window: Window, handlers: Mapping[str, RoundHandler[Any, Any]]) -> list[Flag]:
    """Run every detector over ``window`` in one read-only snapshot; ``handlers`` are the games (their
    params as the node runs them) whose moments and hedges the detectors use."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        flags = velocity_flags(await busiest_bet_minutes(conn, window), FlagKind.BET_VELOCITY, BET_RULE)
        flags += velocity_flags(await busiest_deposit_hours(conn, window), FlagKind.DEPOSIT_VELOCITY, DEPOSIT_RULE)
        flags += luck_flags(tally(await bet_groups(conn, window), handlers))
        flags += cycling_flags(await refunded_deposits(conn, window))
        flags += farming_flags(await new_accounts(conn, window))
        games = [game for game in GAMES if game in handlers]
        counter = HedgeCounter(handlers)
        async for bet in round_bets(conn, window, games):
            counter.add(bet)
        pairs = counter.pairs()
        least = min(RULE.min_rounds, RULE.min_rounds_same_address)
        candidates = [pair for pair, found in pairs.items() if found.rounds >= least]
        flags += sides_flags(
            pairs,
            await shared_rounds(conn, candidates, window, games),
            await shared_addresses(conn, candidates),
        )
    return sorted(flags, key=lambda flag: (KIND_ORDER.index(flag.kind), -flag.score, flag.user_id))


async def run_report(conn: Connection, window: Window, handlers: Mapping[str, RoundHandler[Any, Any]]) -> Report:
    """:func:`find_flags`, then write them (one row per user, kind and window: running it again over the
    same window adds no row)."""
    flags = await find_flags(conn, window, handlers)
    async with conn.transaction():
        new = await store_flags(conn, flags, window)
    return Report(window, flags, frozenset(new))
