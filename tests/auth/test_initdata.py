"""initData validation against real-world vectors and every failure kind."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from server.auth import (
    Ed25519Verifier,
    HmacVerifier,
    InitDataError,
    InitDataErrorKind,
    InitDataValidator,
    sign_init_data,
)


def _vectors_path() -> Path:
    """The team's shared/testdata copy when the checkout sits beside it, else the copy in tests/data."""
    name = "telegram_initdata_vectors.json"
    for parent in Path(__file__).resolve().parents:
        shared = parent / "shared" / "testdata" / name
        if shared.exists():
            return shared
    return Path(__file__).resolve().parents[1] / "data" / name


DATA = json.loads(_vectors_path().read_text())
VECTORS: list[dict[str, Any]] = DATA["vectors"]
KEYS: dict[str, str] = DATA["ed25519_public_keys"]
TOKEN = "5768337691:AAH5YkoiEuPk8-FZa32hStHTqXiLPtAEhx8"


def _validates(validator: InitDataValidator, raw: str) -> bool:
    try:
        validator.validate(raw)
    except InitDataError:
        return False
    return True


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if v["expect_valid_hmac"] is not None], ids=lambda v: v["source"][:60]
)
def test_hmac_vectors(vector: dict[str, Any]) -> None:
    validator = InitDataValidator(HmacVerifier(vector["bot_token"]), max_age=0)
    assert _validates(validator, vector["init_data"]) is vector["expect_valid_hmac"]


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if v["expect_valid_ed25519"] is not None], ids=lambda v: v["source"][:60]
)
def test_ed25519_vectors(vector: dict[str, Any]) -> None:
    key = vector.get("ed25519_public_key_hex") or KEYS["test" if vector["test_env"] else "production"]
    validator = InitDataValidator(Ed25519Verifier(vector["bot_id"], key), max_age=0)
    assert _validates(validator, vector["init_data"]) is vector["expect_valid_ed25519"]


def test_vector_suite_is_not_empty() -> None:
    assert sum(v["expect_valid_hmac"] is not None for v in VECTORS) >= 15
    assert sum(v["expect_valid_ed25519"] is not None for v in VECTORS) >= 10


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["expect_valid_hmac"]], ids=lambda v: v["source"][:60])
def test_old_vectors_are_expired_with_the_default_max_age(vector: dict[str, Any]) -> None:
    validator = InitDataValidator(HmacVerifier(vector["bot_token"]))
    with pytest.raises(InitDataError) as info:
        validator.validate(vector["init_data"])
    assert info.value.kind is InitDataErrorKind.EXPIRED


def test_real_vector_parses_the_user() -> None:
    vector = VECTORS[0]
    data = InitDataValidator(HmacVerifier(vector["bot_token"]), max_age=0).validate(vector["init_data"])
    assert data.user is not None
    assert (data.user.id, data.user.username, data.user.is_premium) == (279058397, "vdkfrost", True)
    assert data.auth_date == 1662771648


def kind_of(raw: str, *, token: str = TOKEN, max_age: int = 86400, now: float | None = None) -> InitDataErrorKind:
    clock = (lambda: now) if now is not None else time.time
    with pytest.raises(InitDataError) as info:
        InitDataValidator(HmacVerifier(token), max_age=max_age, clock=clock).validate(raw)
    return info.value.kind


def test_fresh_signed_data_validates_and_expires_after_max_age() -> None:
    now = 1_800_000_000
    raw = sign_init_data(TOKEN, user_id=42, first_name="Ann", auth_date=now - 100)
    validator = InitDataValidator(HmacVerifier(TOKEN), max_age=3600, clock=lambda: now)
    user = validator.validate(raw).user
    assert user is not None and (user.id, user.first_name) == (42, "Ann")
    assert kind_of(raw, max_age=60, now=now) is InitDataErrorKind.EXPIRED


def test_each_failure_has_its_kind() -> None:
    good = sign_init_data(TOKEN, user_id=7)
    fields = dict(parse_qsl(good))
    assert kind_of("") is InitDataErrorKind.MALFORMED
    assert kind_of("%zz=1&&") is InitDataErrorKind.MALFORMED
    assert kind_of(good + "&user=x") is InitDataErrorKind.MALFORMED  # repeated field
    assert kind_of("x" * 9000) is InitDataErrorKind.MALFORMED
    no_hash = {k: v for k, v in fields.items() if k != "hash"}
    assert kind_of(urlencode(no_hash)) is InitDataErrorKind.MISSING_HASH
    assert kind_of(urlencode({**fields, "user": fields["user"].replace("7", "8")})) is InitDataErrorKind.BAD_HASH
    assert kind_of(good, token="5768337691:AAH5YkoiEuPk8-FZa32hStHTqXiLPtAEhx9") is InitDataErrorKind.BAD_HASH
    for bad_user in ("not json", "[1]", '{"id": "x"}', '{"id": -4}', '{"first_name": "no id"}'):
        raw = sign_init_data(TOKEN, user_id=1, extra={})
        tampered = {**dict(parse_qsl(raw)), "user": bad_user}
        tampered["hash"] = HmacVerifier(TOKEN).sign(tampered)
        assert kind_of(urlencode(tampered)) is InitDataErrorKind.MALFORMED, bad_user
    no_date = {k: v for k, v in fields.items() if k not in ("hash", "auth_date")}
    no_date["hash"] = HmacVerifier(TOKEN).sign(no_date)
    assert kind_of(urlencode(no_date)) is InitDataErrorKind.MALFORMED


def test_ed25519_failure_kinds() -> None:
    real = next(v for v in VECTORS if v["expect_valid_ed25519"] and not v.get("ed25519_public_key_hex"))
    verifier = Ed25519Verifier(real["bot_id"], KEYS["production"])
    fields = dict(parse_qsl(real["init_data"]))
    no_signature = urlencode({k: v for k, v in fields.items() if k != "signature"})
    for raw, kind in [
        (no_signature, InitDataErrorKind.MISSING_SIGNATURE),
        (urlencode({**fields, "signature": "!!notbase64!!"}), InitDataErrorKind.BAD_SIGNATURE),
        (urlencode({**fields, "auth_date": "1733584788"}), InitDataErrorKind.BAD_SIGNATURE),
    ]:
        with pytest.raises(InitDataError) as info:
            InitDataValidator(verifier, max_age=0).validate(raw)
        assert info.value.kind is kind
    other_bot = Ed25519Verifier(real["bot_id"] + 1, KEYS["production"])
    with pytest.raises(InitDataError) as info:
        InitDataValidator(other_bot, max_age=0).validate(real["init_data"])
    assert info.value.kind is InitDataErrorKind.BAD_SIGNATURE
    assert "another bot" in str(info.value)


def test_error_messages_never_quote_the_credential() -> None:
    raw = sign_init_data(TOKEN, user_id=99, auth_date=1)
    with pytest.raises(InitDataError) as info:
        InitDataValidator(HmacVerifier(TOKEN)).validate(raw)
    assert dict(parse_qsl(raw))["hash"] not in str(info.value)
    assert "query_id" not in str(info.value)
