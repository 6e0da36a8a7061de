"""The follower view: snapshots, resume from the channel's history, and the order that keeps a
subscribing socket's events free of gaps and repeats (the view is updated before sockets get an event)."""

from __future__ import annotations

from typing import Any

import msgspec

from protocol import JSON
from server.broker import HistoryPolicy
from server.broker.memory import MemoryBroker
from server.edge.audience import Audience
from server.edge.frame import Frame
from server.edge.gamefeeds import GameFeeds
from server.rounds.events import RoundView, Stamp, encode_round, encode_tick, game_channel
from server.rounds.follower import RoundFollower

GAME = "dice"
CHANNEL = game_channel(GAME)
HISTORY = HistoryPolicy(size=4, ttl=60.0)
BETTING = RoundView(game=GAME, round=7, seed_hash="ab" * 32, salt="cd" * 32, closes_at=1_000, phase="betting")


class Channel:
    """Publishes a driver's events on the game's channel, numbered."""

    def __init__(self, broker: MemoryBroker, epoch: str = "e1") -> None:
        self.broker = broker
        self.epoch = epoch
        self.offset = 0

    def stamp(self) -> Stamp:
        self.offset += 1
        return Stamp(CHANNEL, self.offset, self.epoch, 1_000 + self.offset)

    async def round(self, view: RoundView) -> None:
        await self.broker.publish(CHANNEL, encode_round(view, self.stamp()), history=HISTORY)

    async def tick(self, round_id: int, **fields: Any) -> None:
        await self.broker.publish(CHANNEL, encode_tick(GAME, round_id, fields, self.stamp()), history=HISTORY)


class Socket:
    """A socket that notes, for each event it gets, the offset the follower's view was at."""

    codec = JSON

    def __init__(self, follower: RoundFollower) -> None:
        self.follower = follower
        self.got: list[tuple[int, int]] = []  # (the event's offset, the view's offset when it arrived)

    def put(self, frame: Frame) -> bool:
        offset = msgspec.json.decode(frame.data)["offset"]
        self.got.append((offset, self.follower.snapshot(GAME)[1]))
        return True

    def backlog(self) -> float:
        return 0.0


async def test_sockets_get_each_event_after_their_snapshot_once_because_the_view_moves_first() -> None:
    broker, audience = MemoryBroker(), Audience()
    follower = RoundFollower(broker, [GAME], HISTORY)
    await follower.start()  # the engine starts first (server/node.py) ...
    feeds = GameFeeds(broker, audience, [GAME])
    await feeds.start()  # ... then the feeds: the broker calls them in this order
    channel = Channel(broker)
    early = Socket(follower)
    audience.add(CHANNEL, early)
    await channel.round(BETTING)
    await channel.round(msgspec.structs.replace(BETTING, phase="running", started_at=1_500))
    # A socket subscribes as session.subscribe does: joins the audience, then the snapshot, no await between.
    late = Socket(follower)
    audience.add(CHANNEL, late)
    snapshot, offset, _ = follower.snapshot(GAME)
    assert offset == 2 and snapshot is not None and snapshot["phase"] == "running"
    await channel.tick(7, multiplier=120)
    await channel.round(msgspec.structs.replace(BETTING, phase="settled", seed="ef" * 32, outcome={"roll": 42}))
    assert early.got == [(1, 1), (2, 2), (3, 3), (4, 4)]  # each event already in the view when it arrived
    assert late.got == [(3, 3), (4, 4)]  # exactly the events after its snapshot
    await feeds.close()
    await follower.close()


async def test_feeds_subscribed_before_the_follower_would_push_events_the_view_lacks() -> None:
    """Why the node starts the feeds after the engine: in the other order a socket would get an event
    its snapshot (taken in between) may already hold."""
    broker, audience = MemoryBroker(), Audience()
    follower = RoundFollower(broker, [GAME], HISTORY)
    feeds = GameFeeds(broker, audience, [GAME])
    await feeds.start()
    await follower.start()
    socket = Socket(follower)
    audience.add(CHANNEL, socket)
    await Channel(broker).round(BETTING)
    assert socket.got == [(1, 0)]
    await feeds.close()
    await follower.close()


async def test_feeds_push_round_events_to_every_socket_and_ticks_to_those_keeping_up() -> None:
    broker, audience = MemoryBroker(), Audience()
    follower = RoundFollower(broker, [GAME], HISTORY)
    await follower.start()
    feeds = GameFeeds(broker, audience, [GAME])
    await feeds.start()
    keeping_up, lagging = Socket(follower), Socket(follower)
    lagging.backlog = lambda: 0.8  # type: ignore[method-assign]
    for socket in (keeping_up, lagging):
        audience.add(CHANNEL, socket)
    channel = Channel(broker)
    await channel.round(msgspec.structs.replace(BETTING, phase="running", started_at=1_500))
    await channel.tick(7, multiplier=110)
    assert [offset for offset, _ in keeping_up.got] == [1, 2]
    assert [offset for offset, _ in lagging.got] == [1]
    await feeds.close()
    await follower.close()


async def test_the_snapshot_is_the_round_as_announced_with_the_last_multiplier() -> None:
    broker = MemoryBroker()
    follower = RoundFollower(broker, [GAME], HISTORY)
    await follower.start()
    assert follower.snapshot(GAME) == (None, 0, "")
    from_database = msgspec.structs.replace(BETTING, round=6)
    follower.show(GAME, from_database)  # a node that starts while another drives: PostgreSQL's view
    assert follower.snapshot(GAME)[0] == from_database.as_wire()
    channel = Channel(broker)
    await channel.round(BETTING)
    snapshot, offset, epoch = follower.snapshot(GAME)
    assert (offset, epoch) == (1, "e1")
    assert list(snapshot or {}) == ["game", "round", "seed_hash", "salt", "closes_at", "phase"]  # wire order
    follower.show(GAME, from_database)  # an event came: the database's view is older
    assert follower.view(GAME) == BETTING
    await channel.round(msgspec.structs.replace(BETTING, phase="running", started_at=1_500))
    await channel.tick(7, multiplier=150)
    await channel.tick(6, multiplier=999)  # another round's tick moves the offset only
    assert follower.snapshot(GAME) == (
        {**BETTING.as_wire(), "phase": "running", "started_at": 1_500, "multiplier": 150},
        4,
        "e1",
    )
    await channel.round(msgspec.structs.replace(BETTING, phase="settled", seed="ef" * 32, voided=True))
    assert follower.snapshot(GAME)[0] == {**BETTING.as_wire(), "phase": "settled", "seed": "ef" * 32, "voided": True}
    follower.on_event(CHANNEL, b"not an event")  # ignored (and logged)
    assert follower.snapshot(GAME)[1] == 5
    await follower.close()


async def test_missed_events_come_from_the_history_or_the_client_needs_a_snapshot() -> None:
    broker = MemoryBroker()
    follower = RoundFollower(broker, [GAME], HISTORY)
    await follower.start()
    channel = Channel(broker)
    await channel.round(BETTING)
    for multiplier in range(101, 106):
        await channel.tick(7, multiplier=multiplier)
    assert follower.snapshot(GAME)[1] == 6
    missed = await follower.missed_since(GAME, 3, "e1")
    assert missed is not None and [e["offset"] for e in missed] == [4, 5, 6]
    assert missed[0] == {
        "t": "tick",
        "game": GAME,
        "round": 7,
        "multiplier": 103,
        "ch": CHANNEL,
        "offset": 4,
        "epoch": "e1",
        "ts": 1_004,
    }
    assert await follower.missed_since(GAME, 6, "e1") == []  # nothing missed
    assert await follower.missed_since(GAME, 1, "e1") is None  # older than the history keeps (4 events)
    assert await follower.missed_since(GAME, 3, "e0") is None  # another epoch: another driver's numbering
    assert await follower.missed_since(GAME, 7, "e1") is None  # ahead of this node
    await follower.close()


class LaggingBroker(MemoryBroker):
    """A broker whose history also holds ``ahead``: events published that have not reached this node yet."""

    def __init__(self) -> None:
        super().__init__()
        self.ahead: list[bytes] = []

    async def history(self, channel: str, count: int) -> list[bytes]:
        kept = await super().history(channel, 1_000_000) + self.ahead
        return kept[-count:] if count > 0 else []


async def test_missed_events_are_found_when_this_node_lags_the_history_by_more_than_the_slack() -> None:
    broker = LaggingBroker()
    follower = RoundFollower(broker, [GAME], HistoryPolicy(size=100, ttl=60.0))
    await follower.start()
    channel = Channel(broker)
    await channel.round(BETTING)
    for multiplier in range(101, 106):
        await channel.tick(7, multiplier=multiplier)
    ahead = Channel(broker)
    ahead.offset = channel.offset
    broker.ahead = [encode_tick(GAME, 7, {"multiplier": 200 + n}, ahead.stamp()) for n in range(40)]
    missed = await follower.missed_since(GAME, 3, "e1")
    assert missed is not None and [e["offset"] for e in missed] == [4, 5, 6]  # up to this node's view
    await follower.close()
