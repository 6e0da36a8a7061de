"""``croupier audit``: prove that no coin was created, lost or overdrawn.

Checks, each over the whole ledger:
- every ledger transaction's legs sum to zero, and every transaction has at least two legs;
- every account's balance equals the sum of its legs;
- no wallet is negative;
- the balances of all accounts sum to zero (money is conserved);
- every bet's stake transaction exists, takes exactly the bet's amount from the bettor's
  wallet, and every closed bet's payout matches its settlement transaction;
- no bet is still open in a round that was settled or voided;
- every deposit reversal takes back from a wallet at most what that wallet's deposit of the same
  ref credited.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..db.transactions import Connection

_CHECKS: list[tuple[str, str]] = [
    (
        "transactions whose legs do not sum to zero or have fewer than two legs",
        """SELECT t.id FROM ledger_txns t LEFT JOIN ledger_legs l ON l.txn_id = t.id
           GROUP BY t.id HAVING coalesce(sum(l.amount), 0) <> 0 OR count(l.txn_id) < 2""",
    ),
    (
        "legs of a transaction or an account that does not exist",
        """SELECT DISTINCT l.txn_id FROM ledger_legs l
           WHERE NOT EXISTS (SELECT FROM ledger_txns t WHERE t.id = l.txn_id)
              OR NOT EXISTS (SELECT FROM accounts a WHERE a.id = l.account_id)""",
    ),
    (
        "accounts whose balance differs from the sum of their legs",
        """SELECT a.id FROM accounts a LEFT JOIN ledger_legs l ON l.account_id = a.id
           GROUP BY a.id HAVING a.balance <> coalesce(sum(l.amount), 0)""",
    ),
    ("negative wallets", "SELECT id FROM accounts WHERE kind = 'wallet' AND balance < 0"),
    (
        "bets whose stake transaction does not take the bet amount from the bettor's wallet",
        """SELECT b.id FROM bets b
           LEFT JOIN accounts w ON w.user_id = b.user_id
           LEFT JOIN ledger_legs l ON l.txn_id = b.stake_txn AND l.account_id = w.id
           WHERE l.amount IS DISTINCT FROM -b.amount""",
    ),
    (
        "closed bets whose payout does not match their settlement transaction",
        """SELECT b.id FROM bets b
           LEFT JOIN accounts w ON w.user_id = b.user_id
           LEFT JOIN ledger_legs l ON l.txn_id = b.settle_txn AND l.account_id = w.id
           WHERE b.status <> 'accepted'
             AND (b.payout IS NULL OR coalesce(l.amount, 0) <> b.payout
                  OR (b.payout > 0) <> (b.settle_txn IS NOT NULL))""",
    ),
    (
        "bets still open in a round that is settled or voided (a stake taken and never settled)",
        """SELECT b.id FROM bets b JOIN rounds r ON r.id = b.round_id
           WHERE b.status = 'accepted' AND r.phase IN ('settled', 'voided')""",
    ),
    (
        "deposit reversals without a deposit of their ref, or taking back more than it credited",
        """SELECT r.id FROM ledger_txns r
           JOIN ledger_legs rl ON rl.txn_id = r.id AND rl.amount < 0
           LEFT JOIN ledger_txns d ON d.kind = 'deposit' AND d.ref = r.ref
           LEFT JOIN ledger_legs dl ON dl.txn_id = d.id AND dl.account_id = rl.account_id
           WHERE r.kind = 'reversal' AND (dl.amount IS NULL OR -rl.amount > dl.amount)""",
    ),
]


@dataclass
class AuditReport:
    """What the audit found; ``ok`` is true when nothing drifted."""

    transactions: int = 0
    accounts: int = 0
    bets: int = 0
    wallet_total: int = 0
    total: int = 0
    problems: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and self.total == 0

    def summary(self) -> str:
        lines = [
            f"ledger transactions: {self.transactions}",
            f"accounts: {self.accounts}, money held in wallets: {self.wallet_total}",
            f"bets: {self.bets}",
            f"sum of all balances: {self.total} ({'conserved' if self.total == 0 else 'NOT ZERO'})",
        ]
        for name, ids in self.problems.items():
            shown = ", ".join(str(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
            lines.append(f"DRIFT: {len(ids)} {name}: {shown}")
        lines.append("audit: OK" if self.ok else "audit: FAILED")
        return "\n".join(lines)


async def audit(conn: Connection) -> AuditReport:
    """Run every check in one repeatable-read snapshot."""
    report = AuditReport()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        report.transactions = await conn.fetchval("SELECT count(*) FROM ledger_txns")
        report.accounts = await conn.fetchval("SELECT count(*) FROM accounts")
        report.bets = await conn.fetchval("SELECT count(*) FROM bets")
        report.wallet_total = await conn.fetchval(
            "SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'wallet'"
        )
        report.total = await conn.fetchval("SELECT coalesce(sum(balance), 0) FROM accounts")
        for name, query in _CHECKS:
            ids = [row[0] for row in await conn.fetch(query)]
            if ids:
                report.problems[name] = ids
    return report
