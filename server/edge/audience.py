"""Who on this node listens to what: sockets by channel (``user:<id>``, ``game:<name>``).

A push is encoded once per subprotocol in use among the channel's sockets, and the same
bytes go to every socket's bounded queue (encode once, send many). Droppable pushes (crash
ticks) skip sockets whose queue is already half full, so a slow client loses ticks before it
loses its connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from protocol import Codec
from protocol import messages as m

from .sendqueue import Frame


class Peer(Protocol):
    """One connected socket as the registry sees it."""

    codec: Codec

    def put(self, frame: Frame) -> bool:
        """Queue an encoded frame; False if dropped."""
        ...

    def backlog(self) -> float:
        """How full the socket's send queue is, 0.0 (empty) to 1.0 (about to overflow)."""
        ...


def user_channel(user_id: int) -> str:
    return f"user:{user_id}"


def game_channel(game: str) -> str:
    return f"game:{game}"


class Audience:
    """channel -> the sockets listening to it on this node."""

    def __init__(self) -> None:
        self._by_channel: dict[str, list[Peer]] = {}

    def add(self, channel: str, peer: Peer) -> None:
        peers = self._by_channel.setdefault(channel, [])
        if peer not in peers:
            peers.append(peer)

    def remove(self, channel: str, peer: Peer) -> None:
        peers = self._by_channel.get(channel)
        if peers and peer in peers:
            peers.remove(peer)
            if not peers:
                del self._by_channel[channel]

    def count(self, channel: str) -> int:
        return len(self._by_channel.get(channel, ()))

    def push(self, channel: str, message: m.ServerMessage | dict[str, Any], *, droppable: bool = False) -> int:
        """Queue ``message`` on every socket of ``channel``; return how many took it."""

        def encode(codec: Codec) -> Frame:
            data = codec.encode(message)
            return data if codec.binary else data.decode()

        return self._fan_out(channel, encode, droppable)

    def push_json(self, channel: str, payload: bytes, *, droppable: bool = False) -> int:
        """Like :meth:`push` for an event that arrives JSON-encoded (from the broker): JSON sockets get
        those bytes as they are; other subprotocols get it re-encoded, once."""

        def encode(codec: Codec) -> Frame:
            return codec.encode(orjson.loads(payload)) if codec.binary else payload.decode()

        return self._fan_out(channel, encode, droppable)

    def _fan_out(self, channel: str, encode: Callable[[Codec], Frame], droppable: bool) -> int:
        peers = self._by_channel.get(channel)
        if not peers:
            return 0
        encoded: dict[str, Frame] = {}
        delivered = 0
        for peer in tuple(peers):
            if droppable and peer.backlog() > 0.5:
                continue
            frame = encoded.get(peer.codec.name)
            if frame is None:
                frame = encoded[peer.codec.name] = encode(peer.codec)
            delivered += peer.put(frame)
        return delivered
