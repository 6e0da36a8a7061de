"""Where the node's Redis is, from ``REDIS_URL``: one server, a primary that Redis Sentinel watches, or a Redis Cluster.

Every Redis user of a node gets its connections here (:class:`RedisEndpoint`): the broker's
publisher and history, its pub/sub reader (:mod:`.pubsub`, which asks :meth:`RedisEndpoint.primary`
where to connect), the per-user quotas (:mod:`.quota`) and Telegram's flood gate. So all of them
follow a failover the same way.

The forms of ``REDIS_URL``:

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS), ``unix://[[user]:password@]/path``:
  one server (redis-py's URL forms).
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db]``: the primary of
  ``service`` (the name in the Sentinels' ``sentinel monitor`` line) as the listed Sentinels know it;
  a Sentinel's port is 26379 unless given, an IPv6 host is written ``[::1]:26379``. The user and
  password are the Redis servers' (primary and replicas: give them the same). Sentinels that ask
  for a password of their own take it from ``?sentinel_password=…`` (and ``&sentinel_username=…``).
- ``redis+cluster://[[user]:password@]host[:port][,host[:port]…][/]``: a Redis Cluster (7.0 or later), found
  through any of the listed nodes (port 6379 unless given, ``[v6]:port`` for IPv6; one is enough, list a
  few). A cluster has database 0 only. Its clients (:meth:`RedisEndpoint.client`) are redis-py's
  ``RedisCluster``: each command goes to the master of its key's slot and follows ``MOVED`` and failovers,
  so every command and script of a Redis user must keep its keys in one slot (hash tags, ``{…}``). The
  broker on a cluster is :mod:`.cluster` (sharded pub/sub).

With Sentinel, every new connection first asks the Sentinels which server is the primary now
(redis-py's ``Sentinel.master_for``; the first Sentinel that answers and sees the primary up wins).
When the primary dies, connections to it fail; the callers' next commands open new connections,
which go to the replica the Sentinels promoted, once they have promoted it. A connection still
open to a former primary that came back as a replica is closed at its first write (``READONLY``).
A command whose connection fails is tried again once on a new one (:data:`RETRIES`); past that each
user decides what a failed command means (the broker drops the events or leaves them to the outbox,
the quotas fall back to this node alone, the flood gate holds the notifications).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
CLUSTER_SCHEME = "redis+cluster"
CLUSTER_PORT = 6379
CONNECT_TIMEOUT = 2.0
"""Seconds to open a connection to a Redis server."""
SENTINEL_TIMEOUT = 1.0
"""Seconds to connect to, and hear from, one Sentinel before the next one is asked."""
RETRIES = 1
"""Tries again, at once and on a new connection, of a command whose connection failed: a connection left
over from a primary that died fails once, and the command goes to the promoted one. No more and no pause:
a caller on the request path (the quotas) must hear at once that Redis is away, and fall back."""
_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME, CLUSTER_SCHEME)
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})


class RedisUrlError(ValueError):
    """``REDIS_URL`` is not one of the forms above; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class RedisLocation:
    """``REDIS_URL`` taken apart (:func:`parse_redis_url`); no I/O."""

    url: str = field(repr=False)
    scheme: str
    host: str = "127.0.0.1"
    """One server's host (``redis``, ``rediss``)."""
    port: int = 6379
    path: str = ""
    """The socket's path (``unix``)."""
    sentinels: tuple[tuple[str, int], ...] = ()
    """The Sentinels' addresses (``redis+sentinel``)."""
    service: str = ""
    """The monitored primary's name (``redis+sentinel``)."""
    nodes: tuple[tuple[str, int], ...] = ()
    """The cluster nodes to start from (``redis+cluster``)."""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def sentinel(self) -> bool:
        """Whether the primary is found through Sentinels."""
        return self.scheme == SENTINEL_SCHEME

    @property
    def cluster(self) -> bool:
        """Whether this is a Redis Cluster (keys and shard channels spread over its masters by slot)."""
        return self.scheme == CLUSTER_SCHEME

    def describe(self) -> str:
        """Where this is, for logs (no password)."""
        if self.sentinel:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"{SENTINEL_SCHEME}://{hosts}/{self.service}"
        if self.cluster:
            return f"{CLUSTER_SCHEME}://" + ",".join(f"{host}:{port}" for host, port in self.nodes)
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_redis_url(url: str) -> RedisLocation:
    """Take ``url`` apart; raise :class:`RedisUrlError` naming what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise RedisUrlError(
            f"REDIS_URL must start with redis://, rediss://, unix://, {SENTINEL_SCHEME}:// or {CLUSTER_SCHEME}://, "
            f"got {scheme}://"
        )
    if scheme == SENTINEL_SCHEME:
        return _parse_sentinel_url(url, rest)
    if scheme == CLUSTER_SCHEME:
        return _parse_cluster_url(url, rest)
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if scheme == "unix":
        return RedisLocation(url, scheme, path=parts.path, username=username, password=password)
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise RedisUrlError(f"REDIS_URL: {exc}") from None
    db = parts.path.strip("/")
    return RedisLocation(url, scheme, host=parts.hostname or "127.0.0.1", port=port,
                         db=int(db) if db.isdigit() else 0, username=username, password=password)  # fmt: skip


def _parse_sentinel_url(url: str, rest: str) -> RedisLocation:
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(host) for host in hosts.split(",") if host)
    if not sentinels:
        raise RedisUrlError(f"REDIS_URL names no Sentinel: {SENTINEL_SCHEME}://host:26379[,host:26379…]/service[/db]")
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise RedisUrlError(f"REDIS_URL names no service: {SENTINEL_SCHEME}://host:26379/<service>[/db]")
    if db and not db.isdigit():
        raise RedisUrlError(f"REDIS_URL: the database after the service must be a number, got {db!r}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - _SENTINEL_OPTIONS)
    if unknown:
        raise RedisUrlError(f"REDIS_URL: unknown option {unknown[0]!r} (known: {', '.join(sorted(_SENTINEL_OPTIONS))})")
    return RedisLocation(url, SENTINEL_SCHEME, sentinels=sentinels, service=unquote(service), db=int(db or 0),
                         username=username, password=password,
                         sentinel_username=options.get("sentinel_username") or None,
                         sentinel_password=options.get("sentinel_password") or None)  # fmt: skip


def _parse_cluster_url(url: str, rest: str) -> RedisLocation:
    rest, _, query = rest.partition("?")
    if query:
        raise RedisUrlError(f"REDIS_URL: {CLUSTER_SCHEME}:// takes no options, got ?{query}")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_host_port(host, CLUSTER_PORT, "cluster node") for host in hosts.split(",") if host)
    if not nodes:
        raise RedisUrlError(f"REDIS_URL names no cluster node: {CLUSTER_SCHEME}://host:6379[,host:6379…]/")
    if path.strip("/") not in ("", "0"):
        raise RedisUrlError(f"REDIS_URL: a Redis Cluster has database 0 only, got /{path.strip('/')}")
    return RedisLocation(url, CLUSTER_SCHEME, nodes=nodes, username=username, password=password)


def _host_port(text: str, default: int = SENTINEL_PORT, what: str = "Sentinel") -> tuple[str, int]:
    if text.startswith("["):  # [v6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host or (port and not port.isdigit()) or not 0 < int(port or default) < 65536:
        raise RedisUrlError(f"REDIS_URL: {text!r} is not a {what}'s host[:port]")
    return host, int(port or default)


class RedisEndpoint:
    """The Redis ``url`` names, and the clients to it; :meth:`aclose` closes every client it made.

    With a Sentinel URL one ``Sentinel`` (a connection to each Sentinel, made when first needed) is
    shared by this endpoint's clients and :meth:`primary`. With a cluster URL each client is a
    ``RedisCluster`` (:meth:`cluster_client`).
    """

    def __init__(self, url: str) -> None:
        """Raises :class:`RedisUrlError` for a URL of none of the module's forms."""
        self.location = parse_redis_url(url)
        self._clients: list[aioredis.Redis | RedisCluster] = []
        self._sentinel: Sentinel | None = None
        where = self.location
        if where.sentinel:
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # untyped before redis-py 8.2
                list(where.sentinels),
                sentinel_kwargs={"socket_connect_timeout": SENTINEL_TIMEOUT, "socket_timeout": SENTINEL_TIMEOUT,
                                 "username": where.sentinel_username, "password": where.sentinel_password},
                socket_connect_timeout=CONNECT_TIMEOUT, username=where.username, password=where.password, db=where.db,
                retry=_retry(),
            )  # fmt: skip

    def client(self, *, socket_timeout: float) -> aioredis.Redis:
        """A client of the primary (``socket_timeout``: seconds a command may wait for its answer), whose
        connections go to the primary of the moment; closed by :meth:`aclose`.

        With a cluster URL this is a ``RedisCluster`` (:meth:`cluster_client`) behind the ``Redis`` type: it
        has the same command methods, scripts and pipelines, and routes each command by its keys' slot. A
        caller that uses it on a cluster must keep every command's keys in one slot."""
        client: aioredis.Redis
        if self.location.cluster:
            return cast(aioredis.Redis, self.cluster_client(socket_timeout=socket_timeout))
        if self._sentinel is None:
            client = aioredis.Redis.from_url(self.location.url, socket_connect_timeout=CONNECT_TIMEOUT,
                                             socket_timeout=socket_timeout, retry=_retry())  # fmt: skip
        else:
            client = self._sentinel.master_for(self.location.service, socket_timeout=socket_timeout)
        self._clients.append(client)
        return client

    def cluster_client(self, *, socket_timeout: float) -> RedisCluster:
        """A client of the cluster (cluster URLs only), closed by :meth:`aclose`: commands go to the master
        of their slot; a ``MOVED`` answer or a connection that fails makes it read the slot map again and
        try once more (:data:`RETRIES`), so a command reaches the replica promoted after a failover once
        the cluster has promoted it."""
        where = self.location
        if not where.cluster:
            raise RedisUrlError(f"{where.describe()} is not a Redis Cluster")
        options: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": socket_timeout}
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in where.nodes],
            username=where.username, password=where.password, retry=_retry(),
            require_full_coverage=False,  # a master down (its slots failing over) leaves the others usable
            **options,
        )  # fmt: skip
        self._clients.append(client)
        return client

    async def primary(self) -> tuple[str, int]:
        """Where to connect now: the URL's server, or the primary the Sentinels name (raises
        :class:`ConnectionError` when no Sentinel answers or none sees a primary up). Not for ``unix``."""
        if self.location.cluster:
            raise ConnectionError("a Redis Cluster has a master per shard: ask its slot map (server.broker.cluster)")
        if self._sentinel is None:
            return self.location.host, self.location.port
        try:
            host, port = await self._sentinel.discover_master(self.location.service)
        except (RedisError, OSError) as exc:
            raise ConnectionError(f"no primary for {self.location.service!r} from the Sentinels: {exc}") from exc
        return str(host), int(port)

    async def aclose(self) -> None:
        """Close every client made here, and the connections to the Sentinels."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()


def _retry() -> Retry:
    return Retry(NoBackoff(), RETRIES)
