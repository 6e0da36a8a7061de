"""Placing bets with group commit: concurrent bets share one PostgreSQL transaction.

Each bet still gets its own answer: accepted (with the wallet balance right after it),
``InsufficientFunds``, ``IdempotencyConflict``, or a replay of the bet first placed with
the same (user, key). One bet's refusal never fails its neighbours. The answer is given only
after the transaction committed, so an acknowledged bet is durable.

Correctness under concurrency rests on row locks: a batch locks its house account and the
wallets of its users in id order (``FOR UPDATE``) before reading balances or idempotency
keys, so batches touching the same user, on this node or another, run one after the other
and see each other's committed bets.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import orjson

from ..db.groupcommit import GroupCommit
from .errors import BettingClosed, ExposureCapReached, IdempotencyConflict, InsufficientFunds, LedgerError
from .events import UserEvent, balance_event
from .transactions import RETRYABLE_SQLSTATES, Connection, in_transaction


@dataclass(frozen=True, slots=True)
class BetRequest:
    """A validated bet: the ledger checks only money and idempotency."""

    user_id: int
    game: str
    round_id: int
    amount: int
    params: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    exposure: int = 0
    """What the bet adds to its round's exposure: the most it can pay."""
    exposure_cap: int | None = None
    """The most the round's bets may add up to (None: no cap): a bet that would pass it is refused."""

    def same_bet(self, game: str, round_id: int, amount: int, params: dict[str, Any]) -> bool:
        return (self.game, self.round_id, self.amount, self.params) == (game, round_id, amount, params)


@dataclass(frozen=True, slots=True)
class PlacedBet:
    """A committed bet, with the wallet balance and version right after its stake was taken."""

    bet_id: int
    user_id: int
    game: str
    round_id: int
    amount: int
    params: dict[str, Any]
    status: str
    balance: int
    version: int
    replayed: bool = False
    """True when this is the answer to a retry of an already placed bet (nothing was charged now)."""
    event: UserEvent | None = None
    """The ``balance`` push this bet wrote to the outbox (None for a replay): announced after commit."""


BetOutcome = PlacedBet | LedgerError

# Statement 1 takes the locks: a shared advisory lock per round (key: minus the round id), then the house
# shard and the wallets, in id order.
_LOCK = """
WITH round_locks AS (SELECT count(pg_advisory_xact_lock_shared(-r)) AS held FROM unnest($3::bigint[]) AS r)
SELECT a.id, a.user_id, a.balance, a.version FROM accounts a CROSS JOIN round_locks
WHERE a.user_id = ANY($1::bigint[]) OR a.id = $2
ORDER BY a.id FOR UPDATE OF a
"""

# Statement 2 (a fresh snapshot, taken after the locks): which rounds still take bets, the exposure of the
# rounds whose game caps it (their rows locked: batches adding to one capped round take turns), ids for the
# batch, and the bets already placed with the batch's idempotency keys.
_READ = """
SELECT array(SELECT id FROM rounds WHERE id = ANY($1::bigint[]) AND phase = 'betting') AS open_rounds,
       (SELECT coalesce(json_object_agg(c.id, c.exposure), '{}') FROM (
            SELECT id, exposure FROM rounds WHERE id = ANY($5::bigint[]) ORDER BY id FOR UPDATE) AS c) AS exposures,
       array(SELECT nextval('bets_id_seq') FROM generate_series(1, $2)) AS bet_ids,
       array(SELECT nextval('ledger_txns_id_seq') FROM generate_series(1, $2)) AS txn_ids,
       (SELECT coalesce(json_agg(json_build_object(
                'id', b.id, 'user_id', b.user_id, 'game', b.game, 'round_id', b.round_id, 'amount', b.amount,
                'params', b.params, 'idem_key', b.idem_key, 'status', b.status, 'balance_after', b.balance_after,
                'version_after', b.version_after)), '[]')
        FROM bets b JOIN unnest($3::bigint[], $4::text[]) AS k(user_id, idem_key)
          ON b.user_id = k.user_id AND b.idem_key = k.idem_key) AS prior
"""

_PRIOR = """
SELECT b.id, b.user_id, b.game, b.round_id, b.amount, b.params, b.idem_key, b.status, b.balance_after, b.version_after
FROM bets b JOIN unnest($1::bigint[], $2::text[]) AS k(user_id, idem_key)
  ON b.user_id = k.user_id AND b.idem_key = k.idem_key
"""

_WRITE = """
WITH txns AS (
    INSERT INTO ledger_txns (id, kind, ref)
    SELECT t, 'bet', b::text FROM unnest($1::bigint[], $2::bigint[]) AS x(t, b)
), legs AS (
    INSERT INTO ledger_legs (txn_id, account_id, amount)
    SELECT t, w, -a FROM unnest($1::bigint[], $3::bigint[], $4::bigint[]) AS x(t, w, a)
    UNION ALL
    SELECT t, $5::bigint, a FROM unnest($1::bigint[], $4::bigint[]) AS y(t, a)
), wallets AS (
    UPDATE accounts SET balance = d.balance, version = d.version
    FROM unnest($11::bigint[], $12::bigint[], $13::bigint[]) AS d(id, balance, version)
    WHERE accounts.id = d.id
), house AS (
    UPDATE accounts SET balance = balance + $14::bigint, version = version + cardinality($1::bigint[])
    WHERE id = $5
), events AS (
    INSERT INTO user_events (user_id, "offset", payload) SELECT * FROM unnest($6::bigint[], $16::bigint[], $17::bytea[])
), exposures AS (
    UPDATE rounds SET exposure = e.exposure FROM unnest($18::bigint[], $19::bigint[]) AS e(id, exposure)
    WHERE rounds.id = e.id
)
INSERT INTO bets (id, user_id, game, round_id, amount, params, idem_key, balance_after, version_after, stake_txn)
SELECT * FROM unnest($2::bigint[], $6::bigint[], $7::text[], $8::bigint[], $4::bigint[], $9::jsonb[], $10::text[],
                     $15::bigint[], $16::bigint[], $1::bigint[])
"""


async def commit_bets(conn: Connection, batch: list[BetRequest], house: int, epoch: str) -> list[BetOutcome]:
    """Decide and write a batch of bets in the caller's transaction; one outcome per request, in order.

    Each accepted bet also writes its ``balance`` event (in ``epoch``) to the outbox."""
    round_ids = sorted({r.round_id for r in batch})
    # The shared advisory lock per round is held to commit: the round engine takes it exclusively to close
    # betting, so it waits for batches in flight, and a batch after it sees the round closed. A bet can never
    # land in a round that stopped betting. (Advisory locks live in memory: no tuple is written for them.)
    wallets: dict[int, list[int]] = {}  # user -> [account id, balance, version]
    for row in await conn.fetch(_LOCK, sorted({r.user_id for r in batch}), house, round_ids):
        if row["user_id"] is not None:
            wallets[row["user_id"]] = [row["id"], row["balance"], row["version"]]
    keyed = [r for r in batch if r.key is not None]
    capped = sorted({r.round_id for r in batch if r.exposure_cap is not None})
    read = await conn.fetchrow(_READ, round_ids, len(batch), [r.user_id for r in keyed], [r.key for r in keyed],
                               capped)  # fmt: skip
    assert read is not None
    open_rounds = set(read["open_rounds"])
    exposures = {int(round_id): value for round_id, value in orjson.loads(read["exposures"]).items()}
    prior: dict[tuple[int, str], Mapping[str, Any]] = {
        (row["user_id"], row["idem_key"]): row for row in orjson.loads(read["prior"])
    }

    outcomes: list[BetOutcome | int | None] = [None] * len(batch)  # int: same as that earlier index
    first_in_batch: dict[tuple[int, str], int] = {}
    accepted: list[tuple[int, BetRequest, int, int]] = []  # (index, request, balance, version)
    for index, request in enumerate(batch):
        if request.key is not None:
            identity = (request.user_id, request.key)
            earlier = prior.get(identity)
            if earlier is not None:
                outcomes[index] = _replay(request, earlier)
                continue
            if identity in first_in_batch:
                first = batch[first_in_batch[identity]]
                same = request.same_bet(first.game, first.round_id, first.amount, first.params)
                outcomes[index] = first_in_batch[identity] if same else _conflict(request)
                continue
        if request.round_id not in open_rounds:
            outcomes[index] = BettingClosed(f"round {request.round_id} of {request.game} is not taking bets")
            continue
        wallet = wallets.get(request.user_id)
        if wallet is None or wallet[1] < request.amount:
            available = 0 if wallet is None else wallet[1]
            outcomes[index] = InsufficientFunds(f"balance {available} is less than the bet amount {request.amount}")
            continue
        if request.exposure_cap is not None:
            exposure = exposures.get(request.round_id, 0) + request.exposure
            if exposure > request.exposure_cap:
                outcomes[index] = ExposureCapReached(
                    f"round {request.round_id} of {request.game} is full: with this bet its winners could be paid "
                    f"{exposure}, over the round's cap of {request.exposure_cap}; bet less or in the next round"
                )
                continue
            exposures[request.round_id] = exposure
        wallet[1] -= request.amount
        wallet[2] += 1
        accepted.append((index, request, wallet[1], wallet[2]))
        if request.key is not None:
            first_in_batch[(request.user_id, request.key)] = index

    if accepted:
        bet_ids, txn_ids = read["bet_ids"][: len(accepted)], read["txn_ids"][: len(accepted)]
        events = [balance_event(r.user_id, version, epoch, balance=balance, delta=-r.amount, reason="bet", ref=bet_id)
                  for (_, r, balance, version), bet_id in zip(accepted, bet_ids, strict=True)]  # fmt: skip
        touched = sorted({wallets[r.user_id][0]: r.user_id for _, r, _, _ in accepted}.items())
        await conn.execute(
            _WRITE,
            txn_ids,
            bet_ids,
            [wallets[r.user_id][0] for _, r, _, _ in accepted],
            [r.amount for _, r, _, _ in accepted],
            house,
            [r.user_id for _, r, _, _ in accepted],
            [r.game for _, r, _, _ in accepted],
            [r.round_id for _, r, _, _ in accepted],
            [orjson.dumps(r.params).decode() for _, r, _, _ in accepted],
            [r.key for _, r, _, _ in accepted],
            [account for account, _ in touched],
            [wallets[user][1] for _, user in touched],
            [wallets[user][2] for _, user in touched],
            sum(r.amount for _, r, _, _ in accepted),
            [balance for _, _, balance, _ in accepted],
            [version for _, _, _, version in accepted],
            [event.payload for event in events],
            list(exposures),
            list(exposures.values()),
        )
        for (index, request, balance, version), bet_id, event in zip(accepted, bet_ids, events, strict=True):
            outcomes[index] = PlacedBet(
                bet_id, request.user_id, request.game, request.round_id, request.amount, request.params,
                "accepted", balance, version, event=event,
            )  # fmt: skip

    final: list[BetOutcome] = []
    for outcome in outcomes:
        if isinstance(outcome, int):
            original = outcomes[outcome]
            assert isinstance(original, PlacedBet)
            final.append(replace(original, replayed=True, event=None))
        else:
            assert outcome is not None
            final.append(outcome)
    return final


async def find_replay(conn: Connection, request: BetRequest) -> BetOutcome | None:
    """The answer to a retry of ``request`` if a bet with its (user, key) exists: a replay of that bet,
    or an :class:`IdempotencyConflict` when the key was used for other content. None: no such bet."""
    if request.key is None:
        return None
    rows = await conn.fetch(_PRIOR, [request.user_id], [request.key])
    return _replay(request, rows[0]) if rows else None


def _replay(request: BetRequest, row: Mapping[str, Any]) -> BetOutcome:
    params = row["params"] if isinstance(row["params"], dict) else orjson.loads(row["params"])
    if not request.same_bet(row["game"], row["round_id"], row["amount"], params):
        return _conflict(request)
    return PlacedBet(
        row["id"], row["user_id"], row["game"], row["round_id"], row["amount"], params, row["status"],
        row["balance_after"], row["version_after"], replayed=True,
    )  # fmt: skip


def _conflict(request: BetRequest) -> IdempotencyConflict:
    return IdempotencyConflict(f"key {request.key!r} was already used for a different bet")


class BetBatcher:
    """Coalesces concurrent :meth:`place` calls into shared transactions (see
    :class:`~server.db.groupcommit.GroupCommit`): each batch commits on its own connection and
    house shard, and its ``balance`` events are announced once the bettors have their acks.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        house_accounts: list[int],
        *,
        max_batch: int = 500,
        max_wait: float = 0.002,
        concurrency: int = 2,
        epoch: str = "",
        announce: Callable[[list[UserEvent]], None] | None = None,
    ) -> None:
        self._pool = pool
        self._epoch = epoch
        self._announce = announce
        self._houses = itertools.cycle(house_accounts)
        self._group: GroupCommit[BetRequest, PlacedBet] = GroupCommit(
            self._commit,
            name="bet-batcher",
            max_batch=max_batch,
            max_wait=max_wait,
            concurrency=concurrency,
            shutdown_error=lambda: LedgerError("the node is shutting down; retry with the same key"),
            expected=(LedgerError,),
            after=self._announce_events,
        )

    @property
    def batches(self) -> int:
        """Bet batches committed so far."""
        return self._group.batches

    def start(self) -> None:
        self._group.start()

    async def close(self) -> None:
        """Stop taking batches and wait for those in flight to commit."""
        await self._group.close()

    async def place(self, request: BetRequest) -> PlacedBet:
        """Place one bet; returns after its transaction committed, or raises a :class:`LedgerError`."""
        return await self._group.submit(request)

    async def _commit(self, requests: list[BetRequest]) -> list[BetOutcome]:
        house = next(self._houses)
        # 23505: a key inserted by a transaction that committed after our read; the retry replays it.
        return await in_transaction(
            self._pool,
            lambda conn: commit_bets(conn, requests, house, self._epoch),
            retry_sqlstates=RETRYABLE_SQLSTATES | {"23505"},
        )

    def _announce_events(self, outcomes: Sequence[PlacedBet | Exception]) -> None:
        # After the replies were released: a socket sees bet_ok, then balance.
        if self._announce is not None:
            events = [o.event for o in outcomes if isinstance(o, PlacedBet) and o.event is not None]
            if events:
                self._announce(events)
