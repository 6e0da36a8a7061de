"""Who on this node listens to what: sockets by channel (``user:<id>``, ``game:<name>``).

A push is encoded once per subprotocol in use among the channel's sockets, framed once
(:class:`~server.edge.frame.Frame`), and the same bytes go to every socket's bounded queue
(encode once, send many). Droppable pushes (crash ticks) skip sockets whose queue is already
half full, so a slow client loses ticks before it loses its connection.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from protocol import Codec

from ..metrics import DROPPED
from .frame import Frame


class Peer(Protocol):
    """One connected socket as the registry sees it."""

    codec: Codec

    def put(self, frame: Frame) -> bool:
        """Queue an encoded frame; False if dropped."""
        ...

    def backlog(self) -> float:
        """How full the socket's send queue is, 0.0 (empty) to 1.0 (about to overflow)."""
        ...


class Audience:
    """channel -> the sockets listening to it on this node."""

    def __init__(self) -> None:
        # An insertion-ordered set per channel (a dict with no values): a game channel holds every
        # socket of the node, and joins and leaves in a connect storm must not scan it.
        self._by_channel: dict[str, dict[Peer, None]] = {}

    def add(self, channel: str, peer: Peer) -> None:
        self._by_channel.setdefault(channel, {})[peer] = None

    def remove(self, channel: str, peer: Peer) -> None:
        peers = self._by_channel.get(channel)
        if peers is not None:
            peers.pop(peer, None)
            if not peers:
                del self._by_channel[channel]

    def count(self, channel: str) -> int:
        return len(self._by_channel.get(channel, ()))

    def push_json(self, channel: str, payload: bytes, *, droppable: bool = False) -> int:
        """Queue a JSON-encoded event (as the broker carries it) on every socket of ``channel``.

        JSON sockets get those bytes as they are; other subprotocols get the event re-encoded,
        once per subprotocol. Returns how many sockets took it.
        """
        peers = self._by_channel.get(channel)
        if not peers:
            return 0
        encoded: dict[str, Frame] = {}
        delivered = skipped = 0
        for peer in tuple(peers):
            if droppable and peer.backlog() > 0.5:
                skipped += 1
                continue
            codec = peer.codec
            frame = encoded.get(codec.name)
            if frame is None:
                data = codec.encode(orjson.loads(payload)) if codec.binary else payload
                frame = encoded[codec.name] = Frame(data, codec.binary)
            delivered += peer.put(frame)
        if skipped:
            DROPPED["slow"].n += skipped
        return delivered
