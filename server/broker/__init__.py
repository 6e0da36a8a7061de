"""Event passing between nodes: a ``Broker`` protocol with memory and Redis backends."""

from __future__ import annotations

from .base import Broker, Handler, HistoryPolicy, Subscription


def broker_from_url(url: str | None, *, prefix: str = "croupier:") -> Broker:
    """The in-process broker when ``url`` is None, the sharded broker for a ``redis+cluster://`` URL
    (:mod:`.cluster`), else the Redis broker for ``url``.

    Backends are imported lazily so a single-node install never loads the Redis client.
    """
    if url is None:
        from .memory import MemoryBroker

        return MemoryBroker()
    if url.startswith("redis+cluster://"):
        from .cluster import ClusterBroker

        return ClusterBroker(url, prefix=prefix)
    from .redis import RedisBroker

    return RedisBroker(url, prefix=prefix)


__all__ = ["Broker", "Handler", "HistoryPolicy", "Subscription", "broker_from_url"]
