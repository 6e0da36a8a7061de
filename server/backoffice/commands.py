"""The back office's operations as ``croupier`` commands, through the same code as ``/admin/api``:
``croupier user block|unblock USER_ID --reason``, ``croupier round void ROUND_ID --reason`` (and
``croupier credit ... --key``, :mod:`server.cli`, with :func:`server.backoffice.money.adjust`).

Each is audited like the API's, under the name ``cli:<login>``. What must reach the nodes goes through
Redis (``REDIS_URL``): closing a blocked user's sockets, and a void, which only the node driving the
round's game makes. Without ``REDIS_URL`` (a single node on the in-process broker) a block still refuses
the user's next ``auth`` but cannot close the sockets already open, and a void cannot be made from here:
the commands say so; the node's own ``/admin/api`` does both.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

import asyncpg

from ..broker import broker_from_url
from ..ledger import Ledger
from ..rounds.actions import ActionRouter
from ..settings import Settings
from . import accounts, rounds
from .control import ClusterControl
from .errors import refusal


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
