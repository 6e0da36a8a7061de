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
