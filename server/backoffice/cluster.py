"""The cluster as the back office sees it (``GET /admin/api/cluster``): nodes, drivers, the outbox.

- Nodes: every node holds a claim on the database (an advisory lock, :mod:`server.db.instance`) whose
  session names it, and answers a ``report`` on the control channel with its sockets and the games it
  drives (:mod:`.control`). A node that holds its claim but does not answer (cut off from Redis, or busy)
  is listed with ``answered: false``.
- Drivers: each game's lease (``game_leases``: the node that took it last and its token) and whether its
  advisory lock is held now (:mod:`server.rounds.lease`), beside the nodes that say they drive it.
- The outbox: user events not yet relayed, and the age of the oldest (the metrics sampler's query,
  :mod:`server.metrics.samplers`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from ..db.instance import LOCK_KEY
from ..metrics.samplers import OUTBOX_QUERY as OUTBOX  # one indexed read, capped: what croupier_outbox_backlog shows
from ..rounds.lease import LOCK_CLASS
from .control import ClusterControl

REPORT_WAIT = 1.0
"""Seconds the nodes have to answer (the answer comes sooner once every node holding a claim answered)."""

_CLAIMS = """
SELECT coalesce(a.application_name, '') AS name
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::int8 << 32) | l.objid::int8) = $1
"""
"""The sessions holding a node's claim on the database (``server.db.instance``), named after their node."""
_DRIVERS = """
SELECT g.game, g.holder, g.token, g.acquired_at,
       EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND l.classid::int8 = $1 AND l.objid::int8 = (hashtext(g.game)::int8 & 4294967295)) AS locked
FROM game_leases g ORDER BY g.game
"""
"""Each game's lease, and whether a session holds its lock (``pg_try_advisory_lock(LOCK_CLASS, hashtext(game))``)."""
_CLAIM_PREFIX = "croupier node "


def _claimant(application_name: str) -> str:
    """The node id in a claim's session name (``croupier node <id> (Redis)``, cut at 63 characters)."""
    name = application_name.removeprefix(_CLAIM_PREFIX)
    return name.rsplit(" (", 1)[0] if " (" in name else name


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


async def cluster(pool: asyncpg.Pool, control: ClusterControl, node_id: str) -> dict[str, Any]:
    """The cluster now: ``{"node", "nodes", "drivers", "outbox"}``."""
    async with pool.acquire() as conn:
        claims = [_claimant(row["name"]) for row in await conn.fetch(_CLAIMS, LOCK_KEY)]
        leases = await conn.fetch(_DRIVERS, LOCK_CLASS)
        outbox = await conn.fetchrow(OUTBOX)
    reports = await control.reports(wait=REPORT_WAIT, expected=len(claims))
    nodes: list[dict[str, Any]] = [
        {"node": r.node, "answered": True, "users": r.users, "sockets": r.sockets, "games": r.games,
         "driving": r.driving}
        for r in reports
    ]  # fmt: skip
    for claimant in claims:
        if not any(r.node == claimant or r.node.startswith(claimant) for r in reports):  # a long id is cut
            nodes.append({"node": claimant, "answered": False})
    drivers = {
        row["game"]: {"holder": row["holder"], "token": row["token"], "since": _ms(row["acquired_at"]),
                      "locked": row["locked"], "driving": [r.node for r in reports if row["game"] in r.driving]}
        for row in leases
    }  # fmt: skip
    assert outbox is not None
    return {
        "node": node_id,
        "nodes": nodes,
        "drivers": drivers,
        "outbox": {"backlog": outbox["backlog"], "oldest_seconds": outbox["oldest"]},
    }
