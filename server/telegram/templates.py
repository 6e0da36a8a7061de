"""The texts of notifications: one template per kind and language, plain text (no parse mode).

A notification is stored with its kind, its params and the user's ``language_code`` at the time it
was queued; the sender renders it with :func:`render` just before sending. The language is chosen
by :func:`language_of`: Telegram's IETF tag (``ru``, ``pt-br``) reduced to its primary subtag, and
English for anything without templates. Adding a language is adding one entry to every kind below.
No I/O: unit-tested.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

FALLBACK = "en"
"""The language of users whose ``language_code`` is unknown or has no templates."""
MAX_TEXT = 4096
"""Telegram's limit on a message's text, in characters (a longer one is refused with 400)."""


class NotificationKind(StrEnum):
    """What a notification announces (the ``notifications.kind`` column)."""

    DEPOSIT_RECEIPT = "deposit_receipt"
    """A Stars payment credited: params ``stars``, ``chips``."""
    REFUND = "refund"
    """A Stars payment refunded: params ``stars``, ``chips`` (chips taken back)."""
    BIG_WIN = "big_win"
    """A win over the configured multiple of the stake: params ``game``, ``payout``, ``multiple``."""
    ANNOUNCEMENT = "announcement"
    """An admin announcement: param ``text`` (the same in every language)."""


TEMPLATES: Mapping[NotificationKind, Mapping[str, str]] = {
    NotificationKind.DEPOSIT_RECEIPT: {
        "en": "Payment received: {stars} Stars. {chips} chips are on your balance. Good luck at the tables!",
        "ru": "Платёж получен: {stars} звёзд. На ваш баланс зачислено {chips} фишек. Удачи за столами!",  # noqa: RUF001
    },
    NotificationKind.REFUND: {
        "en": "Your payment of {stars} Stars was refunded; {chips} chips were taken back from your balance.",
        "ru": "Ваш платёж на {stars} звёзд возвращён; {chips} фишек списано с баланса.",  # noqa: RUF001
    },
    NotificationKind.BIG_WIN: {
        "en": "Big win! You won {payout} chips in {game}: {multiple}x your stake.",
        "ru": "Крупный выигрыш! Вы выиграли {payout} фишек в игре {game}: в {multiple} раз больше ставки.",
    },
    NotificationKind.ANNOUNCEMENT: {
        "en": "{text}",
        "ru": "{text}",
    },
}
LANGUAGES = frozenset(TEMPLATES[NotificationKind.DEPOSIT_RECEIPT])
"""The languages with templates (every kind has the same ones: checked by the tests)."""


class TemplateError(ValueError):
    """Params that do not fit a kind's template (a missing or unknown field): a programming error."""


def language_of(language_code: str | None) -> str:
    """The template language for a user's ``language_code``: its primary subtag if there are
    templates in it (``ru-RU`` -> ``ru``), else :data:`FALLBACK`."""
    if not language_code:
        return FALLBACK
    primary = language_code.strip().lower().replace("_", "-").split("-", 1)[0]
    return primary if primary in LANGUAGES else FALLBACK


def fields_of(kind: NotificationKind) -> frozenset[str]:
    """The params a kind's templates use (the same in every language)."""
    template = TEMPLATES[kind][FALLBACK]
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


def check_params(kind: NotificationKind, params: Mapping[str, Any]) -> None:
    """Raise :class:`TemplateError` unless ``params`` are exactly the fields ``kind`` uses."""
    wanted = fields_of(kind)
    if set(params) != wanted:
        raise TemplateError(f"a {kind.value} notification takes params {sorted(wanted)}, got {sorted(params)}")


def render(kind: NotificationKind, params: Mapping[str, Any], language_code: str | None) -> str:
    """The text of a notification of ``kind`` with ``params`` in the user's language (see
    :func:`language_of`), cut to :data:`MAX_TEXT` characters. Raises :class:`TemplateError` for
    params that do not fit."""
    check_params(kind, params)
    text = TEMPLATES[kind][language_of(language_code)].format_map(params)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
