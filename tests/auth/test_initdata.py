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
    TelegramUser,
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


# ---------------------------------------------------------------- hostile initData (issue 12)


def signed(fields: dict[str, str], token: str = TOKEN) -> str:
    """``fields`` with a valid hash: what a holder of the token (Telegram) would send."""
    return urlencode({**fields, "hash": HmacVerifier(token).sign(fields)})


class Ed25519Signer:
    """Telegram's side of third-party validation, with a key of our own."""

    def __init__(self, bot_id: int) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self.bot_id = bot_id
        self._key = Ed25519PrivateKey.generate()
        self.public_hex = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def sign(self, fields: dict[str, str]) -> str:
        import base64

        from server.auth.initdata import data_check_string

        check = f"{self.bot_id}:WebAppData\n" + data_check_string(fields, exclude=frozenset({"hash", "signature"}))
        signature = base64.urlsafe_b64encode(self._key.sign(check.encode())).decode().rstrip("=")
        return urlencode({**fields, "signature": signature})


def test_initdata_dated_in_the_future_is_refused_beyond_the_skew_hmac() -> None:
    now = 1_800_000_000
    ten_years = now + 10 * 365 * 86400
    validator = InitDataValidator(HmacVerifier(TOKEN), max_age=86400, clock=lambda: now)
    with pytest.raises(InitDataError) as info:
        validator.validate(sign_init_data(TOKEN, user_id=42, auth_date=ten_years))
    assert info.value.kind is InitDataErrorKind.EXPIRED
    assert "ahead of the server's clock" in str(info.value) and "60 s" in str(info.value)
    # Within the skew it passes (Telegram's clock a little ahead of ours); just beyond, it does not.
    assert validator.validate(sign_init_data(TOKEN, user_id=42, auth_date=now + 60)).auth_date == now + 60
    assert kind_of(sign_init_data(TOKEN, user_id=42, auth_date=now + 61), now=now) is InitDataErrorKind.EXPIRED
    # The skew is a setting; and max_age=0 (no age check) does not make a future date acceptable.
    strict = InitDataValidator(HmacVerifier(TOKEN), max_age=0, max_skew=0, clock=lambda: now)
    assert strict.validate(sign_init_data(TOKEN, user_id=42, auth_date=now)).auth_date == now
    with pytest.raises(InitDataError) as info:
        strict.validate(sign_init_data(TOKEN, user_id=42, auth_date=now + 1))
    assert info.value.kind is InitDataErrorKind.EXPIRED


def test_initdata_dated_in_the_future_is_refused_beyond_the_skew_ed25519() -> None:
    now = 1_800_000_000
    signer = Ed25519Signer(bot_id=7000001)
    validator = InitDataValidator(Ed25519Verifier(signer.bot_id, signer.public_hex), clock=lambda: now)
    fields = {"auth_date": str(now), "user": '{"id":5,"first_name":"Ed"}'}
    assert validator.validate(signer.sign(fields)).user == TelegramUser(id=5, first_name="Ed")
    with pytest.raises(InitDataError) as info:
        validator.validate(signer.sign({**fields, "auth_date": str(now + 10 * 365 * 86400)}))
    assert info.value.kind is InitDataErrorKind.EXPIRED


def test_validator_for_threads_the_skew_setting() -> None:
    from server.node import validator_for
    from server.settings import Settings

    now = int(time.time())
    settings = Settings.from_env({"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_INITDATA_MAX_SKEW": "5"})
    validator = validator_for(settings)
    assert validator.validate(sign_init_data(TOKEN, user_id=3, auth_date=now)).user is not None
    with pytest.raises(InitDataError) as info:
        validator.validate(sign_init_data(TOKEN, user_id=3, auth_date=now + 3600))
    assert info.value.kind is InitDataErrorKind.EXPIRED and "5 s" in str(info.value)


@pytest.mark.parametrize("auth_date", ["\u0664\u0662\u0664\u0664", "\u00b2", "1\u00b2", "\uff11\uff12", "-1", "+5",
                                       " 5", "1.5", "0x10", "1" * 13, ""])  # fmt: skip
def test_auth_date_must_be_ascii_digits(auth_date: str) -> None:
    """``str.isdigit`` takes "²" (then int() raises) and Arabic-Indic digits (int() reads them)."""
    raw = signed({"auth_date": auth_date, "user": '{"id":1,"first_name":"A"}'})
    with pytest.raises(InitDataError) as info:  # never ValueError
        InitDataValidator(HmacVerifier(TOKEN), max_age=0).validate(raw)
    assert info.value.kind is InitDataErrorKind.MALFORMED
    assert "auth_date" in str(info.value)


@pytest.mark.parametrize("user_id", ['"\u0664\u0662\u0664\u0664"', '"\u00b2"', '"\uff14\uff12"', '"4\u00b2"',
                                     '"' + "9" * 5000 + '"', '"1e3"', '" 42"', "42.0", "true", "0",
                                     "9223372036854775808", "1" + "0" * 400])  # fmt: skip
def test_user_id_must_be_a_positive_integer_in_ascii_digits(user_id: str) -> None:
    """ "٤٢٤٤" used to become user 4244; "²" and a 5,000-digit string raised ValueError."""
    raw = signed({"auth_date": str(int(time.time())), "user": '{"id":' + user_id + ',"first_name":"A"}'})
    with pytest.raises(InitDataError) as info:
        InitDataValidator(HmacVerifier(TOKEN)).validate(raw)
    assert info.value.kind is InitDataErrorKind.MALFORMED
    assert "user" in str(info.value)


def test_user_id_as_a_string_of_ascii_digits_still_reads() -> None:
    raw = signed({"auth_date": str(int(time.time())), "user": '{"id":"4244","first_name":"A"}'})
    user = InitDataValidator(HmacVerifier(TOKEN)).validate(raw).user
    assert user is not None and user.id == 4244


def test_user_text_is_sanitized_not_refused() -> None:
    """Telegram signed the names: strip what PostgreSQL cannot store (U+0000, lone surrogates) and the other
    control characters, keep the user."""
    user_json = ('{"id":77,"first_name":"A\\u0000n\\u0007n\\u0085\\ud83d","last_name":"\\udc00Lee\\t",'
                 '"username":"a\\u0000b","language_code":"e\\u001bn","is_premium":true}')  # fmt: skip
    raw = signed({"auth_date": str(int(time.time())), "user": user_json})
    user = InitDataValidator(HmacVerifier(TOKEN)).validate(raw).user
    assert user == TelegramUser(id=77, first_name="Ann", last_name="Lee", username="ab", language_code="en",
                                is_premium=True)  # fmt: skip
    honest = '{"id":78,"first_name":"Zoë 🎲","last_name":"Ли","username":"zoe_1"}'
    user = InitDataValidator(HmacVerifier(TOKEN)).validate(signed({"auth_date": str(int(time.time())),
                                                                    "user": honest})).user  # fmt: skip
    assert user == TelegramUser(id=78, first_name="Zoë 🎲", last_name="Ли", username="zoe_1")


@pytest.mark.parametrize(
    "raw",
    [
        "hash=%C3%A9&auth_date=1",  # a non-ASCII hash: hmac.compare_digest raised TypeError
        "hash=\u00e9&auth_date=1",
        "auth_date=1&hash=\ud800",  # a raw lone surrogate: encoding the data-check string raised
        "user=%ED%A0%80&hash=00",  # a surrogate percent-encoded: not UTF-8
        "auth_date=1&user=" + "%5B" * 3000 + "&hash=00",
    ],
)
def test_malformed_initdata_raises_only_initdata_error(raw: str) -> None:
    with pytest.raises(InitDataError):
        InitDataValidator(HmacVerifier(TOKEN), max_age=0).validate(raw)


def test_signed_user_json_that_is_not_json_is_malformed_never_an_exception() -> None:
    for user_json in ("[" * 5000 + "]" * 5000, '{"id":1,"first_name":"\\ud800","x":' + "[" * 3000 + "]" * 3000 + "}",
                      '{"id":' + "1" * 5000 + ',"x":"\\ud800"}'):  # fmt: skip
        raw = signed({"auth_date": str(int(time.time())), "user": user_json})
        with pytest.raises(InitDataError) as info:
            InitDataValidator(HmacVerifier(TOKEN)).validate(raw)
        assert info.value.kind is InitDataErrorKind.MALFORMED


def test_ed25519_malformed_signatures_are_bad_signatures() -> None:
    verifier = Ed25519Verifier(1, KEYS["production"])
    for signature in ("\u00e9\u00e9\u00e9\u00e9", "AAAA", "A" * 200):
        with pytest.raises(InitDataError) as info:
            InitDataValidator(verifier, max_age=0).validate(urlencode({"auth_date": "1", "signature": signature}))
        assert info.value.kind is InitDataErrorKind.BAD_SIGNATURE
