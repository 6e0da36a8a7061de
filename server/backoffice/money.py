"""Credits and debits by an operator, once per idempotency key (``POST /admin/api/users/{id}/adjust``,
``croupier credit --key``).

An adjustment is :meth:`server.ledger.Ledger.adjust` with the ref ``admin:<key>``: the ledger makes it once
per ref (a unique index, migration 0013), and its audit row is written in the same transaction. A repeated
key moves nothing and answers what the first request answered (from that row), with ``replayed``; the same
key for another user or amount is refused (``idempotency_conflict``). Keys share the ``adjust`` refs with
``croupier credit --batch`` (``<batch>:<user id>``): do not name a batch ``admin``.
"""

from __future__ import annotations

from typing import Any

from protocol.messages import MAX_AMOUNT

from ..db.transactions import Connection
from ..ledger import Ledger, WalletState
from . import audit
from .errors import Invalid


def valid_key(key: str) -> bool:
    """Whether ``key`` may be an idempotency key: 1-64 printable ASCII characters, no spaces."""
    return 0 < len(key) <= 64 and key.isascii() and key.isprintable() and " " not in key


def ledger_ref(key: str) -> str:
    """The ledger transaction ref of the adjustment made with idempotency key ``key``."""
    return f"admin:{key}"


async def adjust(ledger: Ledger, actor: str, user_id: int, amount: int, reason: str, key: str) -> dict[str, Any]:
    """Credit (``amount`` > 0) or debit ``user_id``'s wallet once per ``key``; ``{"user", "amount",
    "balance", "replayed"}``: ``balance`` is the wallet's right after the adjustment (for a repeated key,
    after the first one). Raises the ledger's refusals (no wallet, a debit over the balance, a key reused
    for something else)."""
    if not valid_key(key):
        raise Invalid("idempotency_key must be 1-64 printable ASCII characters, no spaces", "idempotency_key")
    if amount == 0 or abs(amount) > MAX_AMOUNT:
        raise Invalid(f"amount must be a non-zero integer from -{MAX_AMOUNT} to {MAX_AMOUNT}", "amount")
    answer: dict[str, Any] = {}

    async def record(conn: Connection, state: WalletState | None) -> None:
        answer.clear()  # a retried transaction runs this again
        if state is None:  # made before: its first answer
            answer.update(await audit.adjustment(conn, key) or {}, replayed=True)
            return
        after = {"user": user_id, "amount": amount, "balance": state.balance}
        await audit.record(conn, actor, "adjust", f"user:{user_id}", reason, before={"balance": state.balance - amount},
                           after=after, idempotency_key=key)  # fmt: skip
        answer.update(after, replayed=False)

    state = await ledger.adjust(user_id, amount, reason=reason, ref=ledger_ref(key), also=record)
    if "balance" not in answer:  # made with this ref without an audit row (not by the back office)
        answer.update(user=user_id, amount=amount, balance=state.balance)
    return answer
