"""Settings of a Croupier node, read once from the environment at start.

A missing or invalid setting raises :class:`SettingsError` whose message is one line
naming the variable and what is wrong with it; ``croupier serve`` prints it and exits.
Secrets (the bot token, database passwords) come only from the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .auth import TELEGRAM_PUBLIC_KEYS

_TOKEN = re.compile(r"^(\d{1,20}):[A-Za-z0-9_-]{10,}$")
DEV_TOKEN_FILE = "dev-bot-token"  # noqa: S105 - a file name, not a secret


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a node is configured with. Build it with :meth:`from_env`."""

    bot_token: str | None
    bot_id: int
    telegram_public_key: str
    initdata_max_age: int
    database_url: str | None
    redis_url: str | None
    node_id: str
    data_dir: Path
    dev: bool
    auth_timeout: float = 10.0
    max_frame_bytes: int = 16 * 1024
    send_queue_frames: int = 256
    malformed_limit: int = 5
    malformed_window: float = 10.0
    rate_limit: float = 200.0
    rate_burst: int = 400
    welcome_credit: int = 0
    min_bet: int = 1
    max_bet: int = 1_000_000
    bet_batch_max: int = 500
    bet_batch_wait: float = 0.002
    bet_batch_concurrency: int = 2
    games: tuple[str, ...] | None = None
    """Games this node runs; None: every registered game."""
    game_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    betting_ms: int = 10_000
    round_pause_ms: int = 3_000
    max_payout: int = 100_000_000
    seed_chain_length: int = 100_000
    history_size: int = 500
    history_ttl: float = 300.0
    drain_seconds: float = 0.0
    """On SIGTERM, how long ``/readyz`` answers 503 (draining) before the sockets are closed with 1012."""
    handover_seconds: float = 5.0
    """On SIGTERM, how long the node may take to finish the rounds it drives before releasing them."""
    workers: int = 1
    """Worker processes ``croupier serve`` runs on its port (``--workers`` overrides); more than one needs Redis."""
    initdata_max_skew: int = 60
    """Seconds an initData's ``auth_date`` may lie in the future (clock skew) before it is refused."""
    handshake_timeout: float = 5.0
    """Seconds a connection has to complete its HTTP request / WebSocket upgrade before it is closed."""
    max_unauthenticated: int = 10_000
    """Connections a node holds at once that have not authenticated yet (more are refused at once)."""
    max_sockets_per_user: int = 5
    """Sockets one user may hold (across nodes with Redis); a new one closes the oldest with 4409."""
    user_rate_limit: float = 400.0
    user_rate_burst: int = 800
    """Requests a second one user may make over all their sockets and nodes, and the burst."""
    ip_connect_rate: float = 20.0
    ip_connect_burst: int = 200
    """New connections a second from one client address, and the burst (0: no limit)."""
    trusted_proxies: tuple[str, ...] = ()
    """Networks (CIDR) of proxies whose ``X-Forwarded-For`` names the real client address."""
    ip_connect_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Client networks the per-address connection limit does not apply to (local load tests, probes)."""

    @property
    def database_is_embedded(self) -> bool:
        """True when no ``DATABASE_URL`` is set and the node runs its own PostgreSQL."""
        return self.database_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; raise :class:`SettingsError` on the first bad one."""
        env = os.environ if env is None else env
        dev = _flag(env, "CROUPIER_DEV")
        data_dir = Path(env.get("CROUPIER_DATA_DIR") or ".croupier").absolute()
        bot_token = env.get("CROUPIER_BOT_TOKEN") or None
        raw_bot_id = env.get("CROUPIER_BOT_ID") or None
        if bot_token is None and raw_bot_id is None:
            if not dev:
                raise SettingsError(
                    "CROUPIER_BOT_TOKEN is not set: set it to your bot's token (or CROUPIER_BOT_ID for "
                    "third-party validation, or CROUPIER_DEV=1 for a generated development token)"
                )
            bot_token = load_or_create_dev_token(data_dir)
        bot_id = _bot_id(bot_token, raw_bot_id)
        env_name = env.get("CROUPIER_TELEGRAM_ENV", "production")
        if env_name not in TELEGRAM_PUBLIC_KEYS:
            raise SettingsError(f"CROUPIER_TELEGRAM_ENV must be 'production' or 'test', got {env_name!r}")
        public_key = env.get("CROUPIER_TELEGRAM_PUBLIC_KEY") or TELEGRAM_PUBLIC_KEYS[env_name]
        if not re.fullmatch(r"[0-9a-fA-F]{64}", public_key):
            raise SettingsError("CROUPIER_TELEGRAM_PUBLIC_KEY must be 64 hex characters (an Ed25519 public key)")
        database_url = env.get("DATABASE_URL") or None
        if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
            raise SettingsError("DATABASE_URL must start with postgresql:// or postgres://")
        redis_url = env.get("REDIS_URL") or None
        if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError("REDIS_URL must start with redis://, rediss:// or unix://")
        min_bet = _int(env, "CROUPIER_MIN_BET", 1, minimum=1)
        max_bet = _int(env, "CROUPIER_MAX_BET", 1_000_000, minimum=1)
        if max_bet < min_bet:
            raise SettingsError(f"CROUPIER_MAX_BET ({max_bet}) is below CROUPIER_MIN_BET ({min_bet})")
        max_payout = _int(env, "CROUPIER_MAX_PAYOUT", 100_000_000, minimum=1)
        games, game_params = _games(env, min_bet=min_bet, max_bet=max_bet, max_payout=max_payout)
        return cls(
            bot_token=bot_token,
            bot_id=bot_id,
            telegram_public_key=public_key.lower(),
            initdata_max_age=_int(env, "CROUPIER_INITDATA_MAX_AGE", 86400, minimum=0),
            database_url=database_url,
            redis_url=redis_url,
            node_id=env.get("CROUPIER_NODE_ID") or f"{socket.gethostname()}-{os.getpid()}",
            data_dir=data_dir,
            dev=dev,
            auth_timeout=_float(env, "CROUPIER_AUTH_TIMEOUT", 10.0),
            max_frame_bytes=_int(env, "CROUPIER_MAX_FRAME_BYTES", 16 * 1024, minimum=256),
            send_queue_frames=_int(env, "CROUPIER_SEND_QUEUE_FRAMES", 256, minimum=8),
            malformed_limit=_int(env, "CROUPIER_MALFORMED_LIMIT", 5, minimum=1),
            rate_limit=_float(env, "CROUPIER_RATE_LIMIT", 200.0),
            rate_burst=_int(env, "CROUPIER_RATE_BURST", 400, minimum=1),
            welcome_credit=_int(env, "CROUPIER_WELCOME_CREDIT", 1000 if dev else 0, minimum=0),
            min_bet=min_bet,
            max_bet=max_bet,
            bet_batch_max=_int(env, "CROUPIER_BET_BATCH_MAX", 500, minimum=1),
            bet_batch_wait=_int(env, "CROUPIER_BET_BATCH_WAIT_US", 2000, minimum=0) / 1e6,
            bet_batch_concurrency=_int(env, "CROUPIER_BET_BATCH_CONCURRENCY", 2, minimum=1),
            games=games,
            game_params=game_params,
            betting_ms=_int(env, "CROUPIER_BETTING_MS", 10_000, minimum=50),
            round_pause_ms=_int(env, "CROUPIER_ROUND_PAUSE_MS", 3_000, minimum=0),
            max_payout=max_payout,
            seed_chain_length=_int(env, "CROUPIER_SEED_CHAIN_LENGTH", 100_000, minimum=10),
            history_size=_int(env, "CROUPIER_HISTORY_SIZE", 500, minimum=1),
            history_ttl=_float(env, "CROUPIER_HISTORY_TTL", 300.0),
            drain_seconds=_float(env, "CROUPIER_DRAIN_SECONDS", 0.0, zero=True),
            handover_seconds=_float(env, "CROUPIER_HANDOVER_SECONDS", 5.0, zero=True),
            workers=_int(env, "CROUPIER_WORKERS", 1, minimum=1),
            initdata_max_skew=_int(env, "CROUPIER_INITDATA_MAX_SKEW", 60, minimum=0),
            handshake_timeout=_float(env, "CROUPIER_HANDSHAKE_TIMEOUT", 5.0),
            max_unauthenticated=_int(env, "CROUPIER_MAX_UNAUTHENTICATED", 10_000, minimum=1),
            max_sockets_per_user=_int(env, "CROUPIER_MAX_SOCKETS_PER_USER", 5, minimum=1),
            user_rate_limit=_float(env, "CROUPIER_USER_RATE_LIMIT", 400.0),
            user_rate_burst=_int(env, "CROUPIER_USER_RATE_BURST", 800, minimum=1),
            ip_connect_rate=_float(env, "CROUPIER_IP_CONNECT_RATE", 20.0, zero=True),
            ip_connect_burst=_int(env, "CROUPIER_IP_CONNECT_BURST", 200, minimum=1),
            trusted_proxies=_networks(env, "CROUPIER_TRUSTED_PROXIES", ""),
            ip_connect_exempt=_networks(env, "CROUPIER_IP_CONNECT_EXEMPT", "127.0.0.0/8,::1/128"),
        )


def load_or_create_dev_token(data_dir: Path) -> str:
    """The development bot token stored under ``data_dir``, generated on first use."""
    path = data_dir / DEV_TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if not _TOKEN.match(token):
            raise SettingsError(f"{path} does not hold a bot token; delete it to generate a new one")
        return token
    data_dir.mkdir(parents=True, exist_ok=True)
    token = f"{secrets.randbelow(9 * 10**9) + 10**9}:{secrets.token_urlsafe(26)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def _bot_id(token: str | None, raw_bot_id: str | None) -> int:
    token_id: int | None = None
    if token is not None:
        match = _TOKEN.match(token)
        if not match:
            raise SettingsError("CROUPIER_BOT_TOKEN is not a bot token (expected '<bot id>:<secret>' from BotFather)")
        token_id = int(match.group(1))
    if raw_bot_id is not None:
        if not raw_bot_id.isdigit() or int(raw_bot_id) <= 0:
            raise SettingsError(f"CROUPIER_BOT_ID must be a positive integer, got {raw_bot_id!r}")
        if token_id is not None and int(raw_bot_id) != token_id:
            raise SettingsError(
                f"CROUPIER_BOT_ID={raw_bot_id} names another bot than CROUPIER_BOT_TOKEN (bot {token_id})"
            )
        return int(raw_bot_id)
    assert token_id is not None
    return token_id


def _games(
    env: Mapping[str, str], *, min_bet: int, max_bet: int, max_payout: int
) -> tuple[tuple[str, ...] | None, dict[str, dict[str, Any]]]:
    from .games import configure_games

    raw_games = env.get("CROUPIER_GAMES", "").strip()
    games = tuple(g.strip() for g in raw_games.split(",") if g.strip()) if raw_games else None
    try:
        params = orjson.loads(env.get("CROUPIER_GAME_PARAMS") or "{}")
    except orjson.JSONDecodeError:
        raise SettingsError('CROUPIER_GAME_PARAMS must be JSON, e.g. {"crash": {"house_edge_bp": 100}}') from None
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise SettingsError("CROUPIER_GAME_PARAMS must map game names to objects of params")
    try:
        configure_games(games, params, min_bet=min_bet, max_bet=max_bet, max_payout=max_payout)
    except (ValueError, TypeError) as exc:
        name = "CROUPIER_GAMES" if "unknown game" in str(exc) else "CROUPIER_GAME_PARAMS"
        raise SettingsError(f"{name}: {exc}") from None
    return games, params


def _networks(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    raw = env.get(name)
    raw = default if raw is None else raw
    networks: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SettingsError(f"{name} must be comma-separated addresses or CIDR networks, got {item!r}") from None
    return tuple(networks)


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 1 or 0, got {value!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, zero: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not (value >= 0 if zero else value > 0) or value == float("inf"):
        raise SettingsError(f"{name} must be {'zero or more' if zero else 'positive'}, got {raw!r}")
    return value
