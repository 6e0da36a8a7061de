"""The ``croupier`` command: ``serve``, ``migrate``, ``credit``, ``audit``, ``chain new``, ``notify``, ``simulate``,
``verify``, ``schema`` and ``dev-initdata``; ``stars`` and ``bot`` (:mod:`server.telegram.commands`); ``leaderboard
rebuild`` (:mod:`server.leaderboards.commands`); ``user block|unblock``, ``round void``, ``risk flags`` and
``risk review`` (:mod:`server.backoffice.commands`); ``risk report`` (:mod:`server.risk.commands`).

Settings come from the environment (see :mod:`server.settings`); a bad one stops the
command with one line naming it, and exit status 2. Only ``serve`` checks initData, so only it
needs ``CROUPIER_BOT_TOKEN`` (or ``CROUPIER_BOT_ID``, or ``CROUPIER_DEV=1``); ``stars`` and ``bot``
say so themselves when they lack a bot of their own, and ``dev-initdata`` when it has no token.
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
    credit.add_argument("user_id", metavar="USER_ID",
                        help="Telegram user id (must have authenticated once), or FIRST-LAST for every user of a range "
                             "(with --batch)")  # fmt: skip
    credit.add_argument("amount", type=int, metavar="AMOUNT",
                        help="integer amount, at most 2^53-1 either way; negative to debit")  # fmt: skip
    credit.add_argument("--reason", required=True, help="why, for the ledger and the people who read it")
    credit.add_argument("--key", default=None, metavar="KEY",
                        help="an idempotency key: the same KEY again credits nothing more (audited like the back "
                             "office's adjust)")  # fmt: skip
    credit.add_argument("--batch", default=None, metavar="REF",
                        help="credit each user of USER_ID (a range) once per REF: running it again credits nobody "
                             "twice; users who never signed in get a wallet (funding load-test players)")  # fmt: skip

    user = commands.add_parser("user", help="block or unblock a player (the back office's operations, audited)")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    for name, text in (("block", "refuse the user's auth, close their sockets (4403) on every node"),
                       ("unblock", "lift the user's block")):  # fmt: skip
        change = user_commands.add_parser(name, help=text)
        change.add_argument("user_id", type=int, metavar="USER_ID")
        change.add_argument("--reason", required=True, help="why, for the audit log")

    round_ = commands.add_parser("round", help="void a round (the back office's operation, audited)")
    void = round_.add_subparsers(dest="round_command", required=True).add_parser(
        "void", help="void a betting or running round on the node driving its game: every bet refunded"
    )
    void.add_argument("round_id", type=int, metavar="ROUND_ID")
    void.add_argument("--reason", required=True, help="why, for the audit log")

    commands.add_parser("audit", help="check the ledger: zero-sum transactions, balances, no negative wallets")

    chain = commands.add_parser("chain", help="provably fair seed chains (docs/fairness.md)")
    chain_commands = chain.add_subparsers(dest="chain_command", required=True)
    new_chain = chain_commands.add_parser("new", help="commit to a game's next seed chain now: print its terminating "
                                          "hash, to publish before its first round")  # fmt: skip
    new_chain.add_argument("--game", required=True, help="the game whose rounds will use it")
    new_chain.add_argument("--length", type=int, default=None,
                           help="rounds in the chain (default CROUPIER_SEED_CHAIN_LENGTH)")  # fmt: skip

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
    verify.add_argument("--salt", required=True, help="the round's salt (in its running and settled events)")
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

    leaderboard = commands.add_parser("leaderboard", help="the leaderboards (server/leaderboards/)")
    rebuild = leaderboard.add_subparsers(dest="leaderboard_command", required=True).add_parser(
        "rebuild", help="recompute every board from the settled bets in PostgreSQL and replace the stored ones"
    )
    rebuild.add_argument("--check", action="store_true", help="compare the stored boards with rebuilt ones instead "
                         "(exit 1 on a difference)")  # fmt: skip

    risk = commands.add_parser("risk", help="risk flags for the operator (server/risk/, docs/operations.md)")
    risk_commands = risk.add_subparsers(dest="risk_command", required=True)
    report = risk_commands.add_parser(
        "report", help="run every detector over a window, write the flags to risk_flags and print them (exit 0)"
    )
    report.add_argument("--since", default=None, metavar="DATE", help="from DATE (2026-01-31 or 2026-01-31T18:00, "
                        "UTC; default: 24 hours before --until)")  # fmt: skip
    report.add_argument("--until", default=None, metavar="DATE", help="to DATE, excluded (default: now)")
    report.add_argument("--json", action="store_true", help="print the flags as one JSON object")
    flags = risk_commands.add_parser("flags", help="list the stored flags, newest first (the back office's list)")
    flags.add_argument("--open", action="store_true", help="only the flags nobody reviewed yet")
    flags.add_argument("--kind", default=None, metavar="K", help="only flags of kind K (bet_velocity, luck, ...)")
    flags.add_argument("--user", type=int, default=None, metavar="ID", help="only the flags of user ID")
    flags.add_argument("--before", type=int, default=None, metavar="ID",
                       help="the next page: flags older than ID (as the previous page said)")  # fmt: skip
    flags.add_argument("--limit", type=int, default=50, metavar="N", help="flags a page, 1 to 100 (default 50)")
    flags.add_argument("--json", action="store_true", help='print {"items", "next"} as the API answers it')
    review = risk_commands.add_parser("review", help="record that you reviewed a flag (audited as cli:<login>)")
    review.add_argument("flag_id", type=int, metavar="FLAG_ID")
    review.add_argument("--reason", required=True, help="what you found, for the audit log")

    dev = commands.add_parser("dev-initdata", help="print a signed initData for the configured bot token")
    dev.add_argument("--user-id", type=int, required=True, help="Telegram user id to sign for")
    dev.add_argument("--first-name", default="Player", help="first name in the user object")
    dev.add_argument("--username", default=None, help="optional username")

    args = parser.parse_args(argv)
    if args.command in ("simulate", "verify", "schema"):  # pure computations: no settings, no database
        return _game_command(args)
    try:
        settings = Settings.from_env(bot_required=args.command == "serve")
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
        users = _user_range(args.user_id)
        if users is None:
            print(f"croupier: USER_ID must be a Telegram user id from 1 to {2**63 - 1}, or FIRST-LAST of those "
                  f"(got {args.user_id!r})", file=sys.stderr)  # fmt: skip
            return 2
        if users[0] != users[1] or args.batch is not None:
            return asyncio.run(_credit_batch(settings, users, args.amount, args.reason, args.batch, args.key))
        return asyncio.run(_credit(settings, users[0], args.amount, args.reason, args.key))
    if args.command in ("user", "round"):
        return asyncio.run(_back_office(settings, args))
    if args.command == "audit":
        return asyncio.run(_audit(settings))
    if args.command == "chain":
        return asyncio.run(_chain_new(settings, args.game, args.length))
    if args.command == "notify":
        return asyncio.run(_notify(settings, args.text, args.key, wait=not args.no_wait))
    if args.command == "leaderboard":
        return asyncio.run(_leaderboard_rebuild(settings, check=args.check))
    if args.command == "risk":
        if args.risk_command == "report":
            return asyncio.run(_risk_report(settings, args))
        return asyncio.run(_risk_flags(settings, args))
    return _dev_initdata(settings, args.user_id, args.first_name, args.username)


def _configure_logging(level: str, settings: Settings | None = None) -> None:
    """Logs to stderr: a node's (``settings`` given) structured, one JSON line per event or console lines
    (``CROUPIER_LOG_FORMAT``, :mod:`server.logs`), its secrets redacted; a one-off command's plain."""
    if settings is None:
        logging.basicConfig(
            level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
        return
    from .logs import configure

    configure(level, "console" if settings.log_format == "console" else "json", node_id=settings.node_id,
              secrets=[settings.bot_token, settings.webhook_secret])  # fmt: skip


def _supervise(settings: Settings, host: str, port: int, log_level: str, workers: int) -> int:
    """``croupier serve --workers N``: bind the port, start the database if embedded, run N workers."""
    from .workers import Supervisor, bind_sockets

    _configure_logging(log_level, settings)
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
    """Run one node; with ``listen_fd``, as a worker of :func:`_supervise` on the socket it was handed.

    Alone, it takes its port first: a taken port stops it with one line naming the address, before it
    starts anything or says it serves."""
    from .app import create_app
    from .drain import DrainingServer
    from .gcpolicy import freeze_startup, tune_for_many_connections
    from .node import Node
    from .serving import listen_socket, uvicorn_config

    if listen_fd is None:
        try:
            listener = listen_socket(host, port)
        except OSError as exc:
            print(f"croupier: {exc.strerror}", file=sys.stderr, flush=True)
            return 1
        port = listener.getsockname()[1]  # the port it got, when asked for any (0)
    else:
        from .workers import die_with_parent

        die_with_parent()
        listener = socket.socket(fileno=listen_fd)
    _configure_logging(log_level, settings)
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
    # The node refused to start (another node uses its database) or stopped because its database went away
    # (then it interrupted itself, as Ctrl-C does): one line and that exit status, not uvicorn's traceback.
    from .db.instance import FailureReport, NodeFailure

    failures: list[NodeFailure] = []
    app.add_middleware(FailureReport, failures=failures)
    try:
        # uvicorn re-raises Ctrl-C after its graceful shutdown; everything is stopped by then.
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[listener])
    except SystemExit:  # uvicorn's exit when the lifespan failed at startup
        if not failures:
            raise
    finally:
        listener.close()
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


async def _credit(settings: Settings, user_id: int, amount: int, reason: str, key: str | None = None) -> int:
    import asyncpg

    from protocol.messages import MAX_AMOUNT

    from .backoffice.money import valid_key
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
    if key is not None and not valid_key(key):
        print("croupier: --key must be 1-64 printable ASCII characters, no spaces", file=sys.stderr)
        return 2
    async with _database(settings) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        ledger = Ledger(pool)
        try:
            await ledger.start()
            if key is None:
                balance, again = (await ledger.adjust(user_id, amount, reason=reason)).balance, False
            else:  # once per key, audited: the back office's adjust
                from .backoffice import commands, money

                done = await money.adjust(ledger, commands.actor(), user_id, amount, reason, key)
                balance, again = done["balance"], done["replayed"]
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
    print(f"user {user_id}: {'credited' if amount > 0 else 'debited'} {abs(amount)}; balance {balance}"
          + (f" (key {key} was used before: nothing moved now)" if again else ""))  # fmt: skip
    return 0


def _user_range(text: str) -> tuple[int, int] | None:
    """``N`` or ``FIRST-LAST`` (Telegram user ids, FIRST <= LAST) as (first, last); None for anything else."""
    first, _, last = text.strip().partition("-")
    last = last or first
    if not (first.isascii() and first.isdigit() and last.isascii() and last.isdigit()):
        return None
    low, high = int(first), int(last)
    return (low, high) if 0 < low <= high < 2**63 else None


CREDIT_BATCH_CHUNK = 5_000
"""Users credited per transaction by ``croupier credit FIRST-LAST``."""
MAX_CREDIT_RANGE = 1_000_000


async def _credit_batch(settings: Settings, users: tuple[int, int], amount: int, reason: str, batch: str | None,
                        key: str | None) -> int:  # fmt: skip
    """``croupier credit FIRST-LAST AMOUNT --batch REF``: each user of the range credited once per REF."""
    import asyncpg

    from protocol.messages import MAX_AMOUNT

    from .ledger import Ledger, LedgerError

    _configure_logging("warning")
    first, last = users
    if batch is None or not batch.strip() or len(batch) > 64 or not batch.isprintable() or key is not None:
        print("croupier: a range of users needs --batch REF (1-64 printable characters; not --key): each user is "
              "credited once per REF", file=sys.stderr)  # fmt: skip
        return 2
    if not 0 < amount <= MAX_AMOUNT or not reason.strip():
        print(f"croupier: a batch credit is an AMOUNT from 1 to {MAX_AMOUNT} with a --reason", file=sys.stderr)
        return 2
    if last - first + 1 > MAX_CREDIT_RANGE:
        print(f"croupier: at most {MAX_CREDIT_RANGE:,} users at once", file=sys.stderr)
        return 2
    credited = 0
    async with _database(settings) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        ledger = Ledger(pool)
        try:
            await ledger.start()
            for start in range(first, last + 1, CREDIT_BATCH_CHUNK):
                chunk = range(start, min(start + CREDIT_BATCH_CHUNK, last + 1))
                credited += await ledger.credit_batch(chunk, amount, batch=batch, reason=reason)
        except LedgerError as exc:
            print(f"croupier: {exc} ({credited} users credited before it)", file=sys.stderr)
            return 1
        finally:
            await ledger.close()
            await pool.close()
    total = last - first + 1
    print(f"users {first}-{last}: {credited} credited {amount} each now; {total - credited} had batch {batch!r} "
          "already")  # fmt: skip
    return 0


async def _back_office(settings: Settings, args: argparse.Namespace) -> int:
    """``croupier user block|unblock`` and ``croupier round void`` (:mod:`server.backoffice.commands`)."""
    from .backoffice import commands

    _configure_logging("warning")
    target = args.user_id if args.command == "user" else args.round_id
    if not 0 < target < 2**63 or not args.reason.strip():
        print("croupier: give an id from 1 to 2^63-1 and a --reason that says why", file=sys.stderr)
        return 2
    async with _database(settings) as dsn:
        if args.command == "user":
            return await commands.block_user(settings, dsn, target, args.reason, lift=args.user_command == "unblock")
        return await commands.void_round(settings, dsn, target, args.reason)


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


async def _chain_new(settings: Settings, game: str, length: int | None) -> int:
    """``croupier chain new``: generate and commit a game's next seed chain; print what to publish."""
    import asyncpg

    from .games.registry import registered_games
    from .rounds.store import RoundStore

    _configure_logging("warning")
    if game not in registered_games():
        print(f"croupier: no game {game!r}; registered: {', '.join(registered_games())}", file=sys.stderr)
        return 2
    length = settings.seed_chain_length if length is None else length
    if not 1 <= length <= 1_000_000:
        print("croupier: --length must be from 1 to 1,000,000 rounds", file=sys.stderr)
        return 2
    async with _database(settings) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            chain = await RoundStore(pool, chain_length=length).commit_chain(game)
        finally:
            await pool.close()
    print(f"game {game}\nchain {chain.id}\nlength {chain.length}\nterminating_hash {chain.terminating_hash}\n"
          f"Publish the terminating hash now: {game}'s rounds take this chain once the chains committed before it "
          "are used up, and its first round's seed_hash will be this hash.")  # fmt: skip
    return 0


async def _notify(settings: Settings, text: str, key: str | None, *, wait: bool) -> int:
    from .telegram.announcements import run_notify

    _configure_logging("warning")
    async with _database(settings) as dsn:
        return await run_notify(dsn, text, key=key, wait=wait)


async def _leaderboard_rebuild(settings: Settings, *, check: bool) -> int:
    from .leaderboards.commands import run_rebuild

    _configure_logging("warning")
    async with _database(settings) as dsn:
        return await run_rebuild(settings.database_session_url or dsn, settings.redis_url, settings.leaderboard_tz,
                                 check=check)  # fmt: skip


async def _risk_report(settings: Settings, args: argparse.Namespace) -> int:
    from .risk.commands import risk_report

    _configure_logging("warning")
    async with _database(settings) as dsn:
        return await risk_report(settings, dsn, since=args.since, until=args.until, as_json=args.json)


async def _risk_flags(settings: Settings, args: argparse.Namespace) -> int:
    """``croupier risk flags`` and ``croupier risk review`` (:mod:`server.backoffice.commands`)."""
    from .backoffice import commands
    from .backoffice.errors import Invalid
    from .backoffice.http import MAX_LIMIT
    from .backoffice.risk import parse_kind

    _configure_logging("warning")
    if args.risk_command == "review":
        if not 0 < args.flag_id < 2**63 or not args.reason.strip():
            print("croupier: give a flag id from 1 to 2^63-1 and a --reason that says why", file=sys.stderr)
            return 2
        async with _database(settings) as dsn:
            return await commands.review_flag(dsn, args.flag_id, args.reason)
    try:
        kind = None if args.kind is None else parse_kind(args.kind, "--kind")
    except Invalid as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return 2
    for name, value in (("--user", args.user), ("--before", args.before)):
        if value is not None and not 0 < value < 2**63:
            print(f"croupier: {name} must be an id from 1 to 2^63-1", file=sys.stderr)
            return 2
    if not 1 <= args.limit <= MAX_LIMIT:
        print(f"croupier: --limit must be from 1 to {MAX_LIMIT}", file=sys.stderr)
        return 2
    async with _database(settings) as dsn:
        return await commands.risk_flags(dsn, open_=True if args.open else None, kind=kind, user_id=args.user,
                                         before_id=args.before, limit=args.limit, as_json=args.json)  # fmt: skip


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
