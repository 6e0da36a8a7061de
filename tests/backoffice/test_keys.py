"""Admin keys: scopes, the bearer header, the constant-time comparison over every key, the setting."""

from __future__ import annotations

import hashlib

import pytest

from server.backoffice import keys as keys_module
from server.backoffice.keys import KeyRing, Scope, key_digest
from server.settings import Settings, SettingsError

RING = KeyRing([("first", "read", key_digest("alpha")), ("second", "write", key_digest("beta")),
                ("third", "read", key_digest("gamma"))])  # fmt: skip


def test_a_key_is_known_by_its_sha256_and_nothing_else() -> None:
    assert key_digest("alpha") == hashlib.sha256(b"alpha").hexdigest()
    assert (found := RING.match("beta")) is not None and (found.name, found.scope) == ("second", Scope.WRITE)
    assert RING.match("gamma") is not None and RING.match("gamma").name == "third"  # type: ignore[union-attr]
    for wrong in ("", "alph", "alpha ", "ALPHA", key_digest("alpha"), "\ud800"):
        assert RING.match(wrong) is None, wrong


def test_every_configured_digest_is_compared_with_compare_digest_whichever_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timing must not tell which key matched (or how early): each check runs hmac.compare_digest once per
    configured key, on the presented key's SHA-256, also when the first key matches."""
    calls: list[tuple[bytes, bytes]] = []
    real = keys_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", counting)
    for presented in ("alpha", "gamma", "nobody"):
        calls.clear()
        RING.match(presented)
        digest = hashlib.sha256(presented.encode()).digest()
        assert [a for a, _ in calls] == [digest] * 3
        assert [b for _, b in calls] == [bytes.fromhex(key_digest(k)) for k in ("alpha", "beta", "gamma")]


def test_the_bearer_header() -> None:
    assert RING.authenticate("Bearer beta") is not None
    assert RING.authenticate("bearer   beta ") is not None
    for header in (None, "", "Bearer", "Bearer ", "Basic YmV0YQ==", "beta", "Token beta"):
        assert RING.authenticate(header) is None, header


def test_scopes() -> None:
    read, write = RING.match("alpha"), RING.match("beta")
    assert read is not None and write is not None
    assert read.allows(Scope.READ) and not read.allows(Scope.WRITE)
    assert write.allows(Scope.READ) and write.allows(Scope.WRITE)
    assert not KeyRing([]) and RING


def _settings(value: str) -> Settings:
    return Settings.from_env({"CROUPIER_BOT_TOKEN": "123:abcdefghijklmnop", "CROUPIER_ADMIN_KEYS": value})


def test_the_setting_holds_names_scopes_and_digests() -> None:
    digest = key_digest("k")
    assert _settings("").admin_keys == ()
    assert _settings(f"ops:write:{digest.upper()}, viewer:read:{digest}").admin_keys == (
        ("ops", "write", digest), ("viewer", "read", digest))  # fmt: skip


@pytest.mark.parametrize("value", ["ops:admin:{d}", "ops:write:abc", "ops:write", "a key pasted by mistake",
                                   "o p:read:{d}", "ops:read:{d},ops:write:{d}"])  # fmt: skip
def test_a_bad_setting_is_refused_without_echoing_it(value: str) -> None:
    value = value.format(d=key_digest("k"))
    with pytest.raises(SettingsError) as refused:
        _settings(value)
    message = str(refused.value)
    assert message.startswith("CROUPIER_ADMIN_KEYS") and "pasted" not in message and key_digest("k") not in message
