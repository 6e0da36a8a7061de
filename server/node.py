"""A running node's shared resources, opened once in the app's lifespan and handed down.

:class:`Node` owns the PostgreSQL pool (and the embedded PostgreSQL when no
``DATABASE_URL`` is set), the broker, the initData validator, the stores, and the Bot API
client (its HTTP session) with the Stars cashier, the webhook and the notification sender.
Nothing here is a module global: tests open as many nodes as they like.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiogram import Bot

from .auth import Ed25519Verifier, HmacVerifier, InitDataValidator, Verifier
from .broker import Broker, broker_from_url
from .broker.quota import quota_from_url
from .db.pool import create_pool, database_routes
from .db.provision import migrate_schema, running_database
from .edge.audience import Audience
from .edge.feeds import UserFeeds
from .edge.gamefeeds import GameFeeds
from .edge.userlimits import UserLimits
from .games import configure_games
from .leaderboards import (
    LeaderboardRelay,
    Leaderboards,
    Planner,
    PlayerNames,
    combine_settled_hooks,
    record_settled,
    store_from_url,
    time_zone,
)
from .ledger import BatchOptions, Ledger, OutboxRelay
from .metrics.ledgerhealth import LedgerAuditor
from .players import Calendar, PlayerHistory, ResponsibleGaming
from .risk import SigninAddresses
from .rounds.engine import EngineSettings, RoundEngine
from .settings import Settings
from .telegram import (
    BigWins,
    BotCommands,
    BotTexts,
    Cashier,
    CashierOptions,
    DepositLimits,
    FloodLimits,
    PollingLease,
    Refunds,
    Sender,
    SenderOptions,
    TelegramWebhook,
    UpdatePoller,
    UpdateRouter,
    allowed_in_initdata,
    create_bot,
    flood_gate_from_url,
)

log = logging.getLogger(__name__)


def validator_for(settings: Settings) -> InitDataValidator:
    """HMAC with the bot token when there is one, else Ed25519 with the bot id."""
    verifier: Verifier
    if settings.bot_token is not None:
        verifier = HmacVerifier(settings.bot_token)
    else:
        verifier = Ed25519Verifier(settings.bot_id, settings.telegram_public_key)
    return InitDataValidator(verifier, max_age=settings.initdata_max_age, max_skew=settings.initdata_max_skew)


@dataclass(slots=True)
class Node:
    """Everything a connection needs from the node it is on."""

    settings: Settings
    pool: asyncpg.Pool
    broker: Broker
    validator: InitDataValidator
    ledger: Ledger
    rounds: RoundEngine
    audience: Audience
    feeds: UserFeeds
    relay: OutboxRelay
    user_limits: UserLimits
    cashier: Cashier
    players: PlayerHistory
    leaderboards: Leaderboards
    responsible: ResponsibleGaming
    signin_addresses: SigninAddresses
    webhook: TelegramWebhook | None = None
    """``POST /telegram/webhook``, when the node has a bot token of its own and ``CROUPIER_WEBHOOK_SECRET``."""
    database: str = "DATABASE_URL"
    """Where the data lives, for people: ``DATABASE_URL`` or the embedded server's data dir."""
    draining: bool = False
    """Set by :meth:`drain`: ``/readyz`` answers 503 so load balancers send no new sockets here."""

    @property
    def games(self) -> tuple[str, ...]:
        return self.rounds.games()

    async def drain(self) -> None:
        """The first step of a graceful stop (SIGTERM): readiness goes false at once; during
        ``CROUPIER_DRAIN_SECONDS`` the node keeps serving while load balancers take it out, and
        meanwhile hands its games over (see :meth:`RoundEngine.hand_over`). The server closes the
        sockets with 1012 after this returns."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: /readyz answers 503; closing sockets in %.1f s", self.settings.drain_seconds)
        await asyncio.gather(asyncio.sleep(self.settings.drain_seconds),
                             self.rounds.hand_over(self.settings.handover_seconds))  # fmt: skip

    async def check_ready(self) -> dict[str, str]:
        """Ask PostgreSQL and the broker whether they answer; map each to ``ok`` or the failure."""
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(2):
                await self.pool.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:  # readiness reports any failure, it never raises
            checks["postgres"] = f"unavailable: {type(exc).__name__}"
        try:
            async with asyncio.timeout(2):
                await self.broker.ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unavailable: {type(exc).__name__}"
        return checks

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[Node]:
        """Start every resource the settings ask for, migrate the schema, and yield the node.

        On exit everything is closed in reverse order, the embedded PostgreSQL included when this
        node started it (a server another process started is left running).

        The node claims its database first (:class:`~server.db.instance.DatabaseClaim`): alone on
        the in-process broker, beside other nodes with Redis; else
        :class:`~server.db.instance.DatabaseInUse` is raised. If the database goes away for good
        while the node runs (its embedded PostgreSQL stopped), the node is interrupted as by
        Ctrl-C and, once everything is closed, the failure is raised from here.
        """
        from .db.instance import DatabaseClaim, interrupt_this_process

        async with AsyncExitStack() as stack:
            database = await stack.enter_async_context(running_database(settings.database_url, settings.data_dir))
            dsn = database.dsn
            if database.embedded is not None:
                log.info("embedded PostgreSQL ready (data in %s)", database.embedded.data_dir)
            routes = await database_routes(dsn, session_url=settings.database_session_url,
                                           pgbouncer=False if database.embedded else settings.db_pgbouncer)  # fmt: skip
            claim = DatabaseClaim(routes.session_dsn, node_id=settings.node_id, shared=settings.redis_url is not None,
                                  postmaster=database.embedded, on_failure=interrupt_this_process)  # fmt: skip
            await claim.acquire()
            stack.push_async_callback(claim.release)
            pool = await create_pool(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
                                     pgbouncer=routes.pgbouncer, command_timeout=10)  # fmt: skip
            stack.push_async_callback(pool.close)
            applied = await migrate_schema(routes.session_dsn)
            if applied:
                log.info("applied migrations: %s", ", ".join(f"{m.version:04d}_{m.name}" for m in applied))
            signin_addresses = SigninAddresses(pool)  # for the risk flags: written once a second, in bulk
            signin_addresses.start()
            stack.push_async_callback(signin_addresses.close)
            broker = broker_from_url(settings.redis_url)
            stack.push_async_callback(broker.close)
            relay = OutboxRelay(pool, broker, retention=settings.history_ttl)
            relay.start()
            stack.push_async_callback(relay.close)
            batches = BatchOptions(
                max_batch=settings.bet_batch_max,
                max_wait=settings.bet_batch_wait,
                concurrency=settings.bet_batch_concurrency,
            )
            board_store = store_from_url(settings.redis_url)
            stack.push_async_callback(board_store.close)
            planner = Planner(time_zone(settings.leaderboard_tz))
            hooks = _notification_hooks(settings)
            hooks["on_settled"] = combine_settled_hooks(hooks.get("on_settled"), record_settled)
            calendar = Calendar(time_zone(settings.limits_tz))
            responsible = ResponsibleGaming(pool, calendar)
            ledger = Ledger(pool, welcome_credit=settings.welcome_credit, batches=batches, announce=relay.announce,
                            calendar=calendar, **hooks)  # fmt: skip
            await ledger.start()
            stack.push_async_callback(ledger.close)
            board_relay = LeaderboardRelay(routes.session_dsn, board_store, broker, planner=planner)
            await board_relay.start()
            stack.push_async_callback(board_relay.close)
            leaderboards = Leaderboards(board_store, PlayerNames(pool), broker, tz=planner.tz)
            await leaderboards.start()
            stack.push_async_callback(leaderboards.close)
            cashier, webhook = await _open_cashier(settings, pool, ledger, stack, dsn=routes.session_dsn,
                                                   batches=batches, responsible=responsible)  # fmt: skip
            audience = Audience()
            handlers, rules = configure_games(
                settings.games,
                settings.game_params,
                min_bet=settings.min_bet,
                max_bet=settings.max_bet,
                max_payout=settings.max_payout,
            )
            feeds = UserFeeds(broker, audience, relay.events_after)
            user_limits = UserLimits(quota_from_url(settings.redis_url), broker, settings.node_id,
                                     max_sockets=settings.max_sockets_per_user, rate=settings.user_rate_limit,
                                     burst=settings.user_rate_burst)  # fmt: skip
            await user_limits.start()
            stack.push_async_callback(user_limits.close)
            engine = RoundEngine(
                dsn=routes.session_dsn,
                node_id=settings.node_id,
                pool=pool,
                ledger=ledger,
                broker=broker,
                handlers=handlers,
                rules=rules,
                settings=EngineSettings(
                    betting_ms=settings.betting_ms,
                    pause_ms=settings.round_pause_ms,
                    chain_length=settings.seed_chain_length,
                    history_size=settings.history_size,
                    history_ttl=settings.history_ttl,
                ),
            )
            await engine.start()
            stack.push_async_callback(engine.close)
            game_feeds = GameFeeds(broker, audience, engine.games())  # after the engine: see its docstring
            await game_feeds.start()
            stack.push_async_callback(game_feeds.close)
            if settings.metrics and settings.ledger_audit_interval > 0:  # one node audits: a session lock
                auditor = LedgerAuditor(routes.session_dsn, interval=settings.ledger_audit_interval,
                                        name=settings.node_id)  # fmt: skip
                auditor.start()
                stack.push_async_callback(auditor.close)
            yield cls(
                settings=settings,
                pool=pool,
                broker=broker,
                validator=validator_for(settings),
                ledger=ledger,
                rounds=engine,
                audience=audience,
                feeds=feeds,
                relay=relay,
                user_limits=user_limits,
                cashier=cashier,
                players=PlayerHistory(pool),
                leaderboards=leaderboards,
                responsible=responsible,
                signin_addresses=signin_addresses,
                webhook=webhook,
                database=database.description,
            )
        if claim.failure is not None:
            raise claim.failure


def _notification_hooks(settings: Settings) -> dict[str, Any]:
    """The ledger's hooks feeding the bot's notifications, when the node has a bot of its own: big wins
    queued in their settlement (``CROUPIER_BIG_WIN_MULTIPLE``, 0: none), and users whose initData
    allows messages made reachable at sign-in."""
    if not settings.payments_enabled:
        return {}
    hooks: dict[str, Any] = {"on_sign_in": allowed_in_initdata}
    if settings.big_win_multiple > 0:
        hooks["on_settled"] = BigWins(settings.big_win_multiple).queue
    return hooks


async def _open_cashier(settings: Settings, pool: asyncpg.Pool, ledger: Ledger, stack: AsyncExitStack, *,
                        dsn: str, batches: BatchOptions,
                        responsible: ResponsibleGaming) -> tuple[Cashier, TelegramWebhook | None]:  # fmt: skip
    """The Stars cashier, with a bot when the node has a token of its own (its HTTP session closed by
    ``stack``; no request is made until the first call), and the webhook when a secret is set too; the
    updates' router behind the webhook, and long polling with ``settings.polling`` (its lease on ``dsn``)."""
    options = CashierOptions(
        limits=DepositLimits(settings.deposit_min_stars, settings.deposit_max_stars, settings.deposit_daily_stars),
        chips_per_star=settings.chips_per_star,
        title=settings.invoice_title,
        description=settings.invoice_description,
    )
    if not settings.payments_enabled:
        log.info("deposits disabled: no bot token of this node's own (CROUPIER_BOT_TOKEN)")
        # Takes no payment: not started.
        return Cashier(pool, ledger, None, options, bot_id=settings.bot_id, responsible=responsible), None
    assert settings.bot_token is not None
    bot = create_bot(settings.bot_token, api_url=settings.telegram_api_url, env=settings.telegram_env)
    stack.push_async_callback(bot.session.close)
    if settings.notify_sender:
        _start_sender(settings, pool, bot, stack)
    cashier = Cashier(pool, ledger, bot, options, bot_id=settings.bot_id, batches=batches, responsible=responsible)
    cashier.start()
    stack.push_async_callback(cashier.close)
    texts = BotTexts(settings.webapp_url, paysupport=settings.paysupport_text, terms=settings.terms_text)
    router = UpdateRouter(cashier, Refunds(pool, ledger, bot_id=settings.bot_id),
                          BotCommands(pool, ledger, bot, texts, bot_id=settings.bot_id))  # fmt: skip
    if settings.polling:  # long polling (development): the node holding the lease polls, the others stand by
        poller = UpdatePoller(bot, router, PollingLease(dsn, settings.bot_id))
        poller.start()
        stack.push_async_callback(poller.close)
    if settings.webhook_secret is None:
        return cashier, None
    return cashier, TelegramWebhook(settings.webhook_secret, bot, router)


def _start_sender(settings: Settings, pool: asyncpg.Pool, bot: Bot, stack: AsyncExitStack) -> None:
    """The notification sender on ``bot``, its flood gate in Redis when the node has ``REDIS_URL`` (shared
    with the other nodes) or in this process; stopped by ``stack`` before the bot's session closes."""
    limits = FloodLimits(rate=settings.notify_rate)
    gate = flood_gate_from_url(settings.redis_url, limits, bot_id=settings.bot_id)
    stack.push_async_callback(gate.close)
    options = SenderOptions(limits=limits, max_attempts=settings.notify_max_attempts)
    sender = Sender(pool, bot, gate, options, name=settings.node_id)
    sender.start()
    stack.push_async_callback(sender.close)
