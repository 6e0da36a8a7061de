"""Risk flags for the operator: players to look at, never automatic bans.

``croupier risk report`` (:mod:`.commands`) runs every detector over a window (:mod:`.report`) and writes
what they found to ``risk_flags`` (:mod:`.flags`), one row per user, kind and window. Each detector is one
module: the SQL that reads its rows and a pure function from those rows to flags.

- :mod:`.velocity`: bets a minute, deposits an hour, far above the population (:mod:`.population`);
- :mod:`.luck`: winning more than the games' odds allow over the bets made (a z-score from each bet's
  :meth:`~server.rounds.handler.RoundHandler.return_moments`);
- :mod:`.cycling`: Stars payments refunded again and again, or soon after their chips were played;
- :mod:`.farming`: many new accounts claiming the welcome credit from one client address (the addresses
  recorded at sign-in by :mod:`.addresses`);
- :mod:`.sides`: accounts betting both sides of the same rounds, round after round.

docs/operations.md ("Risk flags") gives each rule, its thresholds and what to do with a flag.
"""

from __future__ import annotations

from .addresses import SigninAddresses
from .flags import Flag, FlagKind, StoredFlag, Window, list_flags, mark_reviewed, store_flags
from .report import Report, find_flags, run_report

__all__ = [
    "Flag",
    "FlagKind",
    "Report",
    "SigninAddresses",
    "StoredFlag",
    "Window",
    "find_flags",
    "list_flags",
    "mark_reviewed",
    "run_report",
    "store_flags",
]
