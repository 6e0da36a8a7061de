"""What clients learn of a game: its params in effect and the JSON Schemas of its params and bets.

Sent per game in ``welcome.game_info`` and ``subscribed.game_info``, and printed with the whole
protocol by ``croupier schema`` (:func:`protocol.schema.build_schema` with every registered game),
so a Mini App can render a game's bet form and its generated types cover every game's bets.
"""

from __future__ import annotations

from typing import Any

import msgspec

from protocol import messages as m

from .handler import RoundHandler


def game_info(handler: RoundHandler[Any, Any]) -> m.GameInfo:
    """``handler``'s params in effect, and the JSON Schemas of its params and bet types."""
    return m.GameInfo(
        params=handler.params_wire(),
        params_schema=msgspec.json.schema(handler.params_type),
        bet_schema=msgspec.json.schema(handler.bet_type),
    )
