"""Who may use the back office: admin keys, their scopes, and the constant-time check of a presented key.

``CROUPIER_ADMIN_KEYS`` holds ``name:scope:sha256hex`` entries (:mod:`server.settings` reads them): the
SHA-256 of each key, never the key itself, so the environment, a config map or a leaked process listing
gives no key away. A request presents its key as ``Authorization: Bearer <key>``; the key is hashed and
the digest compared, in constant time (:func:`hmac.compare_digest`), with every configured digest, so
how long the check takes does not depend on which key matched or how much of one did. Keys never appear
in logs, URLs or answers: only their names do (in the audit log).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """What a key may do: ``read`` the ``GET`` routes; ``write`` every route."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class AdminKey:
    """One configured key: its name (for the audit log), its scope, and the SHA-256 of the key."""

    name: str
    scope: Scope
    digest: bytes

    def allows(self, needed: Scope) -> bool:
        """Whether this key may use a route that needs ``needed``."""
        return self.scope is Scope.WRITE or needed is Scope.READ


class KeyRing:
    """The configured keys. Empty: the back office is off (its routes answer 404)."""

    def __init__(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """``entries``: (name, scope, SHA-256 hex) as ``Settings.admin_keys`` holds them."""
        self._keys = tuple(AdminKey(name, Scope(scope), bytes.fromhex(digest)) for name, scope, digest in entries)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def match(self, presented: str) -> AdminKey | None:
        """The key ``presented`` is, or None. Its SHA-256 is compared with every configured digest, each with
        :func:`hmac.compare_digest`, whether or not an earlier one matched."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: AdminKey | None = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def authenticate(self, authorization: str | None) -> AdminKey | None:
        """The key an ``Authorization`` header value presents (``Bearer <key>``), or None when there is no
        such header, it is not a bearer credential, or the key is unknown."""
        if authorization is None:
            return None
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None
        return self.match(credential.strip())


def key_digest(key: str) -> str:
    """The SHA-256 hex of ``key``: what ``CROUPIER_ADMIN_KEYS`` holds for it."""
    return hashlib.sha256(key.encode()).hexdigest()
