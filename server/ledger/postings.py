"""Postings: balanced sets of legs, written in bulk.

A :class:`Posting` is one ledger transaction: legs (account, amount) that sum to zero.
:class:`Transfers` is many two-leg transactions into one account, held in columns: the bet
batch's stakes (wallet -> house shard), built in bulk on the hot path. Both refuse at construction
what would not balance, and every leg the ledger writes comes from one of them (a posting's as
:class:`Legs`; transfers' made by PostgreSQL from their columns, both legs of each from one amount:
:func:`transfers_sql`), so no code path can write money that does not balance. ``croupier audit``
checks the same on the stored data: every transaction's legs sum to zero, every account's balance
is the sum of its legs, and every bet's stake transaction takes exactly its amount from the
bettor's wallet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..db.transactions import Connection

TXN_KINDS = frozenset({"bet", "payout", "refund", "deposit", "adjust", "welcome", "reversal"})


@dataclass(frozen=True, slots=True)
class Posting:
    """One ledger transaction of ``kind`` with ``legs`` summing to zero."""

    kind: str
    legs: tuple[tuple[int, int], ...]
    ref: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        # One plain loop: the bet batch builds a posting per stake on the hot path.
        if self.kind not in TXN_KINDS:
            raise ValueError(f"unknown ledger transaction kind {self.kind!r}")
        total = 0
        accounts: set[int] = set()
        for account, amount in self.legs:
            if amount == 0 or not isinstance(amount, int):
                raise ValueError("legs must be non-zero integers")
            total += amount
            accounts.add(account)
        if len(self.legs) < 2 or total != 0:
            raise ValueError(f"unbalanced posting: {self.legs}")
        if len(accounts) != len(self.legs):
            raise ValueError("an account appears twice in one posting")


def transfer(kind: str, source: int, target: int, amount: int, *, ref: str | None = None,
             reason: str | None = None) -> Posting:  # fmt: skip
    """A two-leg posting moving ``amount`` (> 0) from ``source`` to ``target``."""
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    return Posting(kind, ((source, -amount), (target, amount)), ref, reason)


@dataclass(slots=True)
class Legs:
    """The legs of postings as ``unnest`` reads them: one entry per leg."""

    txn_ids: list[int] = field(default_factory=list)
    accounts: list[int] = field(default_factory=list)
    amounts: list[int] = field(default_factory=list)

    def add(self, txn_id: int, posting: Posting) -> None:
        """Append the legs of ``posting``, written as ledger transaction ``txn_id``."""
        for account, amount in posting.legs:
            self.txn_ids.append(txn_id)
            self.accounts.append(account)
            self.amounts.append(amount)

    def changes(self) -> tuple[list[int], list[int], list[int]]:
        """(account ids in id order, net change of each, legs of each): the arrays of an ``UPDATE accounts``
        (an account's ``version`` moves once per leg)."""
        deltas: dict[int, int] = {}
        counts: dict[int, int] = {}
        for account, amount in zip(self.accounts, self.amounts, strict=True):
            deltas[account] = deltas.get(account, 0) + amount
            counts[account] = counts.get(account, 0) + 1
        accounts = sorted(deltas)
        return accounts, [deltas[a] for a in accounts], [counts[a] for a in accounts]


@dataclass(frozen=True, slots=True)
class Transfers:
    """Many two-leg ledger transactions of one ``kind`` into one ``target`` account, in columns:
    transaction ``txn_ids[i]`` moves ``amounts[i]`` (> 0) from ``sources[i]`` to ``target``.

    Each is balanced by construction (its legs are ``-amount`` and ``+amount``, made by PostgreSQL:
    :func:`transfers_sql`); the constructor refuses what would not be a transfer, as :class:`Posting`
    does. The columns are not copied.
    It exists for the bet batch's hot path: a :class:`Posting` per stake (a frozen object and its
    legs per bet) added about 1.3 µs per bet to the batch's Python work (measured with a stub
    connection, 100 bets a batch: 5.3-5.5 µs a bet against 3.8-3.9 µs; with this, 3.9-4.1 µs),
    about 2% of the server CPU an acknowledged bet costs (docs/performance.md).
    """

    kind: str
    target: int
    txn_ids: list[int]
    sources: list[int]
    amounts: list[int]

    def __post_init__(self) -> None:
        if self.kind not in TXN_KINDS:
            raise ValueError(f"unknown ledger transaction kind {self.kind!r}")
        if not len(self.txn_ids) == len(self.sources) == len(self.amounts):
            raise ValueError("transfers need one transaction id, source and amount each")
        if self.amounts and (min(self.amounts) <= 0 or not set(map(type, self.amounts)) <= {int}):
            raise ValueError("a transfer moves a positive integer amount")
        if self.target in self.sources:
            raise ValueError("an account appears twice in one posting")


def transfers_sql(txn_ids: str, sources: str, amounts: str, target: str) -> str:
    """Common table expressions writing :class:`Transfers` given by placeholder (``"$1"``): the columns
    ``txn_ids``, ``sources`` and ``amounts`` as ``bigint[]`` parameters and ``target`` as a ``bigint`` one.

    PostgreSQL makes the legs from the columns: every transfer's source leg (``-amount``), then every target
    leg (``+amount``), each transaction balanced by construction; then it moves each account by exactly its
    legs (``version`` once per leg). Sent as columns, a batch's stakes are two arrays of its length to encode
    instead of three of twice its length (docs/performance.md, "Issue 20: the bet batch's legs in SQL,
    per-bet values as structs"). Build the :class:`Transfers` first: its checks are what keeps the columns
    balanced (positive amounts, the target not among the sources). For a statement that writes the
    transactions too: ``WITH {transfers_sql(...)}, ... <its own statement>``."""
    return f"""transfer_legs AS (
    INSERT INTO ledger_legs (txn_id, account_id, amount)
    SELECT t, s, -a FROM unnest({txn_ids}::bigint[], {sources}::bigint[], {amounts}::bigint[]) AS x(t, s, a)
    UNION ALL
    SELECT t, {target}::bigint, a FROM unnest({txn_ids}::bigint[], {amounts}::bigint[]) AS x(t, a)
), transfer_balances AS (
    UPDATE accounts SET balance = accounts.balance + d.delta, version = accounts.version + d.legs
    FROM (SELECT s, -sum(a)::bigint, count(*) FROM unnest({sources}::bigint[], {amounts}::bigint[]) AS x(s, a)
          GROUP BY s
          UNION ALL
          SELECT {target}::bigint, sum(a)::bigint, count(*) FROM unnest({amounts}::bigint[]) AS x(a)
          HAVING count(*) > 0) AS d(account_id, delta, legs)
    WHERE accounts.id = d.account_id
)"""  # noqa: S608 - placeholders only


_POST = """
WITH txns AS (
    INSERT INTO ledger_txns (id, kind, ref, reason)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
), legs AS (
    INSERT INTO ledger_legs (txn_id, account_id, amount)
    SELECT * FROM unnest($5::bigint[], $6::bigint[], $7::bigint[])
)
UPDATE accounts SET balance = accounts.balance + d.delta, version = accounts.version + d.n
FROM unnest($8::bigint[], $9::bigint[], $10::bigint[]) AS d(account_id, delta, n)
WHERE accounts.id = d.account_id
RETURNING accounts.id, accounts.balance, accounts.version
"""


async def post(conn: Connection, postings: list[Posting]) -> tuple[list[int], dict[int, tuple[int, int]]]:
    """Write ``postings`` and apply them to balances, in the caller's transaction.

    Returns the new transaction ids (in order) and each touched account's final
    (balance, version). A wallet that would go negative raises ``CheckViolationError``.
    Accounts are locked in id order first, the lock order of every ledger writer (system
    accounts have the lowest ids), so concurrent writers cannot deadlock each other.
    """
    if not postings:
        return [], {}
    ids: list[int] = await conn.fetchval(
        "SELECT array_agg(nextval('ledger_txns_id_seq')) FROM generate_series(1, $1)", len(postings)
    )
    legs = Legs()
    for txn_id, posting in zip(ids, postings, strict=True):
        legs.add(txn_id, posting)
    accounts, deltas, counts = legs.changes()
    await conn.execute("SELECT 1 FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", accounts)
    rows = await conn.fetch(
        _POST,
        ids,
        [p.kind for p in postings],
        [p.ref for p in postings],
        [p.reason for p in postings],
        legs.txn_ids,
        legs.accounts,
        legs.amounts,
        accounts,
        deltas,
        counts,
    )
    return ids, {row["id"]: (row["balance"], row["version"]) for row in rows}
