"""Where an idle authenticated socket's memory goes: tracemalloc, grouped by the code that allocated it.

Serves a node in this process (the configuration ``croupier serve`` runs, ``server/serving.py``; embedded
PostgreSQL, in-process broker) with tracemalloc on, and has a child process (the light client of
``loadtest/rawws.py``) open N sockets that authenticate as new users and subscribe to dice, then hold
them idle. Compares a snapshot taken before the sockets with one taken while they are held (after a full
garbage collection each time) and prints the bytes per socket that stayed, by owner (the package of the
innermost frame that allocated: uvicorn, websockets, the node's own ``server``, asyncio, ...) and by
line.

    .venv/bin/python -m loadtest.memory_owners --sockets 2000

tracemalloc sees Python's allocations only: what C libraries allocate with ``malloc`` (uvloop's
libuv handles, the kernel's socket buffers are not even in the process) is in ``bench_connect``'s RSS
figure, not here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import secrets
import sys
import tempfile
import tracemalloc
from pathlib import Path

import uvicorn
import uvloop

from loadtest.common import bench_database, free_port

OWNERS = ("uvicorn", "websockets", "starlette", "asyncpg", "uvloop", "asyncio", "loadtest", "tracemalloc")


def owner(filename: str) -> str:
    """The package that owns a source file: ``server.<subpackage>`` for the node's own code."""
    path = Path(filename)
    parts = path.parts
    if "server" in parts and "site-packages" not in parts:
        index = parts.index("server")
        return "server." + parts[index + 1].removesuffix(".py") if index + 1 < len(parts) else "server"
    for name in OWNERS:
        if name in parts:
            return name
    return path.name


async def hold_sockets(port: int, count: int, token: str) -> None:
    """The child: open ``count`` sockets (auth as new users, subscribe), say so, hold them until stdin closes."""
    from loadtest.bench_connect import storm

    _, clients = await storm(port, count, token, 10_000_000)
    print("held", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for client in clients:
        client.close()


async def measure(database_url: str, sockets: int, top: int) -> None:
    from server.app import create_app
    from server.serving import uvicorn_config
    from server.settings import Settings

    token = f"{secrets.randbelow(10**9) + 10**9}:{secrets.token_urlsafe(26)}"
    settings = Settings.from_env({
        "DATABASE_URL": database_url, "CROUPIER_BOT_TOKEN": token, "CROUPIER_GAMES": "dice",
        "CROUPIER_BETTING_MS": "3600000", "CROUPIER_WELCOME_CREDIT": "100",
        "CROUPIER_DATA_DIR": tempfile.mkdtemp(prefix="croupier-memory-"),
    })  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings, host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.05)

    async def clients(count: int) -> asyncio.subprocess.Process:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.memory_owners", "--hold", str(port), str(count), token,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert child.stdout is not None
        line = await child.stdout.readline()
        if line.strip() != b"held":
            raise RuntimeError(f"the client process failed: {line!r}")
        return child

    async def release(child: asyncio.subprocess.Process) -> None:
        assert child.stdin is not None
        child.stdin.close()
        await child.wait()

    try:
        await release(await clients(20))  # every code path once: lazy imports, caches, pools
        await asyncio.sleep(1.0)
        tracemalloc.start(1)
        gc.collect()
        before = tracemalloc.take_snapshot()
        child = await clients(sockets)
        await asyncio.sleep(2.0)  # the last replies written, the sign-in batches committed
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        await release(child)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)

    by_owner: dict[str, int] = {}
    for stat in after.compare_to(before, "filename"):
        name = owner(stat.traceback[0].filename)
        by_owner[name] = by_owner.get(name, 0) + stat.size_diff
    total = sum(by_owner.values())
    print(f"{sockets} idle authenticated sockets: {total / sockets / 1024:.2f} KiB per socket (tracemalloc)")
    for name, size in sorted(by_owner.items(), key=lambda item: -item[1]):
        if abs(size) / sockets >= 16:
            print(f"  {name:<24} {size / sockets:8.0f} B")
    print(f"top {top} lines (bytes per socket, objects per socket):")
    for stat in after.compare_to(before, "lineno")[:top]:
        frame = stat.traceback[0]
        where = f"{owner(frame.filename)}:{Path(frame.filename).name}:{frame.lineno}"
        print(f"  {stat.size_diff / sockets:8.0f} B {stat.count_diff / sockets:6.2f}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30, help="how many source lines to list")
    parser.add_argument("--hold", nargs=3, metavar=("PORT", "COUNT", "TOKEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        port, count, token = args.hold
        uvloop.run(hold_sockets(int(port), int(count), token))
        return
    os.environ.setdefault("PYTHONHASHSEED", "0")
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(bench_database(None))
        uvloop.run(measure(database_url, args.sockets, args.top))


if __name__ == "__main__":
    main()
