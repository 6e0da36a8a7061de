"""The ``leaderboard`` request in the session state machine, with the leaderboards faked (no server)."""

from __future__ import annotations

import typing
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import orjson

from protocol import JSON, ErrorCode
from protocol import messages as m
from server.edge.frame import Frame
from server.edge.services import SessionServices
from server.edge.session import Session
from server.leaderboards import LeaderboardUnavailable
from tests.edge.test_session import FakeClock, FakePeer, Services, auth_frame, error_of, frame, only


@dataclass
class FakeLeaderboards:
    down: bool = False
    asked: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    watching: dict[Hashable, tuple[int, int, Callable[[m.LeaderboardReply], object]]] = field(default_factory=dict)

    async def standings(self, game: str, metric: m.LeaderboardMetric, period: m.LeaderboardPeriod, limit: int,
                        user_id: int, /) -> m.LeaderboardReply:  # fmt: skip
        if self.down:
            raise LeaderboardUnavailable("leaderboards unavailable: Redis is down")
        self.asked.append((game, metric, period, limit, user_id))
        top = [m.LeaderboardEntry(user=8, name="Ann", score=50, rank=1, multiplier=500, bet=3)]
        return m.LeaderboardReply(game=game, metric=metric, period=period, period_key="2026-12-03", top=top,
                                  me=m.LeaderboardStanding(rank=4, score=7))  # fmt: skip

    def watch(self, owner: Hashable, user_id: int, shown: m.LeaderboardReply, limit: int,
              push: Callable[[m.LeaderboardReply], object], /) -> None:  # fmt: skip
        self.watching[owner] = (user_id, limit, push)

    def unwatch(self, owner: Hashable, /) -> None:
        self.watching.pop(owner, None)


@dataclass
class BoardServices(Services):
    leaderboards: FakeLeaderboards = field(default_factory=FakeLeaderboards)


class RecordingPeer(FakePeer):
    def __init__(self) -> None:
        super().__init__(JSON)
        self.frames: list[Frame] = []

    def put(self, frame: Frame) -> bool:
        self.frames.append(frame)
        return True


async def ready() -> tuple[Session, BoardServices, RecordingPeer]:
    services, peer = BoardServices(), RecordingPeer()
    session = Session(typing.cast(SessionServices, services), peer, clock=FakeClock())
    assert isinstance(only(await session.receive(auth_frame(user_id=5))), m.Welcome)
    return session, services, peer


def ask(**fields: object) -> str:
    return frame({"t": "leaderboard", "id": 4, "game": "dice", "metric": "win", "period": "day", **fields})


async def test_a_board_is_answered_with_its_top_and_the_callers_place() -> None:
    session, services, _ = await ready()
    reply = only(await session.receive(ask(limit=3)))
    assert isinstance(reply, m.LeaderboardReply)
    assert orjson.loads(JSON.encode(reply)) == {
        "t": "leaderboard", "id": 4, "game": "dice", "metric": "win", "period": "day", "period_key": "2026-12-03",
        "top": [{"user": 8, "name": "Ann", "score": 50, "rank": 1, "multiplier": 500, "bet": 3}],
        "me": {"rank": 4, "score": 7},
    }  # fmt: skip
    assert services.leaderboards.asked == [("dice", "win", "day", 3, 5)]
    every = only(await session.receive(ask(game="all", metric="net", period="all")))  # every game
    assert isinstance(every, m.LeaderboardReply) and every.id == 4
    assert services.leaderboards.asked[-1] == ("all", "net", "all", 10, 5)  # limit 10 unless asked


async def test_a_board_of_an_unknown_game_or_a_bad_field_is_refused() -> None:
    session, services, _ = await ready()
    assert error_of(await session.receive(ask(game="poker"))).code == ErrorCode.UNKNOWN_GAME
    for bad in ({"metric": "gross"}, {"period": "month"}, {"limit": 101}, {"limit": 0}, {"game": "di\x00ce"}):
        assert error_of(await session.receive(ask(**bad))).code == ErrorCode.BAD_REQUEST, bad
    assert services.leaderboards.asked == []


async def test_a_store_that_does_not_answer_is_unavailable() -> None:
    session, services, _ = await ready()
    services.leaderboards.down = True
    error = error_of(await session.receive(ask(watch=True)))
    assert (error.code, error.id) == (ErrorCode.UNAVAILABLE, 4)
    assert services.leaderboards.watching == {}


async def test_watch_pushes_the_board_to_the_socket_until_it_stops_or_goes() -> None:
    session, services, peer = await ready()
    only(await session.receive(ask()))
    assert services.leaderboards.watching == {}  # no watch: nothing changes
    only(await session.receive(ask(watch=True, limit=5)))
    user, limit, push = services.leaderboards.watching[session]
    assert (user, limit) == (5, 5)
    push(m.LeaderboardReply(game="dice", metric="win", period="day", period_key="2026-12-03", top=[], me=None))
    assert [orjson.loads(f.data) for f in peer.frames] == [{"t": "leaderboard", "game": "dice", "metric": "win",
                                                            "period": "day", "period_key": "2026-12-03", "top": [],
                                                            "me": None}]  # fmt: skip
    only(await session.receive(ask(watch=False)))
    assert services.leaderboards.watching == {}
    only(await session.receive(ask(watch=True)))
    await session.detach()
    assert services.leaderboards.watching == {}
