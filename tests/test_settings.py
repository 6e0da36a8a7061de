"""Settings: every bad value fails at start with one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings, SettingsError

TOKEN = "123456789:TEST-token-for-the-croupier-suite_x"


def error_for(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "CROUPIER_BOT_TOKEN"),
        ({"CROUPIER_BOT_TOKEN": "nope"}, "CROUPIER_BOT_TOKEN"),
        ({"CROUPIER_BOT_ID": "-3"}, "CROUPIER_BOT_ID"),
        ({"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_BOT_ID": "5"}, "CROUPIER_BOT_ID"),
        ({"CROUPIER_BOT_TOKEN": TOKEN, "DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"CROUPIER_BOT_TOKEN": TOKEN, "REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_INITDATA_MAX_AGE": "soon"}, "CROUPIER_INITDATA_MAX_AGE"),
        ({"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_INITDATA_MAX_AGE": "-1"}, "CROUPIER_INITDATA_MAX_AGE"),
        ({"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_DEV": "maybe"}, "CROUPIER_DEV"),
        ({"CROUPIER_BOT_ID": "5", "CROUPIER_TELEGRAM_PUBLIC_KEY": "zz"}, "CROUPIER_TELEGRAM_PUBLIC_KEY"),
        ({"CROUPIER_BOT_ID": "5", "CROUPIER_TELEGRAM_ENV": "staging"}, "CROUPIER_TELEGRAM_ENV"),
        ({"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_AUTH_TIMEOUT": "0"}, "CROUPIER_AUTH_TIMEOUT"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    assert names in error_for(env)


def test_token_gives_the_bot_id_and_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_DATA_DIR": str(tmp_path)})
    assert settings.bot_id == 123456789
    assert settings.initdata_max_age == 86400
    assert settings.database_is_embedded and settings.redis_url is None
    assert settings.max_frame_bytes == 16 * 1024


def test_third_party_mode_uses_the_test_key_when_asked() -> None:
    settings = Settings.from_env({"CROUPIER_BOT_ID": "42", "CROUPIER_TELEGRAM_ENV": "test"})
    assert settings.bot_token is None and settings.bot_id == 42
    assert settings.telegram_public_key.startswith("40055058")


def test_dev_mode_generates_one_private_token_and_reuses_it(tmp_path: Path) -> None:
    env = {"CROUPIER_DEV": "1", "CROUPIER_DATA_DIR": str(tmp_path / "state")}
    first = Settings.from_env(env)
    second = Settings.from_env(env)
    assert first.bot_token is not None and first.bot_token == second.bot_token
    token_file = tmp_path / "state" / "dev-bot-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token_file.write_text("garbage")
    assert "dev-bot-token" in error_for(env)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"CROUPIER_TELEGRAM_API_URL": "api.telegram.org"}, "CROUPIER_TELEGRAM_API_URL"),
        ({"CROUPIER_TELEGRAM_API_URL": "ftp://x"}, "CROUPIER_TELEGRAM_API_URL"),
        ({"CROUPIER_WEBHOOK_SECRET": "short"}, "CROUPIER_WEBHOOK_SECRET"),
        ({"CROUPIER_WEBHOOK_SECRET": "has spaces in it, sixteen+"}, "CROUPIER_WEBHOOK_SECRET"),
        ({"CROUPIER_DEPOSIT_MIN_STARS": "0"}, "CROUPIER_DEPOSIT_MIN_STARS"),
        ({"CROUPIER_DEPOSIT_MIN_STARS": "10", "CROUPIER_DEPOSIT_MAX_STARS": "9"}, "CROUPIER_DEPOSIT_MAX_STARS"),
        ({"CROUPIER_DEPOSIT_MIN_STARS": "10", "CROUPIER_DEPOSIT_DAILY_STARS": "9"}, "CROUPIER_DEPOSIT_DAILY_STARS"),
        ({"CROUPIER_DEPOSIT_DAILY_STARS": "many"}, "CROUPIER_DEPOSIT_DAILY_STARS"),
        ({"CROUPIER_CHIPS_PER_STAR": "0"}, "CROUPIER_CHIPS_PER_STAR"),
        ({"CROUPIER_CHIPS_PER_STAR": str(2**50)}, "CROUPIER_CHIPS_PER_STAR"),
        ({"CROUPIER_INVOICE_TITLE": "{stars.__class__}"}, "CROUPIER_INVOICE_TITLE"),
        ({"CROUPIER_INVOICE_TITLE": "{amount} chips"}, "CROUPIER_INVOICE_TITLE"),
        ({"CROUPIER_INVOICE_TITLE": "{chips"}, "CROUPIER_INVOICE_TITLE"),
        ({"CROUPIER_INVOICE_TITLE": "A very long title for {chips} chips"}, "CROUPIER_INVOICE_TITLE"),
        ({"CROUPIER_INVOICE_DESCRIPTION": "x" * 256}, "CROUPIER_INVOICE_DESCRIPTION"),
    ],
)
def test_bad_cashier_settings_name_the_variable(changes: dict[str, str], name: str) -> None:
    assert name in error_for({"CROUPIER_BOT_TOKEN": TOKEN, **changes})


def test_cashier_defaults_and_secrets_kept_out_of_the_repr(tmp_path: Path) -> None:
    secret = "a-webhook-secret-of-32-characters"
    settings = Settings.from_env({"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_DATA_DIR": str(tmp_path),
                                  "CROUPIER_WEBHOOK_SECRET": secret,
                                  "CROUPIER_TELEGRAM_API_URL": "http://127.0.0.1:8081/"})  # fmt: skip
    assert settings.telegram_api_url == "http://127.0.0.1:8081" and settings.telegram_env == "production"
    assert (settings.deposit_min_stars, settings.deposit_max_stars, settings.deposit_daily_stars) == (1, 10_000, 50_000)
    assert settings.chips_per_star == 1 and settings.payments_enabled and settings.webhook_secret == secret
    assert secret not in repr(settings) and TOKEN.split(":")[1] not in repr(settings)


def test_deposits_need_a_token_of_the_nodes_own(tmp_path: Path) -> None:
    dev = Settings.from_env({"CROUPIER_DEV": "1", "CROUPIER_DATA_DIR": str(tmp_path)})
    assert dev.dev_token and not dev.payments_enabled
    assert not Settings.from_env({"CROUPIER_BOT_ID": "42"}).payments_enabled
    real = Settings.from_env({"CROUPIER_DEV": "1", "CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_TELEGRAM_ENV": "test"})
    assert real.payments_enabled and real.telegram_env == "test"
