"""Which sockets on this node belong to which user, and pushing to all of them.

A push is encoded once per subprotocol in use among the user's sockets, and the same bytes
go to every socket's bounded queue (encode once, send many).
"""

from __future__ import annotations

from typing import Protocol

from protocol import Codec
from protocol import messages as m

from .sendqueue import Frame


class Peer(Protocol):
    """One connected socket as the registry sees it."""

    codec: Codec

    def put(self, frame: Frame) -> bool:
        """Queue an encoded frame; False if dropped."""
        ...


class UserSockets:
    """user id -> the sockets of that user on this node."""

    def __init__(self) -> None:
        self._by_user: dict[int, list[Peer]] = {}

    def add(self, user_id: int, peer: Peer) -> None:
        self._by_user.setdefault(user_id, []).append(peer)

    def remove(self, user_id: int, peer: Peer) -> None:
        peers = self._by_user.get(user_id)
        if peers and peer in peers:
            peers.remove(peer)
            if not peers:
                del self._by_user[user_id]

    def count(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    def push(self, user_id: int, message: m.ServerMessage) -> int:
        """Queue ``message`` on every socket of ``user_id``; return how many took it."""
        peers = self._by_user.get(user_id)
        if not peers:
            return 0
        encoded: dict[str, Frame] = {}
        delivered = 0
        for peer in tuple(peers):
            codec = peer.codec
            frame = encoded.get(codec.name)
            if frame is None:
                data = codec.encode(message)
                frame = encoded[codec.name] = data if codec.binary else data.decode()
            delivered += peer.put(frame)
        return delivered
