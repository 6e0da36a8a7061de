"""The Redis broker on a Redis Cluster: sharded pub/sub, each channel on the master of its slot.

``REDIS_URL=redis+cluster://host:port[,host:port…]/`` (:mod:`.connect`) selects it. What changes from
:class:`~.redis.RedisBroker` (everything else, the local fan-out, the origin tag, the publish pipeline and
its failure handling, is the same code):

- **Names.** A channel ``game:dice`` is the shard channel ``<prefix>{game:dice}`` and its history the
  stream ``<prefix>{game:dice}:history``: the hash tag puts both on one slot, so the channel's history
  lives on the master its events go through.
- **Publish.** ``SPUBLISH`` (Redis 7), pipelined with the history's ``XADD`` and ``PEXPIRE`` through
  redis-py's ``RedisCluster``, which sends each command to its slot's master and follows ``MOVED``.
  A sharded message reaches only the subscribers on that master (and its replicas), not the whole
  cluster bus: relay capacity grows with the masters.
- **Subscribe.** :class:`ShardedSubscriber`: one :class:`~.pubsub.PubSubConnection` (hiredis, ``SSUBSCRIBE``)
  per master that serves a channel this node has local subscribers for, and none to the others. Which
  master serves a slot comes from ``CLUSTER SLOTS``, read at start and again every
  :data:`~.pubsub.PING_EVERY` seconds (every :data:`~.pubsub.RETRY_EVERY` while a connection is down),
  and at once when a master answers ``MOVED`` or drops a channel unasked (``sunsubscribe``: its slot
  moved, or it became a replica). A channel whose slot changed master is unsubscribed from the old
  connection and subscribed on the new master's; connections left with no channel are closed.
- **Resume.** Deliveries may be lost when a shard's connection drops (it reconnects every 0.5 s) or a
  channel moves to another master (a failover): once the connection is back, or the moved channel is
  confirmed on its new master, the broker's ``on_resume`` callbacks run, as on one Redis.

Several channels of one node on one master share its connection; ``SSUBSCRIBE`` takes one channel per
command (channels of one command must share a slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError

from ..metrics import RECONNECTS
from .connect import RedisEndpoint
from .pubsub import PING_EVERY, RETRY_EVERY, PubSubConnection
from .redis import RedisBroker, Subscriber

log = logging.getLogger(__name__)

SLOTS_TIMEOUT = 1.0
"""Seconds one node has to answer ``CLUSTER SLOTS`` before the next one is asked."""

Address = tuple[str, int]


class SlotMap:
    """Which master serves each of the 16384 slots, from ``CLUSTER SLOTS``; no I/O."""

    def __init__(self, reply: list[Any], asked: str = "127.0.0.1") -> None:
        """``reply``: ``CLUSTER SLOTS`` as the server sends it (ranges with their master first); ``asked``: the
        host of the server that sent it, which an empty host stands for (a cluster of one master that never
        met another does not know its own address)."""
        self._ranges: list[tuple[int, int, Address]] = []
        self.nodes: set[Address] = set()

        def address(node: list[Any]) -> Address:
            return (_text(node[0]) or asked, int(node[1]))

        for entry in reply:
            start, end, master, *replicas = entry
            self._ranges.append((int(start), int(end), address(master)))
            self.nodes.add(address(master))
            self.nodes.update(address(node) for node in replicas)
        self._ranges.sort()

    @property
    def masters(self) -> set[Address]:
        """Every master that serves at least one slot."""
        return {address for _, _, address in self._ranges}

    def master_of(self, name: bytes) -> Address | None:
        """The master of ``name``'s slot (its hash tag's), None when no master serves it."""
        slot = key_slot(name)
        for start, end, address in self._ranges:
            if start <= slot <= end:
                return address
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ShardedSubscriber:
    """Shard channels followed on the masters that serve them: one pub/sub connection per master in use.

    The same surface as :class:`~.pubsub.PubSubConnection` for :class:`~.redis.RedisBroker`; ``on_resume``
    is called (at most once per loop turn) when deliveries may have been lost: a shard's connection made
    again, or a channel confirmed on the master it moved to."""

    def __init__(self, endpoint: RedisEndpoint, on_message: Callable[[bytes, bytes], None],
                 on_resume: Callable[[], None], *, ping_every: float = PING_EVERY) -> None:  # fmt: skip
        self._endpoint = endpoint
        self._on_message = on_message
        self._on_resume = on_resume
        self._ping_every = ping_every
        self.connected = asyncio.Event()
        """Set while the cluster answers ``CLUSTER SLOTS`` (then each shard connection follows by itself)."""
        self._channels: dict[bytes, asyncio.Future[None]] = {}
        self._home: dict[bytes, Address] = {}
        self._shards: dict[Address, PubSubConnection] = {}
        self._slots: SlotMap | None = None
        self._seeds: list[Address] = list(endpoint.location.nodes)
        self._probes: dict[Address, aioredis.Redis] = {}
        self._kick = asyncio.Event()
        self._resume_due = False
        self._runner: asyncio.Task[None] | None = None

    @property
    def shards(self) -> dict[Address, frozenset[bytes]]:
        """The masters this node holds a connection to, and the channels each carries (for tests, metrics)."""
        return {address: shard.channels for address, shard in self._shards.items()}

    def start(self) -> None:
        """Read the slot map and keep following it in the background, until :meth:`close`."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="redis-cluster-pubsub")

    def subscribe(self, channel: bytes) -> asyncio.Future[None]:
        """Follow ``channel`` on the master of its slot; the future is done once that master confirmed it."""
        confirmation = self._channels.get(channel)
        if confirmation is None or confirmation.done():
            confirmation = asyncio.get_running_loop().create_future()
        self._channels[channel] = confirmation
        self._home.pop(channel, None)
        if self._slots is not None:
            self._place(channel, moved=False)
        else:
            self._kick.set()
        return confirmation

    def unsubscribe(self, channel: bytes) -> None:
        """Stop following ``channel`` (its master's connection is closed by the next pass if left empty)."""
        confirmation = self._channels.pop(channel, None)
        if confirmation is not None and not confirmation.done():
            confirmation.cancel()
        home = self._home.pop(channel, None)
        shard = self._shards.get(home) if home is not None else None
        if shard is not None:
            shard.unsubscribe(channel)

    async def close(self) -> None:
        """Drop every connection (shards and slot-map probes)."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            await shard.close()
        probes, self._probes = list(self._probes.values()), {}
        for probe in probes:
            with contextlib.suppress(Exception):
                await probe.aclose()
        for confirmation in self._channels.values():
            if not confirmation.done():
                confirmation.cancel()

    def _place(self, channel: bytes, *, moved: bool) -> None:
        """Subscribe ``channel`` on its slot's master per the slot map (leaving the one it was on)."""
        assert self._slots is not None
        address = self._slots.master_of(channel)
        old = self._home.get(channel)
        if address is None or address == old:
            return
        if old is not None and old in self._shards:
            self._shards[old].unsubscribe(channel)
        self._home[channel] = address
        shard = self._shards.get(address)
        if shard is None:
            shard = self._shards[address] = PubSubConnection(
                self._endpoint, self._on_message, functools.partial(self._shard_connected, address),
                ping_every=self._ping_every, sharded=True, address=functools.partial(_at, address),
                on_moved=self._moved,
            )  # fmt: skip
            shard.start()
        outer = self._channels[channel]
        shard.subscribe(channel).add_done_callback(functools.partial(self._confirmed, outer, moved))

    def _confirmed(self, outer: asyncio.Future[None], moved: bool, inner: asyncio.Future[None]) -> None:
        if inner.cancelled():
            return
        if not outer.done():
            outer.set_result(None)
        if moved:  # on its new master now: what was published in between reached nobody here
            self._resume_soon()

    def _shard_connected(self, address: Address) -> None:
        shard = self._shards.get(address)
        if shard is not None and shard.connects > 1:  # made again: what it missed meanwhile is lost
            self._resume_soon()

    def _moved(self, channel: bytes | None) -> None:
        log.info("redis cluster: %s served elsewhere now; reading the slot map",
                 channel.decode(errors="replace") if channel else "a channel")  # fmt: skip
        self._slots = None  # read it again before placing anything
        self._kick.set()

    def _resume_soon(self) -> None:
        if not self._resume_due:
            self._resume_due = True
            asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        self._resume_due = False
        self._on_resume()

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                slots = await self._read_slots()
            except ConnectionError as exc:
                self.connected.clear()
                if not failing:
                    log.warning("redis cluster: no node answers CLUSTER SLOTS (%s); retrying every %.1f s",
                                exc, RETRY_EVERY)  # fmt: skip
                failing = True
                await asyncio.sleep(RETRY_EVERY)
                continue
            failing = False
            self._slots = slots
            for channel in list(self._channels):
                self._place(channel, moved=channel in self._home)
            for address in [a for a, shard in self._shards.items() if not shard.channels]:
                await self._shards.pop(address).close()
            self.connected.set()
            down = any(not shard.connected.is_set() for shard in self._shards.values())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_EVERY if down else self._ping_every):
                    await self._kick.wait()
            self._kick.clear()

    async def _read_slots(self) -> SlotMap:
        """The slot map from the first node that answers: the last map's nodes, then the URL's."""
        known = sorted(self._slots.nodes) if self._slots is not None else []
        errors: list[str] = []
        for address in dict.fromkeys([*known, *self._seeds]):
            probe = self._probes.get(address)
            if probe is None:
                where = self._endpoint.location
                probe = self._probes[address] = aioredis.Redis(
                    host=address[0], port=address[1], username=where.username, password=where.password,
                    socket_timeout=SLOTS_TIMEOUT, socket_connect_timeout=SLOTS_TIMEOUT,
                )  # fmt: skip
            try:
                reply = await probe.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            except (RedisError, OSError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            slots = SlotMap(reply, asked=address[0])
            if slots.masters:
                self._seeds = list(dict.fromkeys([*self._seeds, *slots.nodes]))
                return slots
            errors.append(f"{address[0]}:{address[1]}: no slot served")
        raise ConnectionError("; ".join(errors) or "no node to ask")


async def _at(address: Address) -> Address:
    return address


class ClusterBroker(RedisBroker):
    """:class:`~.redis.RedisBroker` on a Redis Cluster (``url``: ``redis+cluster://…``, :mod:`.connect`):
    sharded pub/sub and history streams on the channel's slot (see the module's text)."""

    _unavailable = (aioredis.ConnectionError, aioredis.TimeoutError, OSError, ClusterDownError, RedisClusterException)

    def __init__(self, url: str, *, prefix: str = "croupier:") -> None:
        super().__init__(url, prefix=prefix)
        if not self._endpoint.location.cluster:
            raise ValueError(f"{self._endpoint.location.describe()} is not a Redis Cluster URL")

    @property
    def cluster(self) -> RedisCluster:
        """The publisher's cluster client."""
        return self._client  # type: ignore[return-value]  # RedisEndpoint.client is a RedisCluster here

    @property
    def subscriber(self) -> ShardedSubscriber:
        """The sharded subscriber (which masters this node follows channels on)."""
        assert isinstance(self._subscriber, ShardedSubscriber)
        return self._subscriber

    async def ping(self) -> None:
        """Return when every master answers (a replica down does not make the node unready)."""
        await self.cluster.ping(target_nodes=RedisCluster.PRIMARIES)

    def _make_subscriber(self) -> Subscriber:
        return ShardedSubscriber(self._endpoint, self._received, self._resumed)

    def _upstream(self, channel: str) -> str:
        return f"{self._prefix}{{{channel}}}"

    def _local(self, upstream: bytes) -> str:
        return upstream[self._skip + 1 : -1].decode()

    @staticmethod
    def _send(pipe: Any, upstream: str, data: bytes) -> None:
        pipe.spublish(upstream, data)

    def _resumed(self) -> None:
        RECONNECTS.n += 1
        for callback in self._on_resume:
            callback()
