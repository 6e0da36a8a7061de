"""The client addresses users sign in from (``signin_addresses``), recorded off the sign-in's path.

The welcome-credit farming detector (:mod:`.farming`) needs the address each new account signed in from.
The sign-in itself is group-committed (:mod:`server.ledger.signin`) and owes nothing to risk reports, so a
node hands each authenticated socket's address to :meth:`SigninAddresses.record`, which only appends to a
buffer in memory and returns: no I/O, no await, nothing that can fail an ``auth``. A task writes what
gathered once a second, in one statement (``ON CONFLICT DO NOTHING``: one row per user and address, the
first time seen). Pairs written lately are remembered and not written again (a returning player
reconnecting many times a day costs one row, ever). Best effort, bounded: when PostgreSQL does not answer,
the pairs wait for the next flush, and past ``max_pending`` new pairs are dropped (and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import OrderedDict

import asyncpg

from ..db import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

_RECORD = """
INSERT INTO signin_addresses (user_id, address)
SELECT * FROM unnest($1::bigint[], $2::inet[]) AS s(user_id, address)
ON CONFLICT (user_id, address) DO NOTHING
"""


class SigninAddresses:
    """Records (user, client address) pairs in ``signin_addresses``; :meth:`start` before, :meth:`close` after."""

    def __init__(self, pool: asyncpg.Pool, *, every: float = 1.0, max_pending: int = 10_000,
                 remember: int = 100_000) -> None:  # fmt: skip
        self._pool = pool
        self._every = every
        self._max_pending = max_pending
        self._remember = remember
        self._pending: dict[tuple[int, str], None] = {}
        self._written: OrderedDict[tuple[int, str], None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        """Pairs dropped because too many were waiting (PostgreSQL down for long)."""

    def record(self, user_id: int, address: str) -> None:
        """Note that ``user_id`` signed in from ``address`` (an IPv4 or IPv6 address; anything else, such as
        a Unix socket's path, is ignored). Never blocks, never raises."""
        try:
            text = str(ipaddress.ip_address(address))
        except ValueError:
            return
        pair = (user_id, text)
        if pair in self._written:
            self._written.move_to_end(pair)
            return
        if pair in self._pending:
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending[pair] = None

    def start(self) -> None:
        """Start writing what :meth:`record` gathers, every ``every`` seconds."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="signin-addresses")

    async def close(self) -> None:
        """Stop the task and write what is left (once; a failure is logged)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Write the pairs gathered so far, in one statement; return how many were written (0 when
        PostgreSQL did not answer: they wait for the next flush)."""
        if not self._pending:
            return 0
        batch = list(self._pending)
        self._pending.clear()
        try:
            await self._pool.execute(_RECORD, [user for user, _ in batch], [address for _, address in batch])
        except UNAVAILABLE_ERRORS as exc:
            log.warning("sign-in addresses not recorded now (%s); retried at the next flush", type(exc).__name__)
            for pair in batch[: self._max_pending - len(self._pending)]:
                self._pending[pair] = None
            return 0
        for pair in batch:
            self._written[pair] = None
        while len(self._written) > self._remember:
            self._written.popitem(last=False)
        return len(batch)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.flush()
            except Exception:  # a bad batch: logged, dropped; the next ones still go
                log.exception("could not record sign-in addresses")
