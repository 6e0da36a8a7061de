"""The back office's operations as ``croupier`` commands, through the same code as ``/admin/api``:
``croupier user block|unblock USER_ID --reason``, ``croupier round void ROUND_ID --reason``, ``croupier risk
flags`` and ``croupier risk review FLAG_ID --reason`` (and ``croupier credit ... --key``, :mod:`server.cli`,
with :func:`server.backoffice.money.adjust`).

Each is audited like the API's, under the name ``cli:<login>``. What must reach the nodes goes through
Redis (``REDIS_URL``): closing a blocked user's sockets, and a void, which only the node driving the
round's game makes. Without ``REDIS_URL`` (a single node on the in-process broker) a block still refuses
the user's next ``auth`` but cannot close the sockets already open, and a void cannot be made from here:
the commands say so; the node's own ``/admin/api`` does both.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import sys
from typing import Any

import asyncpg
import orjson

from ..broker import broker_from_url
from ..ledger import Ledger
from ..risk import FlagKind
from ..rounds.actions import ActionRouter
from ..settings import Settings
from . import accounts, risk, rounds
from .control import ClusterControl
from .errors import refusal
from .http import FIRST_PAGE, next_cursor


def actor() -> str:
    """The audit log's name for whoever runs the command: ``cli:<login>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"cli:uid-{os.getuid()}"


def _failed(exc: Exception) -> int:
    """Print a refusal in one line; 1. A fault of the program is raised, with its traceback."""
    if refusal(exc) is None:
        raise exc
    print(f"croupier: {exc}", file=sys.stderr)
    return 1


async def block_user(settings: Settings, dsn: str, user_id: int, reason: str, *, lift: bool) -> int:
    """``croupier user block|unblock USER_ID --reason TEXT``."""
    if settings.redis_url is None and not lift:
        print("croupier: no REDIS_URL: the user's next auth is refused, but sockets a node holds now stay "
              "open until they reconnect (POST /admin/api/users/ID/block on the node closes them)",
              file=sys.stderr)  # fmt: skip
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    broker = broker_from_url(settings.redis_url)
    try:
        change = accounts.unblock if lift else accounts.block
        result = await change(pool, ClusterControl(broker), actor(), user_id, reason)
    except Exception as exc:
        return _failed(exc)
    finally:
        await broker.close()
        await pool.close()
    state = "blocked" if result["blocked"] else "not blocked"
    print(f"user {user_id}: {state}{'' if result['changed'] else ' (already: nothing changed)'}")
    return 0


async def void_round(settings: Settings, dsn: str, round_id: int, reason: str) -> int:
    """``croupier round void ROUND_ID --reason TEXT``: through the node driving the round's game."""
    if settings.redis_url is None:
        print("croupier: round void needs REDIS_URL to reach the node driving the game; on a single node use "
              "POST /admin/api/rounds/ID/void", file=sys.stderr)  # fmt: skip
        return 2
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    broker = broker_from_url(settings.redis_url)
    router = ActionRouter(broker, f"cli-{os.getpid()}", Ledger(pool), {}, lambda game: None)
    try:
        await router.start(())
        result: dict[str, Any] = await rounds.void(pool, router, actor(), round_id, reason)
    except Exception as exc:
        return _failed(exc)
    finally:
        await router.close()
        await broker.close()
        await pool.close()
    print(f"round {round_id} ({result.get('game')}): voided, {result.get('refunded')} bets refunded "
          f"({result.get('total')} chips)")  # fmt: skip
    return 0


async def risk_flags(dsn: str, *, open_: bool | None, kind: FlagKind | None, user_id: int | None,
                     before_id: int | None, limit: int, as_json: bool) -> int:  # fmt: skip
    """``croupier risk flags [--open] [--kind K] [--user ID] [--before ID] [--limit N] [--json]``: a page of
    flags, newest first: :func:`.risk.page`, what ``GET /admin/api/risk/flags`` answers (``--json``: the same
    ``{"items", "next"}``)."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        items = await risk.page(pool, before_id or FIRST_PAGE, limit, open_=open_, kind=kind, user_id=user_id)
    except Exception as exc:
        return _failed(exc)
    finally:
        await pool.close()
    more = next_cursor(items, limit)
    print(orjson.dumps({"items": items, "next": more}).decode() if as_json else render_flags(items, more))
    return 0


def render_flags(items: list[dict[str, Any]], more: str | None) -> str:
    """Flags for people: a line each (id, user, kind, score, window, who reviewed it, the evidence's summary),
    then how to see the next page."""
    if not items:
        return "no risk flags"
    lines = [f"{'id':>8}  {'user':>14}  {'kind':<16}  {'score':>8}  {'window (UTC)':<36}  {'reviewed':<16}  evidence"]
    for flag in items:
        start, end = (_minute(flag["window"][edge]) for edge in ("start", "end"))
        reviewed = "open" if flag["reviewer"] is None else str(flag["reviewer"])
        summary = str(flag["evidence"].get("summary", "")) if isinstance(flag["evidence"], dict) else ""
        lines.append(f"{flag['id']:>8}  {flag['user']:>14}  {flag['kind']:<16}  {flag['score']:>8g}  "
                     f"{start} to {end}  {reviewed:<16}  {summary}")  # fmt: skip
    if more is not None:
        lines.append(f"more: the same command with --before {more}")
    return "\n".join(lines)


def _minute(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


async def review_flag(dsn: str, flag_id: int, reason: str) -> int:
    """``croupier risk review FLAG_ID --reason TEXT``: :func:`.risk.review` as ``cli:<login>``."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        result = await risk.review(pool, actor(), flag_id, reason)
    except Exception as exc:
        return _failed(exc)
    finally:
        await pool.close()
    flag = result["flag"]
    print(f"risk flag {flag_id} (user {flag['user']}, {flag['kind']}): reviewed by {flag['reviewer']}"
          f"{'' if result['changed'] else ' (already: nothing changed)'}")  # fmt: skip
    return 0
