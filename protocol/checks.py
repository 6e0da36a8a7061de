"""Checks on decoded requests that the msgspec types cannot express.

msgspec validates types, lengths and ranges while it decodes (in C, at no cost worth
measuring): ``params`` values are JSON values with integers within 64 bits
(:data:`~protocol.messages.ParamValue`), round ids and offsets fit a ``bigint``. This
module adds what a type cannot say, for the strings and values of a request that reach
PostgreSQL or are forwarded between nodes as JSON:

- text PostgreSQL can store: no U+0000 (``text`` and ``jsonb`` refuse it) and no lone
  UTF-16 surrogate (not UTF-8). The decoders refuse lone surrogates themselves (a JSON
  escape of one is malformed JSON, a MessagePack string must be valid UTF-8): here the
  fast paths look for U+0000 only, the precise walk for both;
- idempotency keys without control characters (C0, DEL, C1);
- client seeds of printable ASCII other than ``:`` (they are joined with ``:`` into a chain's salt);
- ``params`` of bets and actions that are plain JSON at every depth: maps with string
  keys, arrays, strings, finite numbers, integers within 64 bits, booleans and null,
  nested at most :data:`MAX_PARAMS_DEPTH` levels. MessagePack carries more (``bin``,
  ``ext``, timestamps, non-string map keys, NaN): those are refused here, so nothing
  downstream (``orjson.dumps`` when an action is forwarded to another node, the ledger's
  ``jsonb``) meets a value it cannot write.

Only the fields that need it are looked at: a ``ping`` costs a dict lookup, a bet its few
strings and one loop over its (flat, in every game) ``params``; nested or suspicious
params take the precise walk, which also names the field and says why.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable
from typing import Any, Final

import msgspec

from . import messages as m

MAX_PARAMS_DEPTH: Final = 32
"""Most levels of maps and arrays in ``params`` (the ``params`` map itself is level 1)."""
MIN_PARAM_INT: Final = -(2**63)
MAX_PARAM_INT: Final = 2**63 - 1
"""Integers in ``params`` must fit a signed 64-bit integer."""

UNSTORABLE: Final = "holds U+0000 or a lone UTF-16 surrogate, which cannot be stored"
JSON_VALUES: Final = "params hold JSON values only (null, booleans, numbers, strings, arrays, maps with string keys)"
CONTROL_KEY: Final = "holds a control character, U+0000 or a lone UTF-16 surrogate"
BAD_CURSOR: Final = "is not a cursor this server gave: pass the previous page's next as it came"
BAD_CLIENT_SEED: Final = "holds ':' or a character that is not printable ASCII (space to ~)"

_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
_CONTROL_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CLIENT_SEED = re.compile("[ -9;-~]*")

Problem = tuple[str, str]
"""What is wrong with a request: the dotted path of the field, and why (a phrase after "it")."""


def storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text``: no U+0000 and no lone surrogate."""
    if text.isascii():  # O(1) in CPython; most strings on the wire are ASCII
        return "\x00" not in text
    return _UNSTORABLE_TEXT.search(text) is None


def printable(text: str) -> bool:
    """Whether ``text`` is storable and has no control character (C0, DEL, C1)."""
    if text.isascii():
        return text.isprintable()  # for ASCII: exactly no C0 and no DEL
    return _CONTROL_TEXT.search(text) is None


def check_request(request: m.Request) -> Problem | None:
    """The first field of ``request`` that cannot be stored or forwarded as is, or None.

    For requests the codecs decoded (their types are as declared); the codecs call it on
    every request.
    """
    check = CHECKS.get(type(request))
    return None if check is None else check(request)


def check_params(params: dict[str, Any], path: str = "params") -> Problem | None:
    """The first value of ``params`` (at any depth, of any type) that is not plain, storable JSON, or None."""
    found = _container_problem(params, 1)
    if found is None:
        return None
    suffix, reason = found
    return (path if suffix is None else path + suffix), reason


def _plain(params: dict[str, Any]) -> bool:
    """True when decoded ``params`` are plainly fine; False: take the precise walk (:func:`check_params`).

    The decoder already made the keys strings and the values JSON values with 64-bit
    integers; what is left is U+0000 in keys and strings, NaN and Infinity, and what is
    nested, here arrays of scalars (roulette's ``numbers``). One loop with the checks
    written out: every bet costs it, and a call per value would cost more than the checks.
    """
    for key, value in params.items():
        if "\x00" in key:
            return False
        kind = type(value)
        if kind is str:
            if "\x00" in value:
                return False
        elif kind is float:
            if value - value != 0.0:  # NaN or an infinity
                return False
        elif kind is list:
            for item in value:
                kind = type(item)
                if kind is str:
                    if "\x00" in item:
                        return False
                elif kind is int:
                    if not MIN_PARAM_INT <= item <= MAX_PARAM_INT:
                        return False
                elif not (item is None or kind is bool or (kind is float and item - item == 0.0)):
                    return False  # a container, a value JSON does not have, NaN or an infinity
        elif kind is dict:
            return False
    return True


def _container_problem(value: dict[Any, Any] | list[Any], depth: int) -> tuple[str | None, str] | None:
    """``(path below value, reason)`` for the first bad value in a map or array at ``depth``; a path of None
    names the root ``params`` (too deep)."""
    if depth > MAX_PARAMS_DEPTH:
        return None, f"nests maps and arrays deeper than {MAX_PARAMS_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "", f"has a map key that is not a string; {JSON_VALUES}"
            if not storable(key):
                return "", f"has a map key that {UNSTORABLE}"
            if (found := _value_problem(item, depth)) is not None:
                return _below(_member(key), found)
        return None
    for index, item in enumerate(value):
        if (found := _value_problem(item, depth)) is not None:
            return _below(f"[{index}]", found)
    return None


def _value_problem(value: object, depth: int) -> tuple[str | None, str] | None:
    """``(path below value, reason)`` for a value held by a container at ``depth``, or None."""
    if isinstance(value, str):
        return None if storable(value) else ("", UNSTORABLE)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if MIN_PARAM_INT <= value <= MAX_PARAM_INT else ("", "is an integer outside 64 bits")
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", "is not a finite number")
    if isinstance(value, dict | list):
        return _container_problem(value, depth + 1)
    return "", f"is {_describe(value)}; {JSON_VALUES}"


def _below(step: str, found: tuple[str | None, str]) -> tuple[str | None, str]:
    suffix, reason = found
    return (None if suffix is None else step + suffix), reason


def _member(key: str) -> str:
    """``.key`` for a key a person can read in a dotted path, else ``["key"]`` (JSON-quoted)."""
    if key and key.isprintable() and not any(c in key for c in ".[]\"'` "):
        return "." + key
    return "[" + msgspec.json.encode(key).decode() + "]"


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "a MessagePack bin value"
    if isinstance(value, msgspec.msgpack.Ext):
        return "a MessagePack ext value"
    if isinstance(value, datetime.datetime):
        return "a MessagePack timestamp"
    return f"a {type(value).__name__} value"


def _game(game: str) -> Problem | None:
    return ("game", UNSTORABLE) if "\x00" in game else None


def _since(since: m.StreamPosition | None) -> Problem | None:
    return ("since.epoch", UNSTORABLE) if since is not None and "\x00" in since.epoch else None


def _bet(bet: m.Bet) -> Problem | None:
    if "\x00" in bet.game:
        return "game", UNSTORABLE
    key = bet.key
    if key is not None and not (key.isascii() and key.isprintable()) and not printable(key):
        return "key", CONTROL_KEY
    if bet.client_seed is not None and not _CLIENT_SEED.fullmatch(bet.client_seed):
        return "client_seed", BAD_CLIENT_SEED
    params = bet.params
    if params and not _plain(params):
        return check_params(params)
    return None


def _action(action: m.Action) -> Problem | None:
    if "\x00" in action.game:
        return "game", UNSTORABLE
    if "\x00" in action.action:
        return "action", UNSTORABLE
    params = action.params
    if params and not _plain(params):
        return check_params(params)
    return None


def _subscribe(request: m.Subscribe) -> Problem | None:
    return _game(request.game) or _since(request.since)


def _named_game(request: m.Unsubscribe | m.History | m.Leaderboard) -> Problem | None:
    return _game(request.game)


def _cursor(cursor: str | None) -> Problem | None:
    if cursor is not None and not (cursor.isascii() and cursor.isdigit()):
        return "cursor", BAD_CURSOR
    return None


def _my_bets(request: m.MyBets) -> Problem | None:
    return (None if request.game is None else _game(request.game)) or _cursor(request.cursor)


def _my_transactions(request: m.MyTransactions) -> Problem | None:
    return _cursor(request.cursor)


def _auth(request: m.Auth) -> Problem | None:
    return _since(request.since)


CHECKS: Final[dict[type[Any], Callable[[Any], Problem | None]]] = {
    m.Bet: _bet,
    m.Action: _action,
    m.Subscribe: _subscribe,
    m.Unsubscribe: _named_game,
    m.History: _named_game,
    m.Leaderboard: _named_game,
    m.MyBets: _my_bets,
    m.MyTransactions: _my_transactions,
    m.Auth: _auth,
}
"""The check of each request type with strings or values to check (``ping``, ``balance`` and ``deposit`` have none)."""
