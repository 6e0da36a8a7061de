"""Where each Bot API update goes: one router for the webhook (:mod:`.webhook`) and long polling (:mod:`.polling`).

- ``pre_checkout_query`` → :meth:`.cashier.Cashier.check_out` (answered at once);
- ``message.successful_payment`` → :meth:`.cashier.Cashier.paid` (credited once);
- ``message.refunded_payment`` → :meth:`.refunds.Refunds.refunded` (the deposit reversed once);
- a command in a private chat (``/start``, ``/balance``, ``/paysupport``, ``/terms``) →
  :meth:`.botcommands.BotCommands.answer`;
- anything else: nothing to do.

Each handler is idempotent by ``update_id`` (:mod:`.updates`). :meth:`UpdateRouter.handle` raises
:class:`~server.db.transactions.DatabaseUnavailable` or :class:`~.errors.BotApiUnavailable` when the
update could not be handled now and nothing was committed: the webhook answers 503 (Telegram delivers
it again), the poller does not confirm it (``getUpdates`` returns it again).
"""

from __future__ import annotations

from aiogram.types import Update

from .botcommands import BotCommands, command_of
from .cashier import Cashier
from .refunds import Refunds


class UpdateRouter:
    """Hands updates to the cashier, the refunds and the bot's commands."""

    def __init__(self, cashier: Cashier, refunds: Refunds, commands: BotCommands) -> None:
        self._cashier = cashier
        self._refunds = refunds
        self._commands = commands

    async def handle(self, update: Update) -> None:
        """Handle one update (parsed by aiogram with the bot in its context): see the module's docstring."""
        if update.pre_checkout_query is not None:
            await self._cashier.check_out(update.update_id, update.pre_checkout_query)
            return
        message = update.message
        if message is None:
            return
        if message.successful_payment is not None:
            await self._cashier.paid(update.update_id, message)
        elif message.refunded_payment is not None:
            await self._refunds.refunded(update.update_id, message)
        elif (command := command_of(message)) is not None:
            await self._commands.answer(update.update_id, message, command)
