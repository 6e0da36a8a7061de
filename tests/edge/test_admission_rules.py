"""The admission rules as pure logic, with a fake clock: the unauthenticated count, the token
bucket per client address and its idle expiry, exemptions, and X-Forwarded-For with trusted proxies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import pytest
from starlette.types import Message

from server.edge.admission import REFUSAL_LOG_INTERVAL, Admission
from tests.conftest import make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited(clock: Clock, *, rate: float = 1.0, burst: int = 3, **kwargs: object) -> Admission:
    return Admission(max_unauthenticated=10, handshake_timeout=5.0, rate=rate, burst=burst, clock=clock,
                     **kwargs)  # type: ignore[arg-type]  # fmt: skip


def test_each_address_has_a_burst_then_its_rate() -> None:
    clock = Clock()
    admission = limited(clock, rate=2.0, burst=3)
    assert [admission.allow("203.0.113.1") for _ in range(4)] == [True, True, True, False]
    assert admission.allow("203.0.113.2")  # another address: a bucket of its own
    clock.now += 0.5  # one token back at 2 a second
    assert admission.allow("203.0.113.1")
    assert not admission.allow("203.0.113.1")
    clock.now += 10.0  # refilled, but never beyond the burst
    assert [admission.allow("203.0.113.1") for _ in range(4)] == [True, True, True, False]


def test_a_long_burst_allows_exactly_the_burst() -> None:
    clock = Clock()
    admission = limited(clock, rate=20.0, burst=200)  # the defaults: float sums must not lose the 200th
    assert sum(admission.allow("198.51.100.9") for _ in range(250)) == 200


def test_rate_zero_means_no_limit_and_nothing_is_tracked() -> None:
    admission = limited(Clock(), rate=0.0, burst=1)
    assert all(admission.allow("203.0.113.1") for _ in range(1000))
    assert admission.tracked_addresses == 0


def test_exempt_networks_are_not_limited() -> None:
    admission = limited(Clock(), burst=1, exempt=("127.0.0.0/8", "::1/128", "10.1.0.0/16"))
    for host in ("127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "::ffff:127.0.0.1"):
        assert all(admission.allow(host) for _ in range(5)), host
    assert admission.tracked_addresses == 0
    assert admission.allow("10.2.0.1") and not admission.allow("10.2.0.1")


def test_an_ipv6_client_is_limited_by_its_slash_64_and_a_mapped_ipv4_as_itself() -> None:
    admission = limited(Clock(), burst=2)
    assert admission.allow("2001:db8:0:1::1") and admission.allow("2001:db8:0:1::ffff")
    assert not admission.allow("2001:db8:0:1:abcd::2")  # same /64: same bucket
    assert admission.allow("2001:db8:0:2::1")  # the next /64: its own
    assert admission.allow("192.0.2.7") and admission.allow("::ffff:192.0.2.7")
    assert not admission.allow("192.0.2.7")


def test_idle_buckets_are_forgotten_and_busy_ones_kept() -> None:
    clock = Clock()  # t = 1000
    admission = limited(clock, rate=1.0, burst=3)  # a bucket refills in 3 s; sweeps every 3 s
    for i in range(100):
        assert admission.allow(f"198.51.100.{i}")  # one connection each: full again at t = 1001
    clock.now = 1002.0
    assert all(admission.allow("203.0.113.1") for _ in range(3))  # exhausted: full again at t = 1005
    assert admission.tracked_addresses == 101
    clock.now = 1003.5  # a sweep is due
    assert admission.allow("203.0.113.2")
    assert admission.tracked_addresses == 2  # 203.0.113.1 and .2: the full ones were forgotten
    # The busy bucket survived the sweep as it was: 1.5 tokens back, not a new burst of 3.
    assert [admission.allow("203.0.113.1") for _ in range(3)] == [True, False, False]
    clock.now += 10.0
    assert admission.allow("192.0.2.1")
    assert admission.tracked_addresses == 1
    # A forgotten bucket is the same as a full one: the address gets its whole burst again.
    assert [admission.allow("203.0.113.1") for _ in range(4)] == [True, True, True, False]


def test_the_unauthenticated_count_and_its_tickets() -> None:
    admission = Admission(max_unauthenticated=2, handshake_timeout=5.0)
    first, second = admission.enter(), admission.enter()
    assert first is not None and second is not None
    assert admission.unauthenticated == 2
    assert admission.enter() is None  # full: refused, nothing counted
    assert admission.unauthenticated == 2
    first.authenticated()
    assert admission.unauthenticated == 1 and not first.counted
    first.release()  # idempotent: authenticated, then closed
    assert admission.unauthenticated == 1
    third = admission.enter()
    assert third is not None and admission.unauthenticated == 2
    second.release()
    second.release()
    second.authenticated()
    assert admission.unauthenticated == 1


async def test_a_watched_receive_reports_authentication_once_the_session_says_so() -> None:
    admission = Admission(max_unauthenticated=5, handshake_timeout=5.0)
    ticket = admission.enter()
    assert ticket is not None
    calls = 0

    async def receive() -> Message:
        nonlocal calls
        calls += 1
        return {"type": "websocket.receive", "text": "x"}

    ready = False
    watched = ticket.watch(receive, lambda: ready)
    awaitable: Awaitable[Message] = watched()
    assert (await awaitable)["text"] == "x"
    assert ticket.counted and admission.unauthenticated == 1
    ready = True
    await watched()
    assert not ticket.counted and admission.unauthenticated == 0
    await watched()
    assert calls == 3 and admission.unauthenticated == 0
    ticket.release()
    assert admission.unauthenticated == 0


async def test_claim_stops_the_handshake_timer() -> None:
    admission = Admission(max_unauthenticated=5, handshake_timeout=5.0)
    ticket = admission.enter()
    assert ticket is not None
    fired: list[bool] = []
    timer = asyncio.get_running_loop().call_later(0.01, fired.append, True)
    ticket.hold(timer)
    ticket.claim()
    await asyncio.sleep(0.05)
    assert not fired and ticket.counted  # claimed, still unauthenticated until the session says so


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        ("10.0.0.1", ["198.51.100.1, 203.0.113.9, 10.0.0.2"], "203.0.113.9"),  # right-most untrusted
        ("10.0.0.1", [b"198.51.100.1", b"203.0.113.9"], "203.0.113.9"),  # several headers, in order
        ("10.0.0.1", ["203.0.113.9:4711"], "203.0.113.9"),  # a port is not part of the address
        ("10.0.0.1", ["[2001:db8::5]:443"], "2001:db8::5"),
        ("10.0.0.1", ["2001:db8::5"], "2001:db8::5"),
        ("10.0.0.1", ["10.9.9.9, 10.0.0.3"], "10.9.9.9"),  # all trusted: the left-most
        ("10.0.0.1", [], "10.0.0.1"),  # no header: the proxy itself
        ("10.0.0.1", [" , "], "10.0.0.1"),
        ("192.0.2.1", ["203.0.113.9"], "192.0.2.1"),  # not a trusted proxy: the header is ignored
        ("::ffff:10.0.0.1", ["203.0.113.9"], "203.0.113.9"),  # a mapped IPv4 proxy
    ],
)
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(peer: str, forwarded: list[bytes | str], client: str) -> None:
    admission = Admission(max_unauthenticated=5, handshake_timeout=5.0, trusted_proxies=("10.0.0.0/8",))
    assert admission.forwarded_client(peer, forwarded) == client


def test_no_trusted_proxies_trusts_nobody() -> None:
    admission = Admission(max_unauthenticated=5, handshake_timeout=5.0)
    assert not admission.is_trusted_proxy("127.0.0.1")
    assert admission.forwarded_client("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"


def test_refusals_are_logged_at_most_once_an_interval() -> None:
    clock = Clock()
    admission = limited(clock)
    assert admission.refused("full") == 1
    assert [admission.refused("full") for _ in range(5)] == [0] * 5
    assert admission.refused("rate") == 1  # each reason on its own
    clock.now += REFUSAL_LOG_INTERVAL
    assert admission.refused("full") == 6  # the five held back, and this one


def test_built_from_settings(tmp_path: Path) -> None:
    settings = make_settings(None, tmp_path, max_unauthenticated=7, handshake_timeout=2.5, ip_connect_rate=1.0,
                             ip_connect_burst=1, trusted_proxies=("10.0.0.0/8",))  # fmt: skip
    admission = Admission.from_settings(settings, clock=Clock())
    assert (admission.max_unauthenticated, admission.handshake_timeout) == (7, 2.5)
    assert admission.is_trusted_proxy("10.1.2.3") and not admission.is_trusted_proxy("127.0.0.1")
    assert admission.allow("127.0.0.1") and admission.allow("127.0.0.1")  # loopback: exempt by default
    assert admission.allow("203.0.113.1") and not admission.allow("203.0.113.1")
