"""The settings of a highly available deployment: Sentinel URLs, the pool's size, PgBouncer, the session DSN."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.broker.connect import RedisEndpoint, RedisUrlError, parse_redis_url
from server.settings import Settings, SettingsError

TOKEN = "123456789:TEST-token-for-the-croupier-suite_x"
DB = "postgresql://croupier@pgbouncer:6432/croupier"
DIRECT = "postgresql://croupier@postgres:5432/croupier"


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"CROUPIER_BOT_TOKEN": TOKEN, "CROUPIER_DATA_DIR": str(tmp_path), **env})


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    where = parse_redis_url("redis+sentinel://:s%40cret@10.0.0.1:26379,[::1],sentinel-c:26380/croupier/2")
    assert where.sentinel
    assert where.sentinels == (("10.0.0.1", 26379), ("::1", 26379), ("sentinel-c", 26380))
    assert (where.service, where.db, where.username, where.password) == ("croupier", 2, None, "s@cret")
    assert where.describe() == "redis+sentinel://10.0.0.1:26379,::1:26379,sentinel-c:26380/croupier"
    assert "cret" not in repr(where)
    secured = parse_redis_url("redis+sentinel://app:pw@h1,h2/main?sentinel_password=sp&sentinel_username=sen")
    assert (secured.username, secured.password, secured.db) == ("app", "pw", 0)
    assert (secured.sentinel_username, secured.sentinel_password) == ("sen", "sp")


def test_one_server_urls_keep_their_meaning() -> None:
    plain = parse_redis_url("redis://user:pw@cache:6380/3")
    assert (plain.sentinel, plain.host, plain.port, plain.db, plain.username, plain.password) == (
        False, "cache", 6380, 3, "user", "pw")  # fmt: skip
    assert parse_redis_url("redis://127.0.0.1").port == 6379
    assert parse_redis_url("unix:///run/redis.sock").path == "/run/redis.sock"
    assert parse_redis_url("rediss://cache").scheme == "rediss"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://x", "must start with redis://"),
        ("redis+sentinel:///croupier", "names no Sentinel"),
        ("redis+sentinel://h1:26379", "names no service"),
        ("redis+sentinel://h1:26379/", "names no service"),
        ("redis+sentinel://h1:sentinel/croupier", "is not a Sentinel's host[:port]"),
        ("redis+sentinel://h1:99999/croupier", "is not a Sentinel's host[:port]"),
        ("redis+sentinel://h1/croupier/zero", "must be a number"),
        ("redis+sentinel://h1/croupier?timeout=3", "unknown option 'timeout'"),
    ],
)
def test_a_bad_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(RedisUrlError, match=says.replace("[", r"\[").replace("]", r"\]")):
        RedisEndpoint(url)


async def test_an_endpoint_of_one_server_connects_where_the_url_says() -> None:
    endpoint = RedisEndpoint("redis://cache.internal:6380/1")
    assert await endpoint.primary() == ("cache.internal", 6380)
    await endpoint.aclose()


def test_settings_take_a_sentinel_url_and_refuse_a_broken_one(tmp_path: Path) -> None:
    url = "redis+sentinel://s1:26379,s2:26379,s3:26379/croupier/0"
    assert settings(tmp_path, REDIS_URL=url).redis_url == url
    with pytest.raises(SettingsError, match="REDIS_URL names no service"):
        settings(tmp_path, REDIS_URL="redis+sentinel://s1:26379")


def test_the_pool_size_and_pgbouncer_settings(tmp_path: Path) -> None:
    default = settings(tmp_path)
    assert (default.db_pool_min, default.db_pool_max, default.db_pgbouncer, default.database_session_url) == (
        2, 20, None, None)  # fmt: skip
    tuned = settings(tmp_path, DATABASE_URL=DB, CROUPIER_DB_POOL_MIN="0", CROUPIER_DB_POOL_MAX="50",
                     CROUPIER_DB_PGBOUNCER="1", CROUPIER_DB_SESSION_URL=DIRECT)  # fmt: skip
    assert (tuned.db_pool_min, tuned.db_pool_max, tuned.db_pgbouncer, tuned.database_session_url) == (
        0, 50, True, DIRECT)  # fmt: skip
    assert settings(tmp_path, DATABASE_URL=DB, CROUPIER_DB_PGBOUNCER="0").db_pgbouncer is False
    assert settings(tmp_path, DATABASE_URL=DB, CROUPIER_DB_PGBOUNCER="auto").db_pgbouncer is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"CROUPIER_DB_POOL_MAX": "0"}, "CROUPIER_DB_POOL_MAX must be at least 1"),
        ({"CROUPIER_DB_POOL_MIN": "-1"}, "CROUPIER_DB_POOL_MIN must be at least 0"),
        ({"CROUPIER_DB_POOL_MIN": "30"}, "CROUPIER_DB_POOL_MAX (20) is below CROUPIER_DB_POOL_MIN (30)"),
        ({"CROUPIER_DB_PGBOUNCER": "sometimes"}, "CROUPIER_DB_PGBOUNCER must be 1 or 0"),
        ({"DATABASE_URL": DB, "CROUPIER_DB_PGBOUNCER": "1"}, "CROUPIER_DB_PGBOUNCER=1 needs CROUPIER_DB_SESSION_URL"),
        ({"DATABASE_URL": DB, "CROUPIER_DB_SESSION_URL": "mysql://x"}, "CROUPIER_DB_SESSION_URL must start with"),
        ({"CROUPIER_DB_SESSION_URL": DIRECT}, "CROUPIER_DB_SESSION_URL needs DATABASE_URL"),
    ],
)
def test_bad_database_settings_name_the_variable(tmp_path: Path, env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(tmp_path, **env)
    assert says in str(info.value) and "\n" not in str(info.value)
