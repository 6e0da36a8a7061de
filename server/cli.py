"""The ``croupier`` command: ``serve``, ``migrate``, ``credit``, ``audit``, ``notify``, ``simulate``, ``verify``,
``schema`` and ``dev-initdata``; ``stars`` and ``bot`` (:mod:`server.telegram.commands`).

Settings come from the environment (see :mod:`server.settings`); a bad one stops the
command with one line naming it, and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from .auth import sign_init_data
from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from .workers import Supervisor

log = logging.getLogger("croupier")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``croupier`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="croupier", description="Real-time game server for Telegram Mini Apps.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a node")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes sharing the port, each a full node (default: CROUPIER_WORKERS or 1; "
                            "more than 1 needs REDIS_URL)")  # fmt: skip
    serve.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor
    serve.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor

    commands.add_parser("migrate", help="apply database migrations and exit")

    credit = commands.add_parser("credit", help="credit (or, with a negative AMOUNT, debit) a user's wallet")
    credit.add_argument("user_id", type=int, metavar="USER_ID", help="Telegram user id (must have authenticated once)")
    credit.add_argument("amount", type=int, metavar="AMOUNT",
                        help="integer amount, at most 2^53-1 either way; negative to debit")  # fmt: skip
    credit.add_argument("--reason", required=True, help="why, for the ledger and the people who read it")

    commands.add_parser("audit", help="check the ledger: zero-sum transactions, balances, no negative wallets")

    stars = commands.add_parser("stars", help="Telegram Stars payments: refunds, reconciliation")
    stars_commands = stars.add_subparsers(dest="stars_command", required=True)
    refund = stars_commands.add_parser("refund", help="refund a payment (refundStarPayment) and reverse its deposit")
    refund.add_argument("charge_id", metavar="CHARGE_ID", help="the payment's telegram_payment_charge_id")
    refund.add_argument("--reason", required=True, help="why, for the ledger and the people who read it")
    refund.add_argument("--force-flag", action="store_true",
                        help="refund even if the wallet holds less than the payment credited: the wallet is taken to "
                             "zero, the shortfall recorded and the account flagged")  # fmt: skip
    reconcile = stars_commands.add_parser("reconcile", help="compare Telegram's Star transactions with the ledger")
    reconcile.add_argument("--since", default=None, metavar="DATE",
                           help="only what happened since DATE (2026-01-31, or 2026-01-31T18:00; UTC)")  # fmt: skip
    reconcile.add_argument("--fix", action="store_true",
                           help="credit missing payments (once per charge id), reverse unreversed refunds")  # fmt: skip

    bot = commands.add_parser("bot", help="the bot's webhook and menu button")
    bot_commands = bot.add_subparsers(dest="bot_command", required=True)
    set_webhook = bot_commands.add_parser("set-webhook", help="set the webhook to CROUPIER_PUBLIC_URL/telegram/webhook")
    set_webhook.add_argument("--drop-pending", action="store_true", help="drop the updates waiting for delivery")
    delete_webhook = bot_commands.add_parser("delete-webhook", help="delete the webhook (updates wait for polling)")
    delete_webhook.add_argument("--drop-pending", action="store_true", help="drop the updates waiting for delivery")
    bot_commands.add_parser("info", help="print getMe and getWebhookInfo")
    menu = bot_commands.add_parser("set-menu-button", help="make the bot's menu button open the Mini App at URL")
    menu.add_argument("url", metavar="URL", help="the Mini App's https:// URL")
    menu.add_argument("--text", default="Play", help="the button's text (default Play)")

    sim = commands.add_parser("simulate", help="Monte Carlo of a game's handler: RTP with a confidence interval")
    sim.add_argument("game")
    sim.add_argument("--rounds", type=int, default=1_000_000, help="rounds per strategy (default 1,000,000)")
    sim.add_argument("--strategy", action="append", default=None,
                     help="a strategy the game names, or a bet's params as JSON, e.g. '{\"auto_cashout\": 150}'; "
                          "repeat for several (default: every strategy the game names, one per bet type)")  # fmt: skip
    sim.add_argument("--amount", type=int, default=100, help="stake per round (default 100)")
    sim.add_argument("--seed", default="0" * 64, help="start of the simulation's seed chain (64 hex)")
    sim.add_argument("--params", default=None,
                     help="the game's params as JSON, e.g. '{\"house_edge_bp\": 200}' "
                          "(default: its entry in CROUPIER_GAME_PARAMS, then the game's defaults)")  # fmt: skip

    verify = commands.add_parser("verify", help="recompute a round's outcome (and a bet's own draw) from its seed")
    verify.add_argument("game")
    verify.add_argument("--seed", required=True, help="the seed revealed when the round settled (64 hex)")
    verify.add_argument("--salt", required=True, help="the round's salt (its chain's terminating hash)")
    verify.add_argument("--params", default=None,
                        help="the game's params as JSON, as the node had them "
                             "(default: its entry in CROUPIER_GAME_PARAMS, then the game's defaults)")  # fmt: skip
    verify.add_argument(
        "--bet-id",
        type=int,
        default=None,
        help="also recompute this bet's own draw (games where each bet draws one) and its payout",
    )
    verify.add_argument("--bet", default=None, help="with --bet-id: the bet's params as JSON, as bet_ok showed them")
    verify.add_argument("--amount", type=int, default=100, help="with --bet-id: the stake (default 100)")

    commands.add_parser("schema", help="print the protocol's JSON Schema with every game's params and bet types")

    notify = commands.add_parser("notify", help="queue an announcement to every reachable user and show its sending")
    notify.add_argument("--all", dest="text", metavar="TEXT", required=True,
                        help="the text (plain, at most 4096 characters), sent to every reachable user")  # fmt: skip
    notify.add_argument("--id", dest="key", default=None,
                        help="the announcement's key (default: a hash of the text: running the same command again "
                             "resumes it; give another key to send the same text again)")  # fmt: skip
    notify.add_argument("--no-wait", action="store_true", help="return once everything is queued")

    dev = commands.add_parser("dev-initdata", help="print a signed initData for the configured bot token")
    dev.add_argument("--user-id", type=int, required=True, help="Telegram user id to sign for")
    dev.add_argument("--first-name", default="Player", help="first name in the user object")
    dev.add_argument("--username", default=None, help="optional username")

    args = parser.parse_args(argv)
    if args.command in ("simulate", "verify", "schema"):  # pure computations: no settings, no database
        return _game_command(args)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"croupier: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        workers = args.workers if args.workers is not None else settings.workers
        if workers < 1:
            print("croupier: --workers must be at least 1", file=sys.stderr)
            return 2
        if workers > 1 and args.listen_fd is None:
            return _supervise(settings, args.host, args.port, args.log_level, workers)
        return _serve(settings, args.host, args.port, args.log_level, listen_fd=args.listen_fd,
                      ready_fd=args.ready_fd)  # fmt: skip
    if args.command in ("stars", "bot"):
        return asyncio.run(_telegram_command(settings, args))
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "credit":
        return asyncio.run(_credit(settings, args.user_id, args.amount, args.reason))
    if args.command == "audit":
        return asyncio.run(_audit(settings))
    if args.command == "notify":
        return asyncio.run(_notify(settings, args.text, args.key, wait=not args.no_wait))
    return _dev_initdata(settings, args.user_id, args.first_name, args.username)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _supervise(settings: Settings, host: str, port: int, log_level: str, workers: int) -> int:
    """``croupier serve --workers N``: bind the port, start the database if embedded, run N workers."""
    from .workers import Supervisor, bind_sockets

    _configure_logging(log_level)
    if settings.redis_url is None:
        print(f"croupier: --workers {workers} needs REDIS_URL: the workers of a node share events through Redis",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        sockets = bind_sockets(host, port, workers)
    except OSError as exc:
        print(f"croupier: {exc.strerror}", file=sys.stderr)
        return 1

    async def run() -> int:
        async with _database(settings, take_over=True) as dsn:
            worker = [sys.executable, "-m", "server", "serve", "--host", host, "--port",
                      str(sockets[0].getsockname()[1]), "--log-level", log_level]  # fmt: skip
            supervisor = Supervisor(sockets, worker, env={**os.environ, "DATABASE_URL": dsn},
                                    node_id=settings.node_id, host=host)  # fmt: skip
            watching = asyncio.create_task(_watch_embedded(settings, supervisor))
            try:
                status = await supervisor.run()
            finally:
                watching.cancel()
            return 1 if watching.done() and not watching.cancelled() and watching.result() else status

    try:
        with contextlib.suppress(KeyboardInterrupt):
            status = asyncio.run(run())
            if status == 0:
                print("Croupier stopped.", flush=True)
            return status
        return 1
    finally:
        for sock in sockets:
            sock.close()


def _serve(settings: Settings, host: str, port: int, log_level: str, *, listen_fd: int | None = None,
           ready_fd: int | None = None) -> int:  # fmt: skip
    """Run one node; with ``listen_fd``, as a worker of :func:`_supervise` on the socket it was handed."""
    from .app import create_app
    from .drain import DrainingServer
    from .gcpolicy import freeze_startup, tune_for_many_connections
    from .node import Node
    from .serving import uvicorn_config

    _configure_logging(log_level)
    tune_for_many_connections()

    running: list[Node] = []

    def announce(node: Node) -> None:
        running.append(node)
        freeze_startup()
        if ready_fd is not None:  # a worker: one line here, the supervisor says when all are up
            print(f"Croupier worker {settings.node_id} ready (pid {os.getpid()})", flush=True)
            os.write(ready_fd, b"!")
            os.close(ready_fd)
            return
        lines = [
            f"Croupier node {settings.node_id} serving on http://{host}:{port}  (WebSocket: ws://{host}:{port}/ws)",
            f"  PostgreSQL: {node.database}",
            f"  broker: {'Redis (REDIS_URL)' if settings.redis_url else 'in-process'}",
        ]
        if settings.bot_token is not None:
            lines.append("  dev initData: make dev-initdata USER_ID=42")
            lines.append("            or: CROUPIER_DEV=1 .venv/bin/croupier dev-initdata --user-id 42")
        lines.append("  Ctrl-C stops the node and everything it started.")
        print("\n".join(lines), flush=True)

    # uvloop, httptools behind connection admission (handshake timeout, caps), the lean WebSocket protocol.
    app = create_app(settings, on_ready=announce)
    config = uvicorn_config(app, settings, host=host, port=port, log_level=log_level)

    async def drain() -> None:
        if running:
            await running[0].drain()

    server = DrainingServer(config, drain)
    sockets = None
    if listen_fd is not None:
        from .workers import die_with_parent

        die_with_parent()
        sockets = [socket.socket(fileno=listen_fd)]
    # The node refused to start (another node uses its database) or stopped because its database went away
    # (then it interrupted itself, as Ctrl-C does): one line and that exit status, not uvicorn's traceback.
    from .db.instance import FailureReport, NodeFailure

    failures: list[NodeFailure] = []
    app.add_middleware(FailureReport, failures=failures)
    try:
        # uvicorn re-raises Ctrl-C after its graceful shutdown; everything is stopped by then.
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=sockets)
    except SystemExit:  # uvicorn's exit when the lifespan failed at startup
        if not failures:
            raise
    if failures:
        print(f"croupier: {failures[0]}", file=sys.stderr, flush=True)
        return failures[0].exit_status
    if server.started:
        print("Croupier stopped.", flush=True)
    return 0 if server.started else 1


async def _watch_embedded(settings: Settings, supervisor: Supervisor) -> bool:
    """With the embedded PostgreSQL, stop the workers (and the node, status 1) if it stops: they
    would otherwise answer 503 forever, since nothing starts it again. True when it stopped."""
    from .db.embedded import EmbeddedPostgres, default_pg_data_dir

    if settings.database_url is not None:
        return False
    server = EmbeddedPostgres(default_pg_data_dir(settings.data_dir))
    await asyncio.to_thread(server.start, take_over=False)  # finds the running one; never stops it
    while server.is_running():  # noqa: ASYNC110 - a process of another user's: polled, nothing to await
        await asyncio.sleep(0.5)
    print(f"croupier: the embedded PostgreSQL of this node (data in {server.data_dir}) has stopped; "
          "stopping the workers", file=sys.stderr, flush=True)  # fmt: skip
    supervisor.stop()
    return True


@contextlib.asynccontextmanager
async def _database(settings: Settings, *, take_over: bool = False) -> AsyncIterator[str]:
    """The DSN of a migrated database: DATABASE_URL, or the embedded PostgreSQL (started if it
    is not running, and then stopped after). A server another live process started (a running
    node) is used and left running; one whose owner died is adopted, and stopped after, only with
    ``take_over``: the supervisor of workers owns it like a single node does."""
    from .db.provision import migrate_schema, running_database

    async with running_database(settings.database_url, settings.data_dir, take_over=take_over) as database:
        await migrate_schema(database.dsn)
        yield database.dsn


async def _migrate(settings: Settings) -> int:
    import asyncpg

    from .db.migrations import available

    _configure_logging("warning")
    async with _database(settings) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        finally:
            await conn.close()
    print(f"schema at migration {rows[-1]['version']:04d}_{rows[-1]['name']} ({len(available())} known)")
    return 0


async def _credit(settings: Settings, user_id: int, amount: int, reason: str) -> int:
    import asyncpg

    from protocol.messages import MAX_AMOUNT

    from .ledger import Ledger, LedgerError

    _configure_logging("warning")
    if not 0 < user_id < 2**63:  # Telegram user ids are positive; the users table holds a bigint
        print(f"croupier: USER_ID must be a Telegram user id, from 1 to {2**63 - 1}", file=sys.stderr)
        return 2
    if amount == 0 or abs(amount) > MAX_AMOUNT:  # the largest amount every client can hold exactly
        print(f"croupier: AMOUNT must be a non-zero integer from -{MAX_AMOUNT} to {MAX_AMOUNT}", file=sys.stderr)
        return 2
    if not reason.strip():
        print("croupier: --reason must say why", file=sys.stderr)
        return 2
    async with _database(settings) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        ledger = Ledger(pool)
        try:
            await ledger.start()
            wallet = await ledger.adjust(user_id, amount, reason=reason)
        except LedgerError as exc:
            print(f"croupier: {exc}", file=sys.stderr)
            return 1
        except asyncpg.NumericValueOutOfRangeError:  # a balance beyond bigint: nothing was written
            print(f"croupier: the ledger cannot hold the balance that credit would make for user {user_id}",
                  file=sys.stderr)  # fmt: skip
            return 1
        finally:
            await ledger.close()
            await pool.close()
    print(f"user {user_id}: {'credited' if amount > 0 else 'debited'} {abs(amount)}; balance {wallet.balance}")
    return 0


async def _audit(settings: Settings) -> int:
    import asyncpg

    from .ledger import audit

    _configure_logging("warning")
    async with _database(settings) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            report = await audit(conn)
        finally:
            await conn.close()
    print(report.summary())
    return 0 if report.ok else 1


async def _notify(settings: Settings, text: str, key: str | None, *, wait: bool) -> int:
    from .telegram.announcements import run_notify

    _configure_logging("warning")
    async with _database(settings) as dsn:
        return await run_notify(dsn, text, key=key, wait=wait)


async def _telegram_command(settings: Settings, args: argparse.Namespace) -> int:
    """``croupier stars …`` and ``croupier bot …`` (:mod:`server.telegram.commands`)."""
    from .telegram import commands

    _configure_logging("warning")
    problem = commands.bot_problem(settings)
    if problem is not None:
        print(f"croupier: {problem}", file=sys.stderr)
        return 2
    if args.command == "bot":
        if args.bot_command == "set-webhook":
            return await commands.bot_set_webhook(settings, drop_pending=args.drop_pending)
        if args.bot_command == "delete-webhook":
            return await commands.bot_delete_webhook(settings, drop_pending=args.drop_pending)
        if args.bot_command == "info":
            return await commands.bot_info(settings)
        return await commands.bot_set_menu_button(settings, args.url, text=args.text)
    async with _database(settings) as dsn:
        if args.stars_command == "refund":
            return await commands.stars_refund(settings, dsn, args.charge_id, reason=args.reason,
                                               force_flag=args.force_flag)  # fmt: skip
        return await commands.stars_reconcile(settings, dsn, since=args.since, fix_them=args.fix)


def _game_command(args: argparse.Namespace) -> int:
    from .games import commands

    if args.command == "simulate":
        return commands.run_simulate(args.game, args.params, args.strategy, rounds=args.rounds, amount=args.amount,
                                     seed=args.seed)  # fmt: skip
    if args.command == "verify":
        return commands.run_verify(args.game, args.params, seed=args.seed, salt=args.salt, bet_id=args.bet_id,
                                   bet=args.bet, amount=args.amount)  # fmt: skip
    return commands.run_schema()


def _dev_initdata(settings: Settings, user_id: int, first_name: str, username: str | None) -> int:
    if settings.bot_token is None:
        print(
            "croupier: dev-initdata needs CROUPIER_BOT_TOKEN (or CROUPIER_DEV=1): "
            "Ed25519-signed initData can only come from Telegram",
            file=sys.stderr,
        )
        return 2
    if user_id <= 0:
        print("croupier: --user-id must be a positive integer", file=sys.stderr)
        return 2
    print(sign_init_data(settings.bot_token, user_id=user_id, first_name=first_name, username=username))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
