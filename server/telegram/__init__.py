"""Telegram: the Bot API client, the Stars cashier and the bot's webhook.

- :mod:`.bot`: the aiogram ``Bot`` every Bot API call goes through (base URL, test environment);
- :mod:`.orders`: deposit orders in PostgreSQL and the rules they are checked by (limits, pre-checkout);
- :mod:`.updates`: Bot API updates already handled, for updates Telegram delivers again;
- :mod:`.cashier`: ``deposit`` → order and invoice link; pre-checkout answers; payments credited once;
- :mod:`.webhook`: ``POST /telegram/webhook``, authenticated by the secret token.

Data flows one way: the edge asks the cashier for invoices, the webhook hands updates to the
cashier, the cashier writes money through the ledger (whose outbox pushes ``balance`` to every node).
"""

from __future__ import annotations

from .bot import api_server, create_bot, redacted
from .cashier import Cashier, CashierOptions, DepositInvoice
from .errors import BotApiUnavailable, CashierError, CashierUnavailable, DepositRefused
from .orders import DepositLimits
from .webhook import PATH as WEBHOOK_PATH
from .webhook import TelegramWebhook

__all__ = [
    "WEBHOOK_PATH",
    "BotApiUnavailable",
    "Cashier",
    "CashierError",
    "CashierOptions",
    "CashierUnavailable",
    "DepositInvoice",
    "DepositLimits",
    "DepositRefused",
    "TelegramWebhook",
    "api_server",
    "create_bot",
    "redacted",
]
