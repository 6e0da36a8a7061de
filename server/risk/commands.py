"""``croupier risk report [--since DATE] [--until DATE] [--json]``: every detector over a window, the flags
written to ``risk_flags`` and printed.

The window is ``--since`` (included) to ``--until`` (excluded): ISO dates (``2026-01-31``: midnight UTC) or
dates and times (``2026-01-31T18:00``, UTC unless they say otherwise). Without ``--until``, now (to the
minute); without ``--since``, 24 hours before the end. A report run again over the same window writes no
second row for a flag (give both bounds to re-run one: the defaults move with the clock). Flags are not
errors: the command exits 0 whatever it found, 2 on a bad argument.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import asyncpg
import orjson

from ..games import configure_games
from ..rounds.handler import RoundHandler
from ..settings import Settings
from .flags import Window
from .report import Report, run_report

DEFAULT_SPAN = dt.timedelta(hours=24)


def parse_moment(text: str) -> dt.datetime:
    """A date (midnight UTC) or a date and time (UTC unless it says); ``ValueError`` if it is neither."""
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def window_of(since: str | None, until: str | None, now: dt.datetime) -> Window:
    """The report's window from ``--since`` and ``--until`` (see the module); ``ValueError`` says what is wrong."""
    try:
        end = parse_moment(until) if until is not None else now.replace(second=0, microsecond=0)
    except ValueError:
        raise ValueError(
            f"--until must be a date (2026-01-31) or a date and time (2026-01-31T18:00), got {until!r}"
        ) from None
    try:
        start = parse_moment(since) if since is not None else end - DEFAULT_SPAN
    except ValueError:
        raise ValueError(
            f"--since must be a date (2026-01-31) or a date and time (2026-01-31T18:00), got {since!r}"
        ) from None
    return Window(start, end)


def game_handlers(settings: Settings) -> dict[str, RoundHandler[Any, Any]]:
    """Every registered game with the deployment's params (``CROUPIER_GAME_PARAMS``): a game the node no
    longer runs may still have bets in the window."""
    handlers, _ = configure_games(None, settings.game_params, min_bet=settings.min_bet, max_bet=settings.max_bet,
                                  max_payout=settings.max_payout)  # fmt: skip
    return handlers


async def risk_report(settings: Settings, dsn: str, *, since: str | None, until: str | None, as_json: bool) -> int:
    """``croupier risk report``: see the module."""
    try:
        window = window_of(since, until, dt.datetime.now(dt.UTC))
    except ValueError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return 2
    conn = await asyncpg.connect(dsn)
    try:
        report = await run_report(conn, window, game_handlers(settings))
    finally:
        await conn.close()
    print(render_json(report) if as_json else render_table(report))
    return 0


def render_table(report: Report) -> str:
    """The report for people: a line per flag (user, kind, score, the evidence in one line), ``*`` marking
    those new in this run."""
    window = report.window
    lines = [f"risk report {window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC: "
             f"{len(report.flags)} flag(s), {len(report.new)} new"]  # fmt: skip
    if report.flags:
        lines.append(f"  {'user':>14}  {'kind':<16}  {'score':>8}  evidence")
    for flag in report.flags:
        mark = "*" if (flag.user_id, flag.kind) in report.new else " "
        lines.append(f"{mark} {flag.user_id:>14}  {flag.kind.value:<16}  {flag.score:>8g}  {flag.summary}")
    return "\n".join(lines)


def render_json(report: Report) -> str:
    """The report as one JSON object: ``window`` (``since``, ``until``) and ``flags`` (``user_id``, ``kind``,
    ``score``, ``evidence``, ``new``)."""
    return orjson.dumps({
        "window": {"since": report.window.start.isoformat(), "until": report.window.end.isoformat()},
        "flags": [{"user_id": flag.user_id, "kind": flag.kind.value, "score": flag.score,
                   "evidence": dict(flag.evidence), "new": (flag.user_id, flag.kind) in report.new}
                  for flag in report.flags],
    }).decode()  # fmt: skip
