"""Print a JSON Schema of every v1 message: ``python -m protocol.schema``.

The output has two top-level entries, ``client`` (what a Mini App may send) and
``server`` (what it receives), each an ``anyOf`` over the messages, discriminated by
``t``, with every message under ``$defs``.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from .messages import Request, ServerMessage


def build_schema() -> dict[str, Any]:
    """Return the JSON Schema document for every client and server message."""
    (client, server), components = msgspec.json.schema_components(
        [Request, ServerMessage], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Croupier wire protocol v1",
        "description": "Every message is a map with a string `t`. Requests carry `id`, echoed by the reply.",
        "properties": {"client": client, "server": server},
        "$defs": components,
    }


def main() -> None:
    """Write the schema as indented JSON to standard output."""
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(build_schema()), indent=2) + b"\n")


if __name__ == "__main__":
    main()
