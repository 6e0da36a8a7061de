"""Validation of Telegram Mini App ``initData``: the credential a socket authenticates with.

Two ways, as Telegram documents them:

- first party (:class:`HmacVerifier`): the bot owns the token. ``hash`` is
  HMAC-SHA256 over the data-check string (every field but ``hash``, ``signature``
  included, sorted, ``key=value`` joined by newlines) with the key
  HMAC-SHA256("WebAppData", bot_token).
- third party (:class:`Ed25519Verifier`): only the bot id is known. ``signature`` is an
  Ed25519 signature by Telegram over ``"<bot_id>:WebAppData\\n"`` followed by the
  data-check string without ``hash`` and ``signature``.

initData is a bearer credential: nothing here logs it, and error messages never quote it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from urllib.parse import parse_qsl

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol.messages import User

TELEGRAM_PUBLIC_KEYS = {
    "production": "e7bf03a2fa4602af4580703d88dda5bb59f32ed8b02a56c187fe7d34caed242d",
    "test": "40055058a4ee38156a06562e52eece92a771bcd8346a8c4615cb7376eddf72ec",
}
"""Telegram's Ed25519 keys for third-party validation, by environment."""

MAX_INIT_DATA_LENGTH = 8192
DEFAULT_MAX_SKEW = 60
"""Seconds an ``auth_date`` may be ahead of this server's clock (``CROUPIER_INITDATA_MAX_SKEW``)."""

_UNIX_TIME = re.compile(r"[0-9]{1,12}")
_USER_ID = re.compile(r"[0-9]{1,19}")
"""ASCII digits only: ``str.isdigit`` also takes "²" and Arabic-Indic digits (``int`` reads some of them)."""
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""What :func:`sanitize` strips: C0 and C1 control characters, DEL and lone surrogates (U+0000 among them)."""
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class InitDataErrorKind(StrEnum):
    """Why an initData was refused.

    There is no separate "wrong bot" kind on purpose: Telegram binds the bot into the
    proof itself (the token keys the HMAC, the bot id prefixes the signed string), so
    initData of another bot cannot be told apart from altered initData. It fails as
    ``bad_hash`` or ``bad_signature``, whose messages say both causes.
    """

    MALFORMED = "malformed"
    MISSING_HASH = "missing_hash"
    BAD_HASH = "bad_hash"
    MISSING_SIGNATURE = "missing_signature"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"


class InitDataError(Exception):
    """initData was refused; ``kind`` says why, the message says it to a person."""

    def __init__(self, kind: InitDataErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


TelegramUser = User
"""The ``user`` field of verified initData: the protocol's :class:`protocol.messages.User` itself (one type
from the validator to the ``welcome`` reply; frozen, keyword-only)."""


@dataclass(frozen=True, slots=True)
class InitData:
    """Verified initData: the fields as sent, the parsed user and ``auth_date``."""

    fields: dict[str, str]
    auth_date: int
    user: TelegramUser | None


class Verifier(Protocol):
    """Checks the cryptographic proof of parsed initData fields; raises :class:`InitDataError`."""

    def verify(self, fields: dict[str, str]) -> None: ...


def parse_fields(raw: str) -> dict[str, str]:
    """Split a query string into its fields, refusing duplicates, empty input and text that is not UTF-8."""
    if not raw or len(raw) > MAX_INIT_DATA_LENGTH:
        raise InitDataError(InitDataErrorKind.MALFORMED, f"initData must be 1..{MAX_INIT_DATA_LENGTH} characters")
    if not raw.isascii():  # Telegram sends it URL-encoded (ASCII); anything else must at least be UTF-8
        try:
            raw.encode()
        except UnicodeEncodeError:
            raise InitDataError(InitDataErrorKind.MALFORMED, "initData holds a lone UTF-16 surrogate") from None
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise InitDataError(InitDataErrorKind.MALFORMED, "initData is not a URL-encoded query string") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise InitDataError(InitDataErrorKind.MALFORMED, f"initData repeats the field {key!r}")
        fields[key] = value
    return fields


def data_check_string(fields: dict[str, str], *, exclude: frozenset[str]) -> str:
    """The sorted ``key=value`` lines Telegram signs, without the ``exclude`` fields."""
    return "\n".join(f"{key}={fields[key]}" for key in sorted(fields) if key not in exclude)


class HmacVerifier:
    """First-party check of ``hash`` with the bot token."""

    def __init__(self, bot_token: str) -> None:
        self._secret = hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()

    def sign(self, fields: dict[str, str]) -> str:
        """The ``hash`` Telegram would put on these fields (``hash`` itself ignored)."""
        check = data_check_string(fields, exclude=frozenset({"hash"}))
        return hmac.new(self._secret, check.encode(), hashlib.sha256).hexdigest()

    def verify(self, fields: dict[str, str]) -> None:
        given = fields.get("hash")
        if not given:
            raise InitDataError(InitDataErrorKind.MISSING_HASH, "initData has no hash")
        # compare_digest refuses str with non-ASCII characters (TypeError): compare bytes.
        if not hmac.compare_digest(self.sign(fields).encode(), given.lower().encode()):
            raise InitDataError(
                InitDataErrorKind.BAD_HASH,
                "initData hash does not match: the data was altered or was signed for another bot",
            )


class Ed25519Verifier:
    """Third-party check of ``signature`` with the bot id and Telegram's public key."""

    def __init__(self, bot_id: int, public_key_hex: str) -> None:
        self._prefix = f"{bot_id}:WebAppData\n"
        self._key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))

    def verify(self, fields: dict[str, str]) -> None:
        given = fields.get("signature")
        if not given:
            raise InitDataError(InitDataErrorKind.MISSING_SIGNATURE, "initData has no signature")
        try:
            signature = base64.urlsafe_b64decode(given + "=" * (-len(given) % 4))
        except (binascii.Error, ValueError):
            raise InitDataError(InitDataErrorKind.BAD_SIGNATURE, "initData signature is not base64url") from None
        check = self._prefix + data_check_string(fields, exclude=frozenset({"hash", "signature"}))
        try:
            self._key.verify(signature, check.encode())
        except InvalidSignature:
            raise InitDataError(
                InitDataErrorKind.BAD_SIGNATURE,
                "initData signature does not verify: the data was altered or was signed for another bot",
            ) from None


class InitDataValidator:
    """Parses, verifies and checks the freshness of initData.

    ``max_age`` is in seconds; 0 turns the age check off (only for old test vectors).
    ``max_skew`` is how many seconds ``auth_date`` may be ahead of ``clock`` (the clocks of
    Telegram and this server differ a little); initData dated further in the future is
    refused as ``expired`` whatever ``max_age`` says, else it would never expire.
    The proof is checked before freshness, so altered data is always reported as such.

    :meth:`validate` raises nothing but :class:`InitDataError`, whatever the input.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        max_age: int = 86400,
        max_skew: int = DEFAULT_MAX_SKEW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._max_age = max_age
        self._max_skew = max_skew
        self._clock = clock

    def validate(self, raw: str) -> InitData:
        """Return the verified initData, or raise :class:`InitDataError` saying why not."""
        fields = parse_fields(raw)
        self._verifier.verify(fields)
        auth_date = _parse_auth_date(fields)
        now = self._clock()
        if auth_date - now > self._max_skew:
            raise InitDataError(
                InitDataErrorKind.EXPIRED,
                f"initData is not valid yet: auth_date is {auth_date - now:.0f} s ahead of the server's clock "
                f"(at most {self._max_skew} s allowed); check the device's clock and reopen the Mini App",
            )
        if self._max_age and now - auth_date > self._max_age:
            raise InitDataError(
                InitDataErrorKind.EXPIRED,
                f"initData expired: auth_date is older than {self._max_age} s; reopen the Mini App",
            )
        return InitData(fields=fields, auth_date=auth_date, user=_parse_user(fields.get("user")))


def sanitize(text: str) -> str:
    """``text`` without what PostgreSQL cannot store or a screen should not show: U+0000, lone
    surrogates and the other C0/C1 control characters (and DEL).

    For the user's names from initData: Telegram signed them, so the user is not refused for them.
    """
    if text.isascii() and text.isprintable():  # the common case, with no regex
        return text
    return _CONTROL.sub("", text)


def _parse_auth_date(fields: dict[str, str]) -> int:
    raw = fields.get("auth_date")
    if raw is None or _UNIX_TIME.fullmatch(raw) is None:
        raise InitDataError(
            InitDataErrorKind.MALFORMED, "initData auth_date is missing or not a unix time (1 to 12 ASCII digits)"
        )
    return int(raw)


def _lenient_json(raw: str) -> object:
    """``raw`` read by the standard library, which takes lone surrogate escapes (a name Telegram cut in the
    middle of an emoji) that orjson refuses: the user is not refused for them, :func:`sanitize` drops them."""
    if _SURROGATE_ESCAPE.search(raw) is None:
        raise InitDataError(InitDataErrorKind.MALFORMED, "initData user is not JSON")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError, as is an int of too many digits
        raise InitDataError(InitDataErrorKind.MALFORMED, "initData user is not JSON") from None


def _parse_user(raw: str | None) -> TelegramUser | None:
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:  # also: nested too deeply, and lone surrogate escapes
        data = _lenient_json(raw)
    if not isinstance(data, dict):
        raise InitDataError(InitDataErrorKind.MALFORMED, "initData user is not an object")
    user_id = data.get("id")
    if isinstance(user_id, str) and _USER_ID.fullmatch(user_id) is not None:
        user_id = int(user_id)
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id < 2**63:
        raise InitDataError(
            InitDataErrorKind.MALFORMED, "initData user.id is not a positive integer (a JSON number or ASCII digits)"
        )

    def text(name: str) -> str | None:
        value = data.get(name)
        return sanitize(value) if isinstance(value, str) else None

    return TelegramUser(
        id=user_id,
        first_name=text("first_name") or "",
        last_name=text("last_name"),
        username=text("username"),
        language_code=text("language_code"),
        is_premium=data.get("is_premium") is True,
        allows_write_to_pm=data.get("allows_write_to_pm") is True,
    )
