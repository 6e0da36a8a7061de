"""Placing bets with group commit: concurrent bets share one PostgreSQL transaction.

Each bet still gets its own answer: accepted (with the wallet balance right after it),
``InsufficientFunds``, ``IdempotencyConflict``, or a replay of the bet first placed with
the same (user, key). One bet's refusal never fails its neighbours. The answer is given only
after the transaction committed, so an acknowledged bet is durable.

Correctness under concurrency rests on locks: a batch takes the betting lock of its rounds
(shared, :mod:`server.db.roundlock`: a round that stopped betting takes no bet), then locks its
house account and the wallets of its users in id order (``FOR UPDATE``) before reading balances
or idempotency keys, so batches touching the same user, on this node or another, run one after
the other and see each other's committed bets.

A batch is three statements: the locks, one read, and one write of every accepted bet (the stakes
built as :class:`~server.ledger.postings.Transfers`, whose legs the write makes from their columns and applies).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import orjson

from ..db.groupcommit import GroupCommit
from ..db.roundlock import HOLD_BETTING_OPEN
from ..db.transactions import RETRYABLE_SQLSTATES, Connection, in_transaction
from ..metrics import BETS, LEDGER_ERRORS
from ..players.limits import Calendar
from ..players.limitstore import BATCH_LIMITS, count_stakes, read_batch_limits
from .batching import BatchOptions
from .errors import (
    BettingClosed,
    ExposureCapReached,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerError,
    LedgerUnavailable,
    PlayerLimitReached,
)
from .events import UserEvent, balance_event
from .exposure import ExposureBudget
from .outbox import insert_events_sql
from .postings import Transfers, transfers_sql


class BetRequest(msgspec.Struct, frozen=True):
    """A validated bet: the ledger checks only money and idempotency. (A struct: one per bet, see
    :class:`~server.ledger.events.UserEvent`.)"""

    user_id: int
    game: str
    round_id: int
    amount: int
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    key: str | None = None
    exposure: int = 0
    """What the bet adds to its round's exposure: the most it can pay."""
    exposure_cap: int | None = None
    """The most the round's bets may add up to (None: no cap): a bet that would pass it is refused."""
    client_seed: str | None = None
    """The player's seed for the salt of a chain whose first round this is (docs/fairness.md), stored with
    the bet. Not part of what a retry with the same key must repeat."""

    def same_bet(self, game: str, round_id: int, amount: int, params: dict[str, Any]) -> bool:
        return (self.game, self.round_id, self.amount, self.params) == (game, round_id, amount, params)


class PlacedBet(msgspec.Struct, frozen=True):
    """A committed bet, with the wallet balance and version right after its stake was taken. (A struct: one
    per bet, see :class:`~server.ledger.events.UserEvent`.)"""

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


@dataclass(slots=True)
class _Wallet:
    """A bettor's wallet as the batch locked it; ``balance`` and ``version`` move as its bets are accepted."""

    account_id: int
    balance: int
    version: int


# Statement 1 takes the locks: the betting lock of each round, shared (see server/db/roundlock.py), then the house
# shard and the wallets, in id order.
_LOCK = f"""
WITH round_locks AS ({HOLD_BETTING_OPEN})
SELECT a.id, a.user_id, a.balance, a.version, a.limited FROM accounts a CROSS JOIN round_locks
WHERE a.user_id = ANY($2::bigint[]) OR a.id = $3
ORDER BY a.id FOR UPDATE OF a
"""  # noqa: S608 - composed of constant SQL, no data

# Statement 2 (a fresh snapshot, taken after the locks): which rounds still take bets, ids for the batch, and
# the bets already placed with the batch's idempotency keys. (Then, only if the batch holds players whose wallets
# are flagged `limited`, their limits: server/players/limitstore.py's BATCH_LIMITS.)
# The keys are looked up one probe of the unique (user, key) index each, whatever the plan: a LATERAL subquery
# with LIMIT is never flattened into a join. As a join, the generic plan PostgreSQL cached while `bets` was small
# hashed the keys and scanned the whole table on every batch after (docs/performance.md, 2026-12-04).
_READ = """
SELECT array(SELECT id FROM rounds WHERE id = ANY($1::bigint[]) AND phase = 'betting') AS open_rounds,
       array(SELECT nextval('bets_id_seq') FROM generate_series(1, $2)) AS bet_ids,
       array(SELECT nextval('ledger_txns_id_seq') FROM generate_series(1, $2)) AS txn_ids,
       (SELECT coalesce(json_agg(json_build_object(
                'id', b.id, 'user_id', b.user_id, 'game', b.game, 'round_id', b.round_id, 'amount', b.amount,
                'params', b.params, 'idem_key', b.idem_key, 'status', b.status, 'balance_after', b.balance_after,
                'version_after', b.version_after)), '[]')
        FROM unnest($3::bigint[], $4::text[]) AS k(user_id, idem_key)
        CROSS JOIN LATERAL (SELECT * FROM bets WHERE bets.user_id = k.user_id AND bets.idem_key = k.idem_key
                            LIMIT 1) AS b) AS prior
"""

_PRIOR = """
SELECT b.id, b.user_id, b.game, b.round_id, b.amount, b.params, b.idem_key, b.status, b.balance_after, b.version_after
FROM unnest($1::bigint[], $2::text[]) AS k(user_id, idem_key)
CROSS JOIN LATERAL (SELECT * FROM bets WHERE bets.user_id = k.user_id AND bets.idem_key = k.idem_key LIMIT 1) AS b
"""

# Statement 3 writes the _AcceptedBets: the stakes' ledger transactions (kind 'bet', ref the bet id), their legs and
# the accounts they move (made from the stakes' columns: server/ledger/postings.py), the bets, and their balance
# events into the outbox.
_WRITE = f"""
WITH txns AS (
    INSERT INTO ledger_txns (id, kind, ref) SELECT t, 'bet', b::text FROM unnest($1::bigint[], $2::bigint[]) AS x(t, b)
), {transfers_sql("$1", "$3", "$4", "$5")}, {insert_events_sql("$6", "$12", "$13")}
INSERT INTO bets (id, user_id, game, round_id, amount, params, idem_key, balance_after, version_after, stake_txn,
                  client_seed)
SELECT * FROM unnest($2::bigint[], $6::bigint[], $7::text[], $8::bigint[], $4::bigint[], $9::jsonb[], $10::text[],
                     $11::bigint[], $12::bigint[], $1::bigint[], $14::text[])
"""  # noqa: S608 - composed of constant SQL, no data


@dataclass(slots=True)
class _AcceptedBets:
    """The accepted bets of a batch, gathered as they are decided into the parallel arrays :data:`_WRITE`
    reads (one entry per bet; the comments give each field's parameter). ``wallets``, ``amounts`` and the
    house shard are the stakes (:class:`Transfers`, ``$1`` and ``$3``-``$5``)."""

    txn_ids: list[int] = field(default_factory=list)  # $1
    bet_ids: list[int] = field(default_factory=list)  # $2
    wallets: list[int] = field(default_factory=list)  # $3: the account each stake comes from
    amounts: list[int] = field(default_factory=list)  # $4
    user_ids: list[int] = field(default_factory=list)  # $6
    games: list[str] = field(default_factory=list)  # $7
    round_ids: list[int] = field(default_factory=list)  # $8
    params: list[str] = field(default_factory=list)  # $9
    keys: list[str | None] = field(default_factory=list)  # $10
    balances: list[int] = field(default_factory=list)  # $11
    versions: list[int] = field(default_factory=list)  # $12: also the events' offsets
    payloads: list[bytes] = field(default_factory=list)  # $13
    client_seeds: list[str | None] = field(default_factory=list)  # $14

    def add(self, bet: PlacedBet, key: str | None, wallet: int, txn_id: int, client_seed: str | None = None) -> None:
        """An accepted ``bet`` (with its ``balance`` event), its stake taken from account ``wallet`` in ledger
        transaction ``txn_id``."""
        assert bet.event is not None
        self.txn_ids.append(txn_id)
        self.bet_ids.append(bet.bet_id)
        self.user_ids.append(bet.user_id)
        self.games.append(bet.game)
        self.round_ids.append(bet.round_id)
        self.amounts.append(bet.amount)
        self.params.append(orjson.dumps(bet.params).decode())
        self.keys.append(key)
        self.balances.append(bet.balance)
        self.versions.append(bet.version)
        self.payloads.append(bet.event.payload)
        self.client_seeds.append(client_seed)
        self.wallets.append(wallet)

    def arguments(self, house: int) -> tuple[object, ...]:
        """The parameters of :data:`_WRITE`, the stakes going to ``house``."""
        stakes = Transfers("bet", house, self.txn_ids, self.wallets, self.amounts)  # refuses what would not balance
        return (
            stakes.txn_ids,
            self.bet_ids,
            stakes.sources,
            stakes.amounts,
            stakes.target,
            self.user_ids,
            self.games,
            self.round_ids,
            self.params,
            self.keys,
            self.balances,
            self.versions,
            self.payloads,
            self.client_seeds,
        )


async def commit_bets(conn: Connection, batch: list[BetRequest], house: int, epoch: str,
                      allowance: dict[int, int] | None = None, calendar: Calendar | None = None,
                      now: dt.datetime | None = None) -> list[BetOutcome]:  # fmt: skip
    """Decide and write a batch of bets in the caller's transaction; one outcome per request, in order.

    Each accepted bet also writes its ``balance`` event (in ``epoch``) to the outbox. ``allowance`` is the
    exposure this batch may add to each capped round (see :mod:`server.ledger.exposure`); it is spent as
    bets are accepted. The players' own limits and exclusions (:mod:`server.players.limits`, periods of
    ``calendar`` at ``now``) are checked with their wallets locked, and their stakes counted."""
    allowance = {} if allowance is None else allowance
    calendar = calendar or Calendar()
    now = now or dt.datetime.now(dt.UTC)
    round_ids = sorted({r.round_id for r in batch})
    # The betting lock of each round is held shared to commit (server/db/roundlock.py): closing betting takes it
    # exclusively, so it waits for batches in flight, and a batch after it sees the round closed.
    wallets: dict[int, _Wallet] = {}
    flagged: list[int] = []  # users whose wallets say they set a limit or an exclusion
    for row in await conn.fetch(_LOCK, round_ids, sorted({r.user_id for r in batch}), house):
        if row["user_id"] is not None:
            wallets[row["user_id"]] = _Wallet(row["id"], row["balance"], row["version"])
            if row["limited"]:
                flagged.append(row["user_id"])
    keyed = [r for r in batch if r.key is not None]
    read = await conn.fetchrow(_READ, round_ids, len(batch), [r.user_id for r in keyed], [r.key for r in keyed])
    assert read is not None
    limited = read_batch_limits(await conn.fetchval(BATCH_LIMITS, flagged)) if flagged else {}
    counted: list[tuple[int, int]] = []  # (user, stake) of accepted bets whose users' usage is kept
    open_rounds = set(read["open_rounds"])
    prior: dict[tuple[int, str], Mapping[str, Any]] = {
        (row["user_id"], row["idem_key"]): row for row in orjson.loads(read["prior"])
    }
    bet_ids, txn_ids = read["bet_ids"], read["txn_ids"]

    outcomes: list[BetOutcome] = []
    accepted = _AcceptedBets()
    accepted_keys: dict[tuple[int, str], PlacedBet] = {}  # (user, key) -> the bet accepted with it in this batch
    for request in batch:
        identity = None if request.key is None else (request.user_id, request.key)
        if identity is not None:
            earlier = prior.get(identity)
            if earlier is not None:
                outcomes.append(_replay(request, earlier))
                continue
            first = accepted_keys.get(identity)
            if first is not None:  # a retry within the batch: answered like a retry after it
                same = request.same_bet(first.game, first.round_id, first.amount, first.params)
                answer = msgspec.structs.replace(first, replayed=True, event=None) if same else _conflict(request)
                outcomes.append(answer)
                continue
        if request.round_id not in open_rounds:
            outcomes.append(BettingClosed(f"round {request.round_id} of {request.game} is not taking bets"))
            continue
        player = limited.get(request.user_id)
        if player is not None:
            refusal = player.refuse_bet(request.amount, now, calendar)
            if refusal is not None:
                outcomes.append(PlayerLimitReached(refusal.code, refusal.message, refusal.resets_at))
                continue
        wallet = wallets.get(request.user_id)
        if wallet is None or wallet.balance < request.amount:
            available = 0 if wallet is None else wallet.balance
            outcomes.append(InsufficientFunds(f"balance {available} is less than the bet amount {request.amount}"))
            continue
        if request.exposure_cap is not None:
            left = allowance.get(request.round_id, 0)
            if request.exposure > left:
                outcomes.append(_round_full(request))
                continue
            allowance[request.round_id] = left - request.exposure
        bet_id, txn_id = bet_ids[len(accepted.bet_ids)], txn_ids[len(accepted.bet_ids)]
        wallet.balance -= request.amount
        wallet.version += 1
        event = balance_event(request.user_id, wallet.version, epoch, balance=wallet.balance, delta=-request.amount,
                              reason="bet", ref=bet_id)  # fmt: skip
        placed = PlacedBet(bet_id, request.user_id, request.game, request.round_id, request.amount, request.params,
                           "accepted", wallet.balance, wallet.version, event=event)  # fmt: skip
        accepted.add(placed, request.key, wallet.account_id, txn_id, request.client_seed)
        outcomes.append(placed)
        if player is not None and player.counts_usage:
            player.stake(request.amount, now, calendar)
            counted.append((request.user_id, request.amount))
        if identity is not None:
            accepted_keys[identity] = placed

    if accepted.bet_ids:
        await conn.execute(_WRITE, *accepted.arguments(house))
    if counted:
        await count_stakes(conn, counted, now, calendar)
    return outcomes


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


def _round_full(request: BetRequest) -> ExposureCapReached:
    return ExposureCapReached(
        f"round {request.round_id} of {request.game} is full: with this bet (it could pay {request.exposure}) its "
        f"winners could be paid more than the round's cap of {request.exposure_cap}; bet less or in the next round"
    )


class BetBatcher:
    """Coalesces concurrent :meth:`place` calls into shared transactions (see
    :class:`~server.db.groupcommit.GroupCommit`): each batch commits on its own connection and
    house shard, and its ``balance`` events are announced once the bettors have their acks.
    ``calendar``: the periods of the players' own limits (default UTC).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        house_accounts: list[int],
        *,
        batches: BatchOptions,
        epoch: str = "",
        announce: Callable[[list[UserEvent]], None] | None = None,
        calendar: Calendar | None = None,
    ) -> None:
        self._pool = pool
        self._epoch = epoch
        self._calendar = calendar or Calendar()
        self._announce = announce
        self._houses = itertools.cycle(house_accounts)
        self._exposure = ExposureBudget(pool)
        self._group: GroupCommit[BetRequest, PlacedBet] = GroupCommit(
            self._commit,
            name="bet-batcher",
            max_batch=batches.max_batch,
            max_wait=batches.max_wait,
            concurrency=batches.concurrency,
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
        taken = await self._take_exposure(requests)
        outcomes: list[BetOutcome] = []
        try:
            # 23505: a key inserted by a transaction that committed after our read; the retry replays it.
            outcomes = await in_transaction(
                self._pool,
                lambda conn: commit_bets(
                    conn,
                    requests,
                    house,
                    self._epoch,
                    dict(taken),  # each attempt afresh
                    self._calendar,
                    dt.datetime.now(dt.UTC),
                ),
                retry_sqlstates=RETRYABLE_SQLSTATES | {"23505"},
                unavailable=LedgerUnavailable,
            )
        finally:
            used: dict[int, int] = {}
            for request, outcome in zip(requests, outcomes, strict=False):  # none used when the batch failed
                if request.exposure_cap is not None and isinstance(outcome, PlacedBet) and not outcome.replayed:
                    used[request.round_id] = used.get(request.round_id, 0) + request.exposure
            for round_id, amount in taken.items():
                self._exposure.give_back(round_id, amount - used.get(round_id, 0))
        return outcomes

    async def _take_exposure(self, requests: list[BetRequest]) -> dict[int, int]:
        """What this batch may add to each capped round's exposure, taken from this node's shares."""
        need: dict[int, tuple[int, int]] = {}  # round -> (cap, exposure of the batch's bets on it)
        for request in requests:
            if request.exposure_cap is not None:
                _, total = need.get(request.round_id, (request.exposure_cap, 0))
                need[request.round_id] = (request.exposure_cap, total + request.exposure)
        return {round_id: await self._exposure.take(round_id, cap, total) for round_id, (cap, total) in need.items()}

    def _announce_events(self, outcomes: Sequence[PlacedBet | Exception]) -> None:
        # After the replies were released: a socket sees bet_ok, then balance.
        events = [o.event for o in outcomes if isinstance(o, PlacedBet) and o.event is not None]
        BETS.n += len(events)  # a replay carries no event: committed bets only
        for o in outcomes:
            if not isinstance(o, PlacedBet):
                LEDGER_ERRORS.of(o.code if isinstance(o, LedgerError) else "internal").n += 1
        if self._announce is not None and events:
            self._announce(events)
