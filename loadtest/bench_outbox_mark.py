"""Benchmark: PostgreSQL's CPU per user event to write it into the outbox and mark it relayed, two designs.

The relay marks every event it published (``server/ledger/outbox.py``); on the bet path that is one more write per
bet. Two schemas on the same embedded PostgreSQL (fsync on), on tables of their own:

- ``flag`` (before migration 0022): ``user_events.relayed``, with a partial index ``WHERE NOT relayed`` for the
  sweeper; marking is an ``UPDATE`` that cannot be HOT (the flag is in an index's predicate): a new row version
  and its index entries per event;
- ``pending`` (migration 0022): the event's key also goes into ``user_events_pending``; marking deletes it.

Each batch writes N events in one transaction (as a bet batch does), then marks them in another (as the relay
does); the backend's CPU (``/proc``, commits included) is divided by the events.

    .venv/bin/python -m loadtest.bench_outbox_mark --events 70 --batches 400 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import asyncpg

from loadtest.common import bench_database, process_cpu_seconds

PAYLOAD = (
    b'{"ch":"user:1","t":"balance","balance":123456,"delta":-1,"reason":"bet","ref":1234567,"offset":12,'
    b'"epoch":"abcdefabcdef"}'
)
SCHEMAS = {
    "flag": """
        CREATE TABLE events (user_id bigint, "offset" bigint, payload bytea, created_at timestamptz DEFAULT now(),
                             relayed boolean NOT NULL DEFAULT false, PRIMARY KEY (user_id, "offset"));
        CREATE INDEX events_unrelayed ON events (created_at) WHERE NOT relayed;
        CREATE INDEX events_age ON events (created_at);
    """,
    "pending": """
        CREATE TABLE events (user_id bigint, "offset" bigint, payload bytea, created_at timestamptz DEFAULT now(),
                             PRIMARY KEY (user_id, "offset"));
        CREATE INDEX events_age ON events (created_at);
        CREATE TABLE pending (user_id bigint, "offset" bigint, created_at timestamptz NOT NULL DEFAULT now(),
                              PRIMARY KEY (user_id, "offset"));
        CREATE INDEX pending_age ON pending (created_at);
    """,
}
_EVENTS = (
    'INSERT INTO events (user_id, "offset", payload) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])'
)
WRITE = {
    "flag": _EVENTS,
    "pending": f'WITH e AS ({_EVENTS}) INSERT INTO pending (user_id, "offset") SELECT * FROM unnest($1::bigint[], '
    "$2::bigint[])",
}
MARK = {
    "flag": 'UPDATE events SET relayed = true FROM unnest($1::bigint[], $2::bigint[]) AS e(user_id, "offset") '
    'WHERE events.user_id = e.user_id AND events."offset" = e."offset" AND NOT relayed',
    "pending": 'DELETE FROM pending p USING unnest($1::bigint[], $2::bigint[]) AS e(user_id, "offset") '
    'WHERE p.user_id = e.user_id AND p."offset" = e."offset"',
}


async def measure(database_url: str, schema: str, events: int, batches: int) -> tuple[float, float]:
    """(write, mark) µs of backend CPU per event."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP TABLE IF EXISTS events, pending")
        await conn.execute(SCHEMAS[schema])
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        users = list(range(1, events + 1))
        write = mark = 0.0
        warm = max(1, batches // 10)
        for batch in range(warm + batches):
            offsets = [batch] * events
            before = process_cpu_seconds(backend)
            async with conn.transaction():
                await conn.execute(WRITE[schema], users, offsets, [PAYLOAD] * events)
            written = process_cpu_seconds(backend)
            await conn.execute(MARK[schema], users, offsets)
            marked = process_cpu_seconds(backend)
            if batch >= warm:
                write, mark = write + written - before, mark + marked - written
        return write / (batches * events) * 1e6, mark / (batches * events) * 1e6
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=70, help="events per transaction (a bet batch's size)")
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server (default: embedded, fsync on)")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {schema: [] for schema in SCHEMAS}
    with bench_database(args.database_url) as database_url:
        for run in range(args.runs):
            for schema in SCHEMAS:  # interleaved
                write, mark = asyncio.run(measure(database_url, schema, args.events, args.batches))
                results[schema].append((write, mark))
                print(f"run {run + 1}, {schema}: write {write:.1f} µs, mark {mark:.1f} µs, together {write + mark:.1f} "
                      "µs of PostgreSQL CPU per event")  # fmt: skip
    print(f"medians of {args.runs}, {args.events} events a transaction:")
    for schema, runs in results.items():
        write, mark = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        together = statistics.median(r[0] + r[1] for r in runs)
        print(f"  {schema}: write {write:.1f} µs, mark {mark:.1f} µs, together {together:.1f} µs per event")


if __name__ == "__main__":
    main()
