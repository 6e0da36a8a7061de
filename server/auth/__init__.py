"""Authentication of sockets with Telegram-signed initData (never passwords)."""

from __future__ import annotations

from .initdata import (
    TELEGRAM_PUBLIC_KEYS,
    Ed25519Verifier,
    HmacVerifier,
    InitData,
    InitDataError,
    InitDataErrorKind,
    InitDataValidator,
    TelegramUser,
    Verifier,
)
from .signing import sign_init_data

__all__ = [
    "TELEGRAM_PUBLIC_KEYS",
    "Ed25519Verifier",
    "HmacVerifier",
    "InitData",
    "InitDataError",
    "InitDataErrorKind",
    "InitDataValidator",
    "TelegramUser",
    "Verifier",
    "sign_init_data",
]
