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
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from .auth import TELEGRAM_PUBLIC_KEYS

_TOKEN = re.compile(r"^(\d{1,20}):[A-Za-z0-9_-]{10,}$")
DEV_TOKEN_FILE = "dev-bot-token"  # noqa: S105 - a file name, not a secret
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{16,256}")
_ADMIN_KEY = re.compile(r"([A-Za-z0-9_.-]{1,64}):(read|write):([0-9a-fA-F]{64})")
"""Telegram allows 1-256 of these characters in a webhook's ``secret_token``; we ask for 16 or more."""
MAX_CHIPS = 2**53 - 1
"""Most chips one deposit may credit: every JS client can hold it exactly (the protocol's ``MAX_AMOUNT``)."""
INVOICE_TITLE = "{chips} chips"
INVOICE_DESCRIPTION = "{chips} chips for the tables, bought with {stars} Telegram Stars. Chips are not withdrawable."
PAYSUPPORT_TEXT = (
    "Payment support: if a payment in Telegram Stars went wrong, write to the operator of this bot with the date "
    "and the amount of the payment. Refunds are made in Stars, through Telegram; chips a refunded payment bought "
    "are taken back from the balance. Chips bought with Stars are not withdrawable."
)
TERMS_TEXT = (
    "Terms: chips are bought with Telegram Stars and are for play in this app only. Chips bought with Stars are "
    "not withdrawable: they are never paid out in Stars, money or anything else. If a payment is refunded, the "
    "chips it bought are taken back. Play only where it is legal for you, and only if you are of legal age."
)
MESSAGE_MAX_LENGTH = 4096
"""Longest text of a Telegram message."""


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a node is configured with. Build it with :meth:`from_env`."""

    bot_token: str | None = field(repr=False)
    bot_id: int
    telegram_public_key: str
    initdata_max_age: int
    database_url: str | None
    redis_url: str | None
    node_id: str
    data_dir: Path
    dev: bool
    log_format: str = "json"
    """``CROUPIER_LOG_FORMAT``: ``json`` (one JSON object per line; the default) or ``console`` (for people;
    the default with ``CROUPIER_DEV=1``): see :mod:`server.logs`."""
    auth_timeout: float = 10.0
    max_frame_bytes: int = 16 * 1024
    ws_compression: str = "off"
    """``CROUPIER_WS_COMPRESSION``: ``deflate`` accepts permessage-deflate when a client offers it (browsers
    do); ``off`` declines it. Off by default: a crash player gets 17.5% of the bytes, but the node spends 1.85x
    the CPU per frame and 1.8x the memory per socket (docs/performance.md, "WebSocket compression")."""
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
    metrics: bool = True
    """``CROUPIER_METRICS``: serve ``/metrics`` and run the metrics' samplers and the ledger audit (0: none of it)."""
    metrics_port: int | None = None
    """``CROUPIER_METRICS_PORT``: serve ``/metrics`` on this port (the workers share it) instead of the main port."""
    metrics_host: str = "0.0.0.0"  # noqa: S104 - a scrape port is for the monitoring network
    """``CROUPIER_METRICS_HOST``: the address ``CROUPIER_METRICS_PORT`` listens on."""
    ledger_audit_interval: float = 30.0
    """``CROUPIER_LEDGER_AUDIT_INTERVAL``: seconds between incremental ledger audit passes (0: no audit)."""
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
    dev_token: bool = False
    """The bot token was generated by ``CROUPIER_DEV`` (no such bot exists): no Bot API calls, no deposits."""
    telegram_env: str = "production"
    """``CROUPIER_TELEGRAM_ENV``: ``test`` sends Bot API calls to Telegram's test environment (``.../test/``)."""
    telegram_api_url: str = "https://api.telegram.org"
    """Base URL of the Bot API server (Telegram's, a self-hosted one, or the test suite's)."""
    webhook_secret: str | None = field(default=None, repr=False)
    """What Telegram sends in ``X-Telegram-Bot-Api-Secret-Token``; None: ``/telegram/webhook`` answers 404."""
    admin_keys: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    """``CROUPIER_ADMIN_KEYS``: the back office's keys as (name, scope ``read`` or ``write``, SHA-256 hex of
    the key); empty: ``/admin/api`` answers 404 (server/backoffice/)."""
    deposit_min_stars: int = 1
    deposit_max_stars: int = 10_000
    """Stars one deposit may be, at least and at most."""
    deposit_daily_stars: int = 50_000
    """Stars one user may deposit in any 24 hours (unpaid invoices of those 24 hours count)."""
    chips_per_star: int = 1
    """Chips credited per Star paid (the rate is fixed in each order when it is made)."""
    invoice_title: str = INVOICE_TITLE
    invoice_description: str = INVOICE_DESCRIPTION
    """Templates of the invoice's title (1-32 characters) and description (1-255), with ``{stars}`` and ``{chips}``."""
    public_url: str | None = None
    """``CROUPIER_PUBLIC_URL``: the nodes' public base URL (``croupier bot set-webhook`` sets the webhook to it
    + ``/telegram/webhook``); None: no public URL (a development node polls, see ``polling``)."""
    webapp_url: str | None = None
    """``CROUPIER_WEBAPP_URL``: the Mini App's HTTPS URL, opened by the button /start answers with."""
    polling: bool = False
    """Poll the bot's updates with ``getUpdates`` (one node at a time): ``CROUPIER_POLLING=1``, or by default
    (``auto``) on a ``CROUPIER_DEV`` node with a real bot token and no ``CROUPIER_PUBLIC_URL``."""
    paysupport_text: str = PAYSUPPORT_TEXT
    terms_text: str = TERMS_TEXT
    """What /paysupport and /terms answer (1-4096 characters)."""
    notify_sender: bool = True
    """``CROUPIER_NOTIFY_SENDER``: this node sends queued notifications (when it has a bot token of its own)."""
    notify_rate: int = 30
    """Messages a second the bot sends at most, over every node (Telegram's limit is about 30)."""
    notify_max_attempts: int = 8
    """Tries of one notification (on 5xx, timeouts) before it is dead-lettered."""
    big_win_multiple: int = 10
    db_pool_min: int = 2
    """``CROUPIER_DB_POOL_MIN``: connections the node's PostgreSQL pool keeps open (per worker process)."""
    db_pool_max: int = 20
    """``CROUPIER_DB_POOL_MAX``: most connections the pool opens (per worker process)."""
    db_pgbouncer: bool | None = None
    """``CROUPIER_DB_PGBOUNCER``: ``DATABASE_URL`` goes through PgBouncer (or another pooler) in transaction
    mode: no named prepared statements, session features on ``database_session_url``. None: detected at start."""
    database_session_url: str | None = None
    """``CROUPIER_DB_SESSION_URL``: PostgreSQL for the session-level features (advisory locks held for a
    connection's life: the node's claim, game leases, migrations, the polling lease), straight or through a
    session-mode pool; None: ``DATABASE_URL``."""
    """``CROUPIER_BIG_WIN_MULTIPLE``: a bet paying at least this many times its stake is announced to its
    player by the bot (a ``big_win`` notification); 0: never."""
    leaderboard_tz: str = "UTC"
    """``CROUPIER_LEADERBOARD_TZ``: the IANA time zone whose midnight starts a leaderboard's day (and Monday
    midnight its ISO week)."""
    limits_tz: str = "UTC"
    """``CROUPIER_LIMITS_TZ``: the IANA time zone of the calendar days, weeks (from Monday) and months of the
    players' own deposit, loss and wager limits."""

    @property
    def payments_enabled(self) -> bool:
        """True when the node has a real bot token of its own: it can create invoices and answer checkouts."""
        return self.bot_token is not None and not self.dev_token

    @property
    def database_is_embedded(self) -> bool:
        """True when no ``DATABASE_URL`` is set and the node runs its own PostgreSQL."""
        return self.database_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, bot_required: bool = True) -> Settings:
        """Read and check every setting; raise :class:`SettingsError` on the first bad one.

        ``bot_required`` (``croupier serve``, which checks initData): a bot token or bot id must be set
        (or ``CROUPIER_DEV``). Without it (commands that check no initData: ``credit``, ``audit``, ...) a
        missing one leaves ``bot_token`` None and ``bot_id`` 0, which names no bot."""
        env = os.environ if env is None else env
        dev = _flag(env, "CROUPIER_DEV")
        data_dir = Path(env.get("CROUPIER_DATA_DIR") or ".croupier").absolute()
        bot_token = env.get("CROUPIER_BOT_TOKEN") or None
        raw_bot_id = env.get("CROUPIER_BOT_ID") or None
        dev_token = False
        no_bot = bot_token is None and raw_bot_id is None and not dev and not bot_required
        if bot_token is None and raw_bot_id is None and not no_bot:
            if not dev:
                raise SettingsError(
                    "CROUPIER_BOT_TOKEN is not set: set it to your bot's token (or CROUPIER_BOT_ID for "
                    "third-party validation, or CROUPIER_DEV=1 for a generated development token)"
                )
            bot_token = load_or_create_dev_token(data_dir)
            dev_token = True
        bot_id = 0 if no_bot else _bot_id(bot_token, raw_bot_id)
        env_name = env.get("CROUPIER_TELEGRAM_ENV", "production")
        if env_name not in TELEGRAM_PUBLIC_KEYS:
            raise SettingsError(f"CROUPIER_TELEGRAM_ENV must be 'production' or 'test', got {env_name!r}")
        public_key = env.get("CROUPIER_TELEGRAM_PUBLIC_KEY") or TELEGRAM_PUBLIC_KEYS[env_name]
        if not re.fullmatch(r"[0-9a-fA-F]{64}", public_key):
            raise SettingsError("CROUPIER_TELEGRAM_PUBLIC_KEY must be 64 hex characters (an Ed25519 public key)")
        database_url = env.get("DATABASE_URL") or None
        if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
            raise SettingsError("DATABASE_URL must start with postgresql:// or postgres://")
        redis_url = _redis_url(env)
        min_bet = _int(env, "CROUPIER_MIN_BET", 1, minimum=1)
        max_bet = _int(env, "CROUPIER_MAX_BET", 1_000_000, minimum=1)
        if max_bet < min_bet:
            raise SettingsError(f"CROUPIER_MAX_BET ({max_bet}) is below CROUPIER_MIN_BET ({min_bet})")
        max_payout = _int(env, "CROUPIER_MAX_PAYOUT", 100_000_000, minimum=1)
        games, game_params = _games(env, min_bet=min_bet, max_bet=max_bet, max_payout=max_payout)
        cashier = _cashier(env)
        bot = _bot(env, dev=dev, real_token=bot_token is not None and not dev_token)
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
            log_format=_choice(env, "CROUPIER_LOG_FORMAT", ("console", "json") if dev else ("json", "console")),
            auth_timeout=_float(env, "CROUPIER_AUTH_TIMEOUT", 10.0),
            max_frame_bytes=_int(env, "CROUPIER_MAX_FRAME_BYTES", 16 * 1024, minimum=256),
            ws_compression=_choice(env, "CROUPIER_WS_COMPRESSION", ("off", "deflate")),
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
            metrics=_flag(env, "CROUPIER_METRICS", default=True),
            metrics_port=_int(env, "CROUPIER_METRICS_PORT", 0, minimum=1) or None,
            metrics_host=env.get("CROUPIER_METRICS_HOST") or "0.0.0.0",  # noqa: S104
            ledger_audit_interval=_float(env, "CROUPIER_LEDGER_AUDIT_INTERVAL", 30.0, zero=True),
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
            dev_token=dev_token,
            telegram_env=env_name,
            notify_sender=_flag(env, "CROUPIER_NOTIFY_SENDER", default=True),
            notify_rate=_int(env, "CROUPIER_NOTIFY_RATE", 30, minimum=1),
            notify_max_attempts=_int(env, "CROUPIER_NOTIFY_MAX_ATTEMPTS", 8, minimum=1),
            big_win_multiple=_int(env, "CROUPIER_BIG_WIN_MULTIPLE", 10, minimum=0),
            leaderboard_tz=_time_zone(env, "CROUPIER_LEADERBOARD_TZ"),
            limits_tz=_time_zone(env, "CROUPIER_LIMITS_TZ"),
            admin_keys=_admin_keys(env),
            **cashier,
            **bot,
            **_database(env, database_url),
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


def _redis_url(env: Mapping[str, str]) -> str | None:
    """``REDIS_URL``, checked: one server, Sentinels (``redis+sentinel://``) or a Redis Cluster
    (``redis+cluster://``), see server/broker/connect.py."""
    url = env.get("REDIS_URL") or None
    if url is None:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")):
        raise SettingsError(
            "REDIS_URL must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        )
    if url.startswith(("redis+sentinel://", "redis+cluster://")):
        from .broker.connect import RedisUrlError, parse_redis_url

        try:
            parse_redis_url(url)
        except RedisUrlError as exc:
            raise SettingsError(str(exc)) from None
    return url


def _database(env: Mapping[str, str], database_url: str | None) -> dict[str, Any]:
    """The settings of the PostgreSQL pool and of the session connections, checked."""
    low = _int(env, "CROUPIER_DB_POOL_MIN", 2, minimum=0)
    high = _int(env, "CROUPIER_DB_POOL_MAX", 20, minimum=1)
    if high < low:
        raise SettingsError(f"CROUPIER_DB_POOL_MAX ({high}) is below CROUPIER_DB_POOL_MIN ({low})")
    raw = env.get("CROUPIER_DB_PGBOUNCER", "").strip().lower()
    pgbouncer = None if raw in ("", "auto") else _flag(env, "CROUPIER_DB_PGBOUNCER")
    session_url = env.get("CROUPIER_DB_SESSION_URL") or None
    if session_url is not None:
        if database_url is None:
            raise SettingsError("CROUPIER_DB_SESSION_URL needs DATABASE_URL (the embedded PostgreSQL has no pooler)")
        if not session_url.startswith(("postgresql://", "postgres://")):
            raise SettingsError("CROUPIER_DB_SESSION_URL must start with postgresql:// or postgres://")
    elif pgbouncer:
        raise SettingsError(
            "CROUPIER_DB_PGBOUNCER=1 needs CROUPIER_DB_SESSION_URL: PostgreSQL straight (or through a session-mode "
            "pool) for the advisory locks a node holds for a connection's life"
        )
    return {"db_pool_min": low, "db_pool_max": high, "db_pgbouncer": pgbouncer, "database_session_url": session_url}


def _cashier(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings of the Bot API client, the webhook and the Stars cashier, checked."""
    api_url = (env.get("CROUPIER_TELEGRAM_API_URL") or "https://api.telegram.org").rstrip("/")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", api_url):
        raise SettingsError(f"CROUPIER_TELEGRAM_API_URL must be an http:// or https:// base URL, got {api_url!r}")
    secret = env.get("CROUPIER_WEBHOOK_SECRET") or None
    if secret is not None and not _WEBHOOK_SECRET.fullmatch(secret):
        raise SettingsError("CROUPIER_WEBHOOK_SECRET must be 16-256 characters, each A-Z, a-z, 0-9, _ or -")
    low = _int(env, "CROUPIER_DEPOSIT_MIN_STARS", 1, minimum=1)
    high = _int(env, "CROUPIER_DEPOSIT_MAX_STARS", 10_000, minimum=1)
    if high < low:
        raise SettingsError(f"CROUPIER_DEPOSIT_MAX_STARS ({high}) is below CROUPIER_DEPOSIT_MIN_STARS ({low})")
    daily = _int(env, "CROUPIER_DEPOSIT_DAILY_STARS", 50_000, minimum=1)
    if daily < low:
        raise SettingsError(f"CROUPIER_DEPOSIT_DAILY_STARS ({daily}) is below CROUPIER_DEPOSIT_MIN_STARS ({low})")
    rate = _int(env, "CROUPIER_CHIPS_PER_STAR", 1, minimum=1)
    if high * rate > MAX_CHIPS:
        raise SettingsError(f"CROUPIER_CHIPS_PER_STAR ({rate}) x CROUPIER_DEPOSIT_MAX_STARS ({high}) is over 2^53-1")
    title = _template(env, "CROUPIER_INVOICE_TITLE", INVOICE_TITLE, 32, stars=high, chips=high * rate)
    description = _template(env, "CROUPIER_INVOICE_DESCRIPTION", INVOICE_DESCRIPTION, 255, stars=high,
                            chips=high * rate)  # fmt: skip
    return {
        "telegram_api_url": api_url,
        "webhook_secret": secret,
        "deposit_min_stars": low,
        "deposit_max_stars": high,
        "deposit_daily_stars": daily,
        "chips_per_star": rate,
        "invoice_title": title,
        "invoice_description": description,
    }


def _bot(env: Mapping[str, str], *, dev: bool, real_token: bool) -> dict[str, Any]:
    """The settings of the bot's commands, its webhook URL and long polling, checked."""
    public_url = (env.get("CROUPIER_PUBLIC_URL") or "").rstrip("/") or None
    if public_url is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", public_url):
        raise SettingsError(f"CROUPIER_PUBLIC_URL must be an https:// base URL (no query), got {public_url!r}")
    webapp_url = env.get("CROUPIER_WEBAPP_URL") or None
    if webapp_url is not None and not re.fullmatch(r"https://[^\s/?#]+\S*", webapp_url):
        raise SettingsError(f"CROUPIER_WEBAPP_URL must be an https:// URL (Telegram opens Mini Apps over HTTPS only), "
                            f"got {webapp_url!r}")  # fmt: skip
    raw = env.get("CROUPIER_POLLING", "").strip().lower()
    if raw in ("", "auto"):
        polling = dev and real_token and public_url is None
    elif raw in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        polling = _flag(env, "CROUPIER_POLLING")
    else:
        raise SettingsError(f"CROUPIER_POLLING must be auto, 1 or 0, got {raw!r}")
    if polling and not real_token:
        raise SettingsError("CROUPIER_POLLING=1 needs CROUPIER_BOT_TOKEN, a real bot's token, to poll its updates")
    texts: dict[str, str] = {}
    for name, default in (("CROUPIER_PAYSUPPORT_TEXT", PAYSUPPORT_TEXT), ("CROUPIER_TERMS_TEXT", TERMS_TEXT)):
        text = env.get(name) or default
        if not 1 <= len(text.strip()) <= MESSAGE_MAX_LENGTH:
            raise SettingsError(f"{name} must be 1-{MESSAGE_MAX_LENGTH} characters")
        texts[name] = text
    return {
        "public_url": public_url,
        "webapp_url": webapp_url,
        "polling": polling,
        "paysupport_text": texts["CROUPIER_PAYSUPPORT_TEXT"],
        "terms_text": texts["CROUPIER_TERMS_TEXT"],
    }


def _template(env: Mapping[str, str], name: str, default: str, most: int, *, stars: int, chips: int) -> str:
    """A text with ``{stars}`` and ``{chips}`` only, 1 to ``most`` characters once filled in for the largest deposit."""
    template = env.get(name) or default
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise SettingsError(f"{name} is not a valid template ({exc}); use {{stars}} and {{chips}}") from None
    if not fields <= {"stars", "chips"}:
        raise SettingsError(f"{name} may use {{stars}} and {{chips}} only, got {sorted(fields)}")
    text = template.format(stars=stars, chips=chips)
    if not 1 <= len(text.strip()) <= most:
        raise SettingsError(f"{name} must be 1-{most} characters once filled in (for the largest deposit: {text!r})")
    return template


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


def _admin_keys(env: Mapping[str, str]) -> tuple[tuple[str, str, str], ...]:
    """``CROUPIER_ADMIN_KEYS``: ``name:scope:sha256hex`` entries, comma-separated. A bad entry is named by its
    position only: it may hold a key pasted by mistake, which must not reach a log."""
    keys: list[tuple[str, str, str]] = []
    for position, entry in enumerate((env.get("CROUPIER_ADMIN_KEYS") or "").split(","), start=1):
        if not entry.strip():
            continue
        match = _ADMIN_KEY.fullmatch(entry.strip())
        if match is None:
            raise SettingsError(f"CROUPIER_ADMIN_KEYS: entry {position} is not name:scope:sha256hex (a name of "
                                "1-64 of A-Z a-z 0-9 _ . -, scope read or write, 64 hex characters)")  # fmt: skip
        name, scope, digest = match.groups()
        if any(name == known for known, _, _ in keys):
            raise SettingsError(f"CROUPIER_ADMIN_KEYS: the name {name!r} is given twice")
        keys.append((name, scope, digest.lower()))
    return tuple(keys)


def _flag(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    value = env.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("0", "false", "no", "off"):
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


def _time_zone(env: Mapping[str, str], name: str) -> str:
    value = env.get(name) or "UTC"
    if value != "UTC":  # UTC needs no time zone database
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"{name} must be an IANA time zone name this machine knows (Europe/Berlin, "
                                f"America/New_York, UTC), got {value!r}") from None  # fmt: skip
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first when unset), case-insensitive."""
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise SettingsError(f"{name} must be {' or '.join(choices)}, got {env.get(name)!r}")
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
