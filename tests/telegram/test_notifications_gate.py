"""The flood gate's conformance suite, over both backends: the in-process one and the Lua script in a
real Redis, each on a fake clock (the Redis gate takes the time from the test instead of ``TIME``).
Two Redis gates of one bot are two nodes: they share one budget and one pause."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from server.telegram.floodcontrol import (
    FloodGate,
    FloodGateUnavailable,
    FloodLimits,
    MemoryFloodGate,
    RedisFloodGate,
    Wait,
)
from tests.services import free_port

LIMITS = FloodLimits(margin=0.0, pace=0.0)
START = 1_800_000_000.0  # a wall-clock-like time: the Redis gate works in microseconds of it


@dataclass
class FakeClock:
    now: float = START

    def __call__(self) -> float:
        return self.now


GateFactory = Callable[[FloodLimits], FloodGate]


@pytest.fixture(params=["memory", "redis"])
async def make_gates(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[GateFactory]:
    """Gates of one bot on ``clock``: in-process ones share one state (one node), Redis ones share Redis."""
    made: list[FloodGate] = []
    memory: dict[FloodLimits, MemoryFloodGate] = {}
    bot_id = secrets.randbelow(10**9)  # keys of this test's own

    def make(limits: FloodLimits) -> FloodGate:
        gate: FloodGate
        if request.param == "memory":
            gate = memory.setdefault(limits, MemoryFloodGate(limits, clock))
        else:
            gate = RedisFloodGate(request.getfixturevalue("redis_url"), limits, bot_id=bot_id, prefix="test:",
                                  clock=clock)  # fmt: skip
        made.append(gate)
        return gate

    yield make
    for gate in made:
        await gate.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def approx(wait: Wait | None, seconds: float, chat_only: bool = False) -> bool:
    return wait is not None and wait.chat_only == chat_only and wait.seconds == pytest.approx(seconds, abs=1e-5)


async def test_the_bot_gets_rate_a_window_over_every_gate(make_gates: GateFactory, clock: FakeClock) -> None:
    first, second = make_gates(LIMITS), make_gates(LIMITS)
    let = [await (first if n % 2 else second).take(1000 + n) for n in range(30)]
    assert let == [None] * 30
    clock.now += 0.25
    assert approx(await first.take(2000), 0.75)
    assert approx(await second.take(2001), 0.75)
    clock.now += 0.75
    assert await second.take(2001) is None


async def test_a_private_chat_waits_alone(make_gates: GateFactory, clock: FakeClock) -> None:
    first, second = make_gates(LIMITS), make_gates(LIMITS)
    assert await first.take(7) is None
    clock.now += 0.3
    assert approx(await second.take(7), 0.7, chat_only=True)
    assert await second.take(8) is None
    clock.now += 0.7
    assert await first.take(7) is None


async def test_a_group_gets_twenty_a_minute(make_gates: GateFactory, clock: FakeClock) -> None:
    gate = make_gates(LIMITS)
    for _ in range(20):
        assert await gate.take(-42) is None
        clock.now += 1.0
    assert approx(await gate.take(-42), 40.0, chat_only=True)
    clock.now += 40.0
    assert await gate.take(-42) is None


async def test_a_pause_holds_every_gate_until_it_ends(make_gates: GateFactory, clock: FakeClock) -> None:
    first, second = make_gates(LIMITS), make_gates(LIMITS)
    assert await first.pause(2.0) == pytest.approx(2.0)
    clock.now += 0.5
    assert await second.pause(1.0) == pytest.approx(1.5)  # a shorter pause does not shorten it
    assert approx(await second.take(5), 1.5)
    clock.now += 1.5
    assert await second.take(5) is None
    assert await first.take(6) is None


async def test_the_margin_is_added_to_each_window(make_gates: GateFactory, clock: FakeClock) -> None:
    gate = make_gates(FloodLimits(rate=2, margin=0.05, pace=0.0))
    assert await gate.take(1) is None and await gate.take(2) is None
    clock.now += 1.0
    assert approx(await gate.take(3), 0.05)
    clock.now += 0.05
    assert await gate.take(3) is None


async def test_the_bots_messages_are_paced_over_every_gate(make_gates: GateFactory, clock: FakeClock) -> None:
    limits = FloodLimits(margin=0.0)  # 30 a second, at least 30 ms apart
    first, second = make_gates(limits), make_gates(limits)
    assert await first.take(1) is None
    clock.now += 0.01
    assert approx(await second.take(2), 0.02)
    clock.now += limits.spacing - 0.01
    assert await second.take(2) is None


async def test_a_redis_that_does_not_answer_is_reported_as_unavailable() -> None:
    gate = RedisFloodGate(f"redis://127.0.0.1:{free_port()}/0", LIMITS, bot_id=1)  # nothing listens there
    with pytest.raises(FloodGateUnavailable):
        await gate.take(1)
    with pytest.raises(FloodGateUnavailable):
        await gate.pause(1.0)
    await gate.close()


async def test_the_redis_gate_on_the_servers_clock(redis_url: str) -> None:
    """Without a fake clock the script reads Redis's TIME: a real second passes between windows."""
    gate = RedisFloodGate(redis_url, FloodLimits(rate=1, margin=0.0, pace=0.0), bot_id=secrets.randbelow(10**9))
    try:
        assert await gate.take(1) is None
        wait = await gate.take(2)
        assert wait is not None and 0.9 < wait.seconds <= 1.0 and not wait.chat_only
        assert 0.19 < await gate.pause(0.2) <= 0.2
    finally:
        await gate.close()
