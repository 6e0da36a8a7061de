"""Hostile input at a real node (issue 12) while honest players bet.

A ``croupier serve`` process (its log captured) serves dice and crash with short rounds. Honest
players (JSON and MessagePack sockets) bet on dice in a loop with idempotency keys. Meanwhile
hostile sockets send hundreds of frames generated with Hypothesis (a fixed, derandomized
sequence): invalid JSON and MessagePack, wrong types, unknown types, huge integers, deep
nesting, U+0000, control characters and lone surrogates in keys, params and game names,
MessagePack ``bin``/``ext``/timestamps and non-string keys in params, frames before ``auth``,
oversized frames, and bad initData (tampered hash, dated in the future, non-ASCII digits in
``auth_date`` or ``user.id``, no user, garbage).

Every bad frame must get its documented answer (docs/protocol.md: the error code and field, then
the close code when there is one), no honest request may fail (``bet_ok``, or the legitimate
``betting_closed`` / ``round_mismatch``; never ``internal``, ``unavailable`` or a dropped socket),
no traceback may reach the node's log, and ``croupier audit`` must pass afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import math
import signal
import string
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from server.auth import HmacVerifier, sign_init_data
from tests.services import clean_env, free_port, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKEN = "1:abcdefghijklmnop"
MAX_FRAME = 16 * 1024
MALFORMED_LIMIT = 5
KNOWN_TYPES = {"auth", "subscribe", "unsubscribe", "bet", "action", "balance", "history", "ping", "deposit"}
GAMES = {"dice", "crash"}
Message = Any

settings.register_profile(
    "croupier-hostile",
    deadline=None,
    derandomize=True,  # the same frames on every run: a failure names a frame that fails again
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
PROFILE = settings.get_profile("croupier-hostile")


# ---------------------------------------------------------------- what a bad frame must get


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()
"""Not checked (e.g. the id of a frame nested so deep that the envelope cannot be read)."""


@dataclass
class Case:
    """One hostile frame and the answer docs/protocol.md promises for it."""

    label: str
    frame: bytes | str
    code: str | None
    """The ``error`` code expected (None: no error, e.g. a welcome, or only a close)."""
    close: int | None = None
    """The close code that must follow the reply (None: the socket stays open)."""
    field: Any = ANY
    """The ``field`` expected: a value, a tuple of accepted values, a str ending in ``*`` (a prefix), or ANY."""
    id: Any = ANY
    """The ``id`` the error must echo."""
    binary: bool = False
    """Sent on a MessagePack socket (else JSON)."""
    malformed: bool = True
    """Counts toward ``CROUPIER_MALFORMED_LIMIT`` (a frame that does not decode to a valid request)."""
    then_auth: bool = False
    """Before auth: the socket must stay open and take a valid ``auth`` after."""
    kind: str | None = None
    """For ``unauthorized``: the initData failure kind the message starts with."""
    welcome: Callable[[Message], bool] | None = None
    """For initData that must be accepted: a check of the welcome."""
    live_round: bool = False
    """A bet to send on the dice round taking bets (its ``round`` is :data:`LIVE_ROUND` until sent): in the
    code before issue 12 such a bet reached the ledger's shared transaction (group commit) with honest bets."""

    def describe(self) -> str:
        frame = self.frame if len(self.frame) < 300 else self.frame[:300]
        return f"{self.label}: {frame!r}"


LIVE_ROUND = 987_654_321


def encode(message: object, binary: bool) -> bytes | str:
    return msgspec.msgpack.encode(message) if binary else json.dumps(message)


def on_round(frame: bytes | str, round_id: int) -> bytes | str:
    """``frame`` with :data:`LIVE_ROUND` replaced by ``round_id``."""
    if isinstance(frame, str):
        return frame.replace(f'"round": {LIVE_ROUND}', f'"round": {round_id}', 1)
    placeholder = b"\xa5round" + msgspec.msgpack.encode(LIVE_ROUND)
    return frame.replace(placeholder, b"\xa5round" + msgspec.msgpack.encode(round_id), 1)


def field_matches(expected: Any, got: object) -> bool:
    if expected is ANY:
        return True
    if isinstance(expected, tuple):
        return any(field_matches(e, got) for e in expected)
    if isinstance(expected, str) and expected.endswith("*"):
        return isinstance(got, str) and got.startswith(expected[:-1])
    return bool(got == expected)


# ---------------------------------------------------------------- generated frames

ids = st.integers(1, 2**31) | st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
codecs = st.booleans()
plain_text = st.text(string.ascii_letters + string.digits, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_characters="\x00"), max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain_text, inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
controls = st.characters(categories=["Cc"])
"""C0 (U+0000 among them), DEL and C1."""


def bet(request_id: object, **fields: object) -> dict[str, object]:
    return {"t": "bet", "id": request_id, "game": "dice", "round": 1, "amount": 10,
            "params": {"target": 5000, "side": "over"}, **fields}  # fmt: skip


def action(request_id: object, **fields: object) -> dict[str, object]:
    return {"t": "action", "id": request_id, "game": "crash", "round": 1, "action": "cashout", **fields}


@st.composite
def garbage(draw: st.DrawFn) -> Case:
    if draw(codecs):
        return Case("not MessagePack", b"\xc1" + draw(st.binary(max_size=40)), "bad_request", field=None, id=None,
                    binary=True)  # fmt: skip
    return Case("not JSON", "}" + draw(st.text(max_size=40)), "bad_request", field=None, id=None)


@st.composite
def not_a_map(draw: st.DrawFn) -> Case:
    value = draw(st.integers(-(2**63), 2**63) | st.lists(st.integers(0, 9), max_size=3) | plain_text | st.none())
    binary = draw(codecs)
    return Case("not a map", encode(value, binary), "bad_request", field=None, id=None, binary=binary)


@st.composite
def unknown_type(draw: st.DrawFn) -> Case:
    kind = draw(st.text(max_size=12).filter(lambda t: t not in KNOWN_TYPES))
    request_id, binary = draw(ids), draw(codecs)
    return Case("unknown t", encode({"t": kind, "id": request_id}, binary), "unknown_type", field="t",
                id=request_id, binary=binary)  # fmt: skip


@st.composite
def wrong_type(draw: st.DrawFn) -> Case:
    binary = draw(codecs)
    ints = st.integers(-(2**63), 2**64 - 1) if binary else st.integers()  # what each codec can carry
    huge = st.integers(2**53, 2**64 - 1) if binary else st.integers(2**53, 2**200)
    floats = st.floats(allow_nan=binary, allow_infinity=binary)
    bad = {
        "amount": st.integers(-(2**63), 0) | huge | floats | plain_text | st.booleans() | st.none(),
        "round": st.integers(-(2**63), -1) | (st.just(2**63) if not binary else st.just(-1)) | floats | plain_text,
        "key": st.text(min_size=65, max_size=80) | st.just("") | ints | st.lists(ints, max_size=2),
        "params": st.lists(ints, max_size=3) | ints | plain_text,
        "game": st.just("") | st.text(min_size=65, max_size=70) | ints | st.none(),
    }
    name = draw(st.sampled_from(sorted(bad)))
    request_id = draw(ids)
    message = bet(request_id, **{name: draw(bad[name])})
    return Case(f"wrong type of {name}", encode(message, binary), "bad_request", field=name, id=request_id,
                binary=binary)  # fmt: skip


@st.composite
def control_in_key(draw: st.DrawFn) -> Case:
    """A bet valid in every other way, on the round taking bets: before issue 12, U+0000 in its key failed the
    ledger's whole shared transaction (the honest bets in it too)."""
    key = draw(st.text(max_size=20)) + draw(st.just("\x00") | controls) + draw(st.text(max_size=20))
    request_id, binary = draw(ids), draw(codecs)
    return Case("control character in key", encode(bet(request_id, key=key, round=LIVE_ROUND), binary),
                "bad_request", field="key", id=request_id, binary=binary, live_round=True)  # fmt: skip


@st.composite
def nul_in_params(draw: st.DrawFn) -> Case:
    """U+0000 in a string or a key somewhere in params, of a bet or of an action."""
    nul = draw(plain_text) + "\x00" + draw(plain_text)
    bad: object = draw(st.just(nul) | st.builds(lambda v: {nul: v}, json_values))
    for step in draw(st.lists(plain_text | st.integers(0, 2), max_size=3)):
        bad = [bad] if isinstance(step, int) else {step: bad}
    params = {**draw(st.dictionaries(plain_text, json_values, max_size=2)), "p": bad}
    request_id, binary = draw(ids), draw(codecs)
    message = (bet if draw(st.booleans()) else action)(request_id, params=params)
    return Case("U+0000 in params", encode(message, binary), "bad_request", field="params*", id=request_id,
                binary=binary)  # fmt: skip


@st.composite
def nul_in_names(draw: st.DrawFn) -> Case:
    nul = draw(plain_text) + "\x00" + draw(plain_text)
    request_id, binary = draw(ids), draw(codecs)
    name, message = draw(st.sampled_from([
        ("game", bet(request_id, game=nul)),
        ("game", {"t": "subscribe", "id": request_id, "game": nul}),
        ("game", {"t": "history", "id": request_id, "game": nul}),
        ("action", action(request_id, action=nul)),
        ("since.epoch", {"t": "subscribe", "id": request_id, "game": "dice", "since": {"offset": 0, "epoch": nul}}),
    ]))  # fmt: skip
    return Case(f"U+0000 in {name}", encode(message, binary), "bad_request", field=name, id=request_id, binary=binary)


@st.composite
def lone_surrogate(draw: st.DrawFn) -> Case:
    """JSON escapes of lone UTF-16 surrogates, or (MessagePack) a surrogate encoded as UTF-8 bytes."""
    request_id = draw(st.integers(1, 2**31))
    surrogate = f"\\u{draw(st.integers(0xD800, 0xDFFF)):04x}"
    text = draw(plain_text) + surrogate + draw(plain_text)
    if draw(codecs):
        raw = msgspec.msgpack.encode(bet(request_id, key="KEY"))
        return Case("surrogate in MessagePack", raw.replace(b"\xa3KEY", b"\xa3\xed\xa0\x80"), "bad_request",
                    field=None, binary=True)  # fmt: skip
    head = json.dumps(bet(request_id, params={}))[:-1]
    if draw(st.booleans()):
        return Case("lone surrogate in key", head + f', "key": "{text}"}}', "bad_request", field="key", id=request_id)
    frame = head.replace('"params": {}', f'"params": {{"side": "{text}"}}')
    return Case("lone surrogate in params", frame + "}", "bad_request", field="params.side", id=request_id)


@st.composite
def deep(draw: st.DrawFn) -> Case:
    """params nested beyond the limit (32), up to thousands of levels (the decoder's RecursionError)."""
    binary, arrays = draw(codecs), draw(st.booleans())
    per_level = (1 if arrays else 3) if binary else (2 if arrays else 6)
    depth = draw(st.integers(33, (MAX_FRAME - 200) // per_level))
    request_id = draw(st.integers(1, 2**31))
    if binary:
        head = msgspec.msgpack.encode(bet(request_id, params={}))[:-1]  # params is the last field
        body = (b"\x91" * depth + b"\x90") if arrays else (b"\x81\xa1a" * depth + b"\x01")
        frame: bytes | str = head + b"\x81\xa1a" + body
    else:
        body_text = ("[" * depth + "]" * depth) if arrays else ('{"a":' * depth + "1" + "}" * depth)
        frame = json.dumps(bet(request_id, params={}))[:-3] + '{"a":' + body_text + "}}"  # params: {"a": ...}
    # Up to some hundreds of levels the node names params (and echoes the id); deeper, the decoder gives up
    # and the frame as a whole is refused.
    return Case(f"params {depth} deep", frame, "bad_request", field=("params", None), binary=binary)


@st.composite
def not_json_params(draw: st.DrawFn) -> Case:
    """Values MessagePack carries and JSON does not, in the params of actions (forwarded as JSON) and bets."""
    value = draw(
        st.binary(max_size=8)
        | st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=4))
        | st.datetimes(timezones=st.just(datetime.UTC))
        | st.dictionaries(
            st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=2), st.integers(0, 9), min_size=1, max_size=2
        )
        | st.integers(2**63, 2**64 - 1)
        | st.sampled_from([math.nan, math.inf, -math.inf])
    )
    for step in draw(st.lists(plain_text | st.integers(0, 2), max_size=3)):
        value = [value] if isinstance(step, int) else {step: value}
    request_id = draw(ids)
    message = (action if draw(st.booleans()) else bet)(request_id, params={"p": value})
    return Case(f"non-JSON params {type(value).__name__}", msgspec.msgpack.encode(message), "bad_request",
                field="params*", id=request_id, binary=True)  # fmt: skip


@st.composite
def huge_ints(draw: st.DrawFn) -> Case:
    request_id = draw(st.integers(1, 2**31))
    big = draw(st.integers(2**63, 2**300) | st.integers(-(2**300), -(2**63) - 1))
    since = {"offset": abs(big), "epoch": "e"}
    name, message = draw(st.sampled_from([
        ("params*", bet(request_id, params={"target": big, "side": "over"})),
        ("params*", action(request_id, params={"x": [big]})),
        ("round", action(request_id, round=abs(big))),
        ("round", bet(request_id, round=abs(big))),
        ("since.offset", {"t": "subscribe", "id": request_id, "game": "dice", "since": since}),
    ]))  # fmt: skip
    return Case("huge int", json.dumps(message), "bad_request", field=name, id=request_id)


@st.composite
def wrong_frame_kind(draw: st.DrawFn) -> Case:
    request_id = draw(st.integers(1, 2**31))
    if draw(codecs):
        return Case("text on MessagePack", json.dumps({"t": "ping", "id": request_id}), "bad_request", field=None,
                    binary=True)  # fmt: skip
    return Case("binary on JSON", json.dumps({"t": "ping", "id": request_id}).encode(), "bad_request", field=None)


@st.composite
def refused_requests(draw: st.DrawFn) -> Case:
    """Well-formed requests the node refuses: they are not malformed and charge nothing."""
    request_id, binary = draw(ids), draw(codecs)
    game = draw(st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=64).filter(
        lambda g: g not in GAMES | {"roulette"}))  # fmt: skip
    choice = draw(st.sampled_from(["unknown game", "over max bet", "not subscribed", "second auth"]))
    if choice == "unknown game":
        message, code, name = bet(request_id, game=game), "unknown_game", "game"
    elif choice == "over max bet":
        message, code, name = bet(request_id, amount=draw(st.integers(1_000_001, 2**53 - 1))), "invalid_bet", "amount"
    elif choice == "not subscribed":
        message, code, name = {"t": "unsubscribe", "id": request_id, "game": "crash"}, "not_subscribed", None
    else:
        message, code, name = {"t": "auth", "id": request_id, "init_data": "x=1"}, "bad_request", "t"
    return Case(choice, encode(message, binary), code, field=name if name else ANY, id=request_id, binary=binary,
                malformed=False)  # fmt: skip


after_auth = st.one_of(garbage(), not_a_map(), unknown_type(), wrong_type(), control_in_key(), nul_in_params(),
                       nul_in_names(), lone_surrogate(), deep(), not_json_params(), huge_ints(), wrong_frame_kind(),
                       refused_requests())  # fmt: skip


@st.composite
def before_auth(draw: st.DrawFn) -> Case:
    """Anything but a valid ``auth`` first: auth_required and 4401; an ``auth`` with a bad field: bad_request."""
    request_id, binary = draw(ids), draw(codecs)
    choice = draw(st.sampled_from(["frame", "frame", "ping", "bet", "auth field", "auth since"]))
    if choice == "frame":
        case = draw(after_auth.filter(lambda c: c.label not in ("second auth",)))
        return Case(f"before auth: {case.label}", case.frame, "auth_required", close=4401, binary=case.binary)
    if choice in ("ping", "bet"):
        message = {"t": "ping", "id": request_id} if choice == "ping" else bet(request_id)
        return Case(f"{choice} before auth", encode(message, binary), "auth_required", close=4401, id=request_id,
                    binary=binary)  # fmt: skip
    if choice == "auth field":
        bad = draw(st.sampled_from([{}, {"init_data": ""}, {"init_data": 7}, {"init_data": None}, {"init_data": [1]}]))
        return Case("auth with a bad init_data", encode({"t": "auth", "id": request_id, **bad}, binary),
                    "bad_request", field="init_data", id=request_id, binary=binary, then_auth=True)  # fmt: skip
    epoch = draw(plain_text) + "\x00"
    message = {"t": "auth", "id": request_id, "init_data": "x", "since": {"offset": 0, "epoch": epoch}}
    return Case("auth with U+0000 in since.epoch", encode(message, binary), "bad_request", field="since.epoch",
                id=request_id, binary=binary, then_auth=True)  # fmt: skip


user_ids = itertools.count(5_000_000)
non_ascii_digits = st.text(
    st.characters(categories=["Nd", "No"], exclude_characters="0123456789"), min_size=1, max_size=6
) | st.builds(lambda a, b: a + b, st.text("0123456789", min_size=1, max_size=4), st.sampled_from("²³¹٤۵߃१"))


def _signed(fields: dict[str, str]) -> str:
    return urlencode({**fields, "hash": HmacVerifier(TOKEN).sign(fields)})


@st.composite
def bad_init_data(draw: st.DrawFn) -> Case:
    """An ``auth`` whose initData must be refused (unauthorized, then 4401), or accepted with its names cleaned."""
    request_id, binary = draw(ids), draw(codecs)
    now = int(time.time())
    user_id = next(user_ids)
    user = json.dumps({"id": user_id, "first_name": "Hostile"})
    choice = draw(st.sampled_from(["tampered", "future", "old", "auth_date digits", "user.id digits", "no user",
                                   "no hash", "garbage", "repeated", "control names"]))  # fmt: skip
    kind: str | None
    welcome = None
    if choice == "tampered":
        fields = dict(parse_qsl(sign_init_data(TOKEN, user_id=user_id)))
        position = draw(st.integers(0, 63))
        digit = draw(st.sampled_from("0123456789abcdef").filter(lambda d: d != fields["hash"][position]))
        fields["hash"] = fields["hash"][:position] + digit + fields["hash"][position + 1 :]
        init_data, kind = urlencode(fields), "bad_hash"
    elif choice == "future":
        ahead = draw(st.integers(120, 10 * 365 * 86400))
        init_data, kind = sign_init_data(TOKEN, user_id=user_id, auth_date=now + ahead), "expired"
    elif choice == "old":
        init_data, kind = sign_init_data(TOKEN, user_id=user_id, auth_date=now - draw(st.integers(86_500, 10**9))), \
            "expired"  # fmt: skip
    elif choice == "auth_date digits":
        init_data, kind = _signed({"auth_date": draw(non_ascii_digits), "user": user}), "malformed"
    elif choice == "user.id digits":
        digits = draw(non_ascii_digits)
        init_data = _signed({"auth_date": str(now), "user": json.dumps({"id": digits, "first_name": "X"})})
        kind = "malformed"
    elif choice == "no user":
        init_data, kind = _signed({"auth_date": str(now), "query_id": "q"}), None
    elif choice == "no hash":
        init_data, kind = urlencode({"auth_date": str(now), "user": user}), "missing_hash"
    elif choice == "garbage":
        init_data = draw(st.text(min_size=1, max_size=100).filter(lambda t: "hash=" not in t))
        kind = "*"  # malformed or missing_hash, depending on the garbage
    elif choice == "repeated":
        init_data, kind = sign_init_data(TOKEN, user_id=user_id) + "&user=" + user, "malformed"
    else:
        name = draw(plain_text) + draw(controls) + draw(plain_text)
        names = {"id": user_id, "first_name": name, "username": draw(controls) + "u"}
        init_data = _signed({"auth_date": str(now), "user": json.dumps(names)})
        kind = None
        welcome = _clean_names(user_id)
    message = {"t": "auth", "id": request_id, "init_data": init_data}
    if welcome is not None:
        return Case("control characters in signed names", encode(message, binary), None, binary=binary,
                    welcome=welcome, malformed=False)  # fmt: skip
    return Case(f"initData {choice}", encode(message, binary), "unauthorized", close=4401, field="init_data",
                id=request_id, binary=binary, kind=kind, malformed=False)  # fmt: skip


def _clean_names(user_id: int) -> Callable[[Message], bool]:
    def check(welcome: Message) -> bool:
        user = welcome["user"]
        names = [user["first_name"], user.get("username") or ""]
        return user["id"] == user_id and not any(unicodedata.category(c) == "Cc" for n in names for c in n)

    return check


def generate(strategy: st.SearchStrategy[Case], count: int) -> list[Case]:
    """``count`` cases drawn by Hypothesis (derandomized: the same on every run)."""
    found: list[Case] = []

    @settings(PROFILE, max_examples=count)
    @given(strategy)
    def collect(case: Case) -> None:
        found.append(case)

    collect()
    return found


# ---------------------------------------------------------------- the node and its clients


def hostile_env(database_url: str, state: Path) -> dict[str, str]:
    return clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=database_url, CROUPIER_DATA_DIR=str(state),
                     CROUPIER_NODE_ID="hostile", CROUPIER_GAMES="dice,crash", CROUPIER_BETTING_MS="1000",
                     CROUPIER_ROUND_PAUSE_MS="200", CROUPIER_SEED_CHAIN_LENGTH="500",
                     CROUPIER_WELCOME_CREDIT="100000", CROUPIER_MALFORMED_LIMIT=str(MALFORMED_LIMIT))  # fmt: skip


@contextlib.contextmanager
def logged_node(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``croupier serve`` on a free port with its output in ``log``; stopped (SIGTERM, else killed) after."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--log-level",
                                    "warning"], env=env, stdout=out, stderr=out)  # fmt: skip
    try:
        yield process, port
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


CLOSED = object()


class Client:
    """One socket (JSON or MessagePack): replies queue up, pushes (with ``ch``) are kept apart."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws, self.binary = ws, binary
        self.pushes: list[Message] = []
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int, binary: bool) -> Client:
        protocol = MSGPACK_SUBPROTOCOL if binary else JSON_SUBPROTOCOL
        ws = await connect(f"ws://127.0.0.1:{port}/ws", subprotocols=[protocol], open_timeout=10, max_size=None,
                           ping_interval=None)  # fmt: skip
        return cls(ws, binary)

    @classmethod
    async def join(cls, port: int, user_id: int, binary: bool) -> Client:
        client = await cls.open(port, binary)
        welcome = await client.request({"t": "auth", "id": "auth", "init_data": sign_init_data(TOKEN, user_id=user_id)})
        assert welcome["t"] == "welcome", welcome
        return client

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                message = msgspec.msgpack.decode(frame) if isinstance(frame, bytes) else json.loads(frame)
                if isinstance(message, dict) and "ch" in message:
                    self.pushes.append(message)
                else:
                    self._inbox.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            self._inbox.put_nowait(CLOSED)

    async def send(self, frame: bytes | str) -> None:
        await self.ws.send(frame)

    async def request(self, message: dict[str, Any], timeout: float = 10.0) -> Message:
        await self.send(encode(message, self.binary))
        return await self.reply(timeout)

    async def reply(self, timeout: float = 10.0) -> Message:
        """The next reply, or CLOSED when the socket closed first."""
        async with asyncio.timeout(timeout):
            reply = await self._inbox.get()
        if reply is CLOSED:
            self._inbox.put_nowait(CLOSED)
        return reply

    async def close_code(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close the socket; its close code."""
        reply = await self.reply(timeout)
        assert reply is CLOSED, f"expected the socket to close, got {reply}"
        await self.ws.wait_closed()
        return self.ws.close_code

    @property
    def open_(self) -> bool:
        return self.ws.close_code is None

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


# ---------------------------------------------------------------- honest players


@dataclass
class Honest:
    client: Client
    user_id: int
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def _last_round(self) -> Message | None:
        for message in reversed(self.client.pushes):
            if message.get("t") == "round" and message.get("ch") == "game:dice":
                return message
        return None

    def betting_round(self) -> int | None:
        """The dice round taking bets, as the pushes tell it (None between rounds)."""
        last = self._last_round()
        return int(last["round"]) if last is not None and last["phase"] == "betting" else None

    def live_round(self) -> int:
        """The dice round taking bets, else the last one seen."""
        last = self._last_round()
        return int(last["round"]) if last is not None else 1

    async def play(self, stop: asyncio.Event) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            round_id = self.betting_round()
            if round_id is None:
                await asyncio.sleep(0.02)
                continue
            key = f"h{self.user_id}-{n}"
            message = {"t": "bet", "id": key, "game": "dice", "round": round_id, "amount": 10,
                       "params": {"target": 5000, "side": "over" if n % 2 else "under"}, "key": key}  # fmt: skip
            try:
                reply = await self.client.request(message)
            except TimeoutError:
                self.failures.append(f"bet {key}: no reply in 10 s")
                return
            if reply is CLOSED:
                self.failures.append(f"bet {key}: socket closed with {self.client.ws.close_code}")
                return
            outcome = reply["t"] if reply["t"] != "error" else reply["code"]
            self.outcomes[outcome] += 1
            if outcome not in ("bet_ok", "betting_closed", "round_mismatch") or reply.get("id") != key:
                self.failures.append(f"bet {key}: {reply}")
            await asyncio.sleep(0.03)


# ---------------------------------------------------------------- hostile players


@dataclass
class Verdicts:
    checked: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, case: Case, ok: bool, got: object) -> bool:
        self.checked += 1
        if not ok:
            self.failures.append(f"{case.describe()}\n    expected {case.code} field={case.field} id={case.id} "
                                 f"close={case.close} kind={case.kind}\n    got {got!r}")  # fmt: skip
        return ok


def error_matches(case: Case, reply: Message) -> bool:
    if reply is CLOSED or not isinstance(reply, dict) or reply.get("t") != "error" or reply.get("code") != case.code:
        return False
    if not field_matches(case.field, reply.get("field")) or (case.id is not ANY and reply.get("id") != case.id):
        return False
    if case.kind == "*":
        return str(reply.get("message", "")).startswith(("malformed:", "missing_hash:"))
    return case.kind is None or str(reply.get("message", "")).startswith(case.kind + ":")


async def run_alone(port: int, case: Case, verdicts: Verdicts) -> None:
    """A case on a fresh socket: before auth, or an ``auth`` with bad initData."""
    client = await Client.open(port, case.binary)
    try:
        await _run_alone(client, case, verdicts)
    except (TimeoutError, ConnectionClosed) as exc:
        verdicts.check(case, False, f"{type(exc).__name__} (close {client.ws.close_code})")
    finally:
        await client.close()


async def _run_alone(client: Client, case: Case, verdicts: Verdicts) -> None:
    await client.send(case.frame)
    reply = await client.reply()
    if case.welcome is not None:
        verdicts.check(case, isinstance(reply, dict) and reply.get("t") == "welcome" and case.welcome(reply), reply)
        return
    if not verdicts.check(case, error_matches(case, reply), reply):
        return
    if case.close is not None:
        code = await client.close_code()
        verdicts.check(case, code == case.close, f"close {code}")
    elif case.then_auth:
        auth = {"t": "auth", "id": "again", "init_data": sign_init_data(TOKEN, user_id=next(user_ids))}
        welcome = await client.request(auth)
        verdicts.check(case, isinstance(welcome, dict) and welcome.get("t") == "welcome", welcome)


async def run_after_auth(port: int, cases: list[Case], verdicts: Verdicts, live: Callable[[], int]) -> None:
    """Cases on authenticated sockets: a new socket before the malformed limit would close it (4400)."""
    pending = list(cases)
    while pending:
        binary = pending[0].binary
        client = await Client.join(port, next(user_ids), binary)
        malformed = 0
        case = Case("still open after the batch", "", "pong")
        try:
            while pending and pending[0].binary == binary and malformed < MALFORMED_LIMIT:
                case = pending.pop(0)
                malformed += case.malformed
                await client.send(on_round(case.frame, live()) if case.live_round else case.frame)
                reply = await client.reply()
                verdicts.check(case, error_matches(case, reply), reply)
                if reply is CLOSED:
                    break
            else:  # the socket stayed open through all of it
                case = Case("still open after the batch", "", "pong")
                pong = await client.request({"t": "ping", "id": "still-open"})
                verdicts.check(case, isinstance(pong, dict) and pong.get("t") == "pong", pong)
        except (TimeoutError, ConnectionClosed) as exc:
            verdicts.check(case, False, f"{type(exc).__name__} (close {client.ws.close_code})")
        finally:
            await client.close()


async def run_limits(port: int, verdicts: Verdicts) -> None:
    """The malformed limit (the error, then 4400) and the frame size limit (1009), before and after auth."""
    client = await Client.join(port, next(user_ids), False)
    try:
        for n in range(MALFORMED_LIMIT + 1):
            await client.send(f"not json {n}")
            reply = await client.reply()
            verdicts.check(Case(f"malformed {n + 1}", "not json", "bad_request"),
                           isinstance(reply, dict) and reply.get("code") == "bad_request", reply)  # fmt: skip
        code = await client.close_code()
        verdicts.check(Case("malformed limit", "", None, close=4400), code == 4400, f"close {code}")
    finally:
        await client.close()
    for authenticated, binary in ((False, False), (True, False), (False, True), (True, True)):
        client = await (Client.join(port, next(user_ids), binary) if authenticated else Client.open(port, binary))
        try:
            message = {"t": "ping", "id": 1, "pad": "x" * MAX_FRAME}
            await client.send(encode(message, binary))
            code = await client.close_code()
            verdicts.check(Case(f"frame over 16 KiB (auth={authenticated})", "", None, close=1009), code == 1009,
                           f"close {code}")  # fmt: skip
        finally:
            await client.close()


async def run_hostile(port: int, alone: list[Case], after: list[Case], verdicts: Verdicts,
                      live: Callable[[], int], lanes: int = 4) -> None:  # fmt: skip
    async def lane(index: int) -> None:
        for case in alone[index::lanes]:
            await run_alone(port, case, verdicts)
        mine = sorted(after[index::lanes], key=lambda c: c.binary)
        await run_after_auth(port, mine, verdicts, live)

    await asyncio.gather(*(lane(i) for i in range(lanes)), run_limits(port, verdicts))


# ---------------------------------------------------------------- the test


async def test_hostile_frames_and_initdata_get_their_contract_answers_while_honest_players_bet(
    empty_database: str, tmp_path: Path
) -> None:
    after = generate(after_auth, 400)
    alone = generate(before_auth(), 60) + generate(bad_init_data(), 90)
    assert len(after) + len(alone) >= 500

    log = tmp_path / "node.log"
    state = tmp_path / "state"
    with logged_node(hostile_env(empty_database, state), log) as (process, port):
        await wait_ready(port)
        honest = [Honest(await Client.join(port, 4_000_001 + i, binary=i == 3), 4_000_001 + i) for i in range(4)]
        for player in honest:
            assert (await player.client.request({"t": "subscribe", "id": "s", "game": "dice"}))["t"] == "subscribed"
        stop_betting = asyncio.Event()
        playing = [asyncio.create_task(player.play(stop_betting)) for player in honest]
        await asyncio.sleep(1.5)  # the honest players are betting before the first hostile frame

        verdicts = Verdicts()
        started = time.monotonic()
        passes = 0
        # Again (as new users) until the hostile traffic has spanned a few rounds of the honest players' betting.
        while passes < 2 or (time.monotonic() - started < 4.0 and passes < 6):
            await run_hostile(port, alone, after, verdicts, honest[0].live_round)
            passes += 1
        hostile_seconds = time.monotonic() - started

        await asyncio.sleep(0.5)
        stop_betting.set()
        await asyncio.gather(*playing)
        for player in honest:
            pong: Message = CLOSED
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                pong = await player.client.request({"t": "ping", "id": "end"})
            if not player.client.open_ or pong is CLOSED or pong.get("t") != "pong":
                player.failures.append(f"socket closed ({player.client.ws.close_code}) or no pong at the end")
            await player.client.close()
        assert process.poll() is None, log.read_text()

    node_log = log.read_text(errors="replace")
    for player in honest:
        assert not player.failures, f"honest player {player.user_id}: {player.failures[:5]} ({player.outcomes})"
        assert player.outcomes["bet_ok"] >= 3, f"honest player {player.user_id}: {player.outcomes}"
    assert not verdicts.failures, f"{len(verdicts.failures)} of {verdicts.checked} answers were wrong:\n" + "\n".join(
        verdicts.failures[:20]
    )
    assert verdicts.checked >= 2 * (len(after) + len(alone))
    assert "Traceback" not in node_log, node_log[-5000:]
    assert hostile_seconds < 30, f"the hostile frames took {hostile_seconds:.1f} s ({passes} passes)"

    env = clean_env(CROUPIER_BOT_TOKEN=TOKEN, DATABASE_URL=empty_database, CROUPIER_DATA_DIR=str(state))
    report = subprocess.run([sys.executable, "-m", "server", "audit"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert report.returncode == 0 and "audit: OK" in report.stdout, report.stdout + report.stderr
