"""Telegram: the Bot API client, the Stars cashier and the bot's webhook.

- :mod:`.bot`: the aiogram ``Bot`` every Bot API call goes through (base URL, test environment);
- :mod:`.orders`: deposit orders in PostgreSQL and the rules they are checked by (limits, pre-checkout);
- :mod:`.updates`: Bot API updates already handled, for updates Telegram delivers again;
- :mod:`.cashier`: ``deposit`` → order and invoice link; pre-checkout answers; payments credited once
  (:mod:`.payments`: group-committed);
- :mod:`.webhook`: ``POST /telegram/webhook``, authenticated by the secret token;
- :mod:`.notifications`: the notifications outbox, queued in the transaction of what it announces;
- :mod:`.recipients`: who the bot may message (``mark_reachable`` at /start or from initData at sign-in,
  unreachable after a 403); :mod:`.bigwins`: big wins queued in their settlement's transaction;
- :mod:`.templates`: the texts, per kind and language; :mod:`.announcements`: ``croupier notify``;
- :mod:`.floodcontrol`: Telegram's flood limits shared by every node; :mod:`.sender`: the sender;
- :mod:`.refunds`: refunded payments' deposits reversed once (shortfalls recorded, accounts flagged:
  :mod:`.restrictions`); :mod:`.reconcile`: Telegram's Star transactions against the ledger;
- :mod:`.botcommands`: /start, /balance, /paysupport, /terms; :mod:`.router`: where each update goes,
  for the webhook and :mod:`.polling` (``getUpdates`` for development, one node at a time);
- :mod:`.commands`: ``croupier stars …`` and ``croupier bot …``.

Data flows one way: the edge asks the cashier for invoices, the webhook hands updates to the
cashier, the cashier writes money through the ledger (whose outbox pushes ``balance`` to every node).
"""

from __future__ import annotations

from .bigwins import BigWins
from .bot import api_server, create_bot, redacted
from .botcommands import BotCommands, BotTexts
from .cashier import Cashier, CashierOptions, DepositInvoice
from .errors import BotApiUnavailable, CashierError, CashierUnavailable, DepositRefused
from .floodcontrol import FloodGate, FloodLimits, flood_gate_from_url
from .notifications import big_win_key, deposit_key, queue, refund_key
from .orders import DepositLimits
from .polling import PollingLease, UpdatePoller
from .recipients import Source, allowed_in_initdata, mark_reachable, mark_reachable_many, mark_unreachable
from .refunds import Refunds
from .router import UpdateRouter
from .sender import Sender, SenderOptions
from .templates import NotificationKind
from .webhook import PATH as WEBHOOK_PATH
from .webhook import TelegramWebhook

__all__ = [
    "WEBHOOK_PATH",
    "BigWins",
    "BotApiUnavailable",
    "BotCommands",
    "BotTexts",
    "Cashier",
    "CashierError",
    "CashierOptions",
    "CashierUnavailable",
    "DepositInvoice",
    "DepositLimits",
    "DepositRefused",
    "FloodGate",
    "FloodLimits",
    "NotificationKind",
    "PollingLease",
    "Refunds",
    "Sender",
    "SenderOptions",
    "Source",
    "TelegramWebhook",
    "UpdatePoller",
    "UpdateRouter",
    "allowed_in_initdata",
    "api_server",
    "big_win_key",
    "create_bot",
    "deposit_key",
    "flood_gate_from_url",
    "mark_reachable",
    "mark_reachable_many",
    "mark_unreachable",
    "queue",
    "redacted",
    "refund_key",
]
