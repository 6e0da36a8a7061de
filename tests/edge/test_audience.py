"""Channel fan-out: encode once per subprotocol, drop ticks for lagging sockets only."""

from __future__ import annotations

import json

import msgspec

from protocol import JSON, MSGPACK, Codec
from server.edge.audience import Audience
from server.edge.frame import Frame


class FakePeer:
    def __init__(self, codec: Codec, fill: float = 0.0) -> None:
        self.codec = codec
        self.fill = fill
        self.frames: list[Frame] = []

    def put(self, frame: Frame) -> bool:
        self.frames.append(frame)
        return True

    def backlog(self) -> float:
        return self.fill


def test_push_encodes_once_per_subprotocol_and_reaches_every_socket() -> None:
    audience = Audience()
    json_peers = [FakePeer(JSON) for _ in range(3)]
    packed = FakePeer(MSGPACK)
    for peer in [*json_peers, packed]:
        audience.add("game:dice", peer)
    payload = json.dumps({"t": "round", "ch": "game:dice", "offset": 1, "epoch": "e", "round": 9}).encode()
    assert audience.push_json("game:dice", payload) == 4
    assert all([frame.data for frame in p.frames] == [payload] for p in json_peers)
    assert json_peers[0].frames[0] is json_peers[1].frames[0]  # the same object: encoded and framed once
    assert json_peers[0].frames[0].wire == bytes((0x81, len(payload))) + payload  # FIN + text, unmasked
    assert packed.frames[0].binary and msgspec.msgpack.decode(packed.frames[0].data)["round"] == 9


def test_ticks_skip_lagging_sockets_but_round_events_do_not() -> None:
    audience = Audience()
    keeping_up, lagging = FakePeer(JSON), FakePeer(JSON, fill=0.8)
    audience.add("game:crash", keeping_up)
    audience.add("game:crash", lagging)
    tick = b'{"t":"tick","ch":"game:crash","offset":5,"epoch":"e","round":1,"multiplier":150}'
    assert audience.push_json("game:crash", tick, droppable=True) == 1
    assert (len(keeping_up.frames), len(lagging.frames)) == (1, 0)
    assert audience.push_json("game:crash", tick.replace(b"tick", b"round")) == 2
    audience.remove("game:crash", lagging)
    assert audience.count("game:crash") == 1
