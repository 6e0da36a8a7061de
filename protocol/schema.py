"""Print a JSON Schema of every v1 message: ``python -m protocol.schema``.

The output has two top-level entries, ``client`` (what a Mini App may send) and
``server`` (what it receives), each an ``anyOf`` over the messages, discriminated by
``t``, with every message under ``$defs``. ``croupier schema`` prints the same document with a
third entry, ``games``: each registered game's ``params`` and ``bet`` (a bet's ``params``) types.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import msgspec

from .messages import Request, ServerMessage


def build_schema(games: Mapping[str, tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """Return the JSON Schema document for every client and server message, and for ``games``
    (name -> its params type and bet type, msgspec Structs or unions of them) when given."""
    games = games or {}
    types: list[Any] = [Request, ServerMessage]
    for params, bet in games.values():
        types += [params, bet]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    properties: dict[str, Any] = {"client": schemas[0], "server": schemas[1]}
    if games:
        properties["games"] = {
            "type": "object",
            "description": "Each game's params (as CROUPIER_GAME_PARAMS sets them) and a bet's `params`.",
            "properties": {
                name: {
                    "type": "object",
                    "properties": {"params": schemas[2 + 2 * index], "bet": schemas[3 + 2 * index]},
                }
                for index, name in enumerate(games)
            },
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Croupier wire protocol v1",
        "description": "Every message is a map with a string `t`. Requests carry `id`, echoed by the reply.",
        "properties": properties,
        "$defs": components,
    }


def write_schema(schema: dict[str, Any]) -> None:
    """Write ``schema`` as indented JSON to standard output."""
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n")


def main() -> None:
    """Write the protocol's schema (no games) to standard output."""
    write_schema(build_schema())


if __name__ == "__main__":
    main()
