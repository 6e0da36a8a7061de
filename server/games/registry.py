"""Registration of games by name: built-ins register themselves; other packages via entry points.

A game shipped as a separate package declares, in its ``pyproject.toml``::

    [project.entry-points."croupier.games"]
    coinflip = "my_games.coinflip:CoinFlip"
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, TypeVar

from ..rounds import GameRules
from ..rounds.handler import RoundHandler

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "croupier.games"
_registered: dict[str, type[RoundHandler[Any, Any]]] = {}
H = TypeVar("H", bound=type[RoundHandler[Any, Any]])


def register(handler: H) -> H:
    """Class decorator: make ``handler`` available under ``handler.name``."""
    existing = _registered.get(handler.name)
    if existing is not None and existing is not handler:
        raise ValueError(f"two games named {handler.name!r}: {existing.__qualname__} and {handler.__qualname__}")
    _registered[handler.name] = handler
    return handler


LIMIT_KEYS = ("min_bet", "max_bet", "max_payout")


def configure_games(
    names: tuple[str, ...] | None,
    params: Mapping[str, Mapping[str, Any]],
    *,
    min_bet: int,
    max_bet: int,
    max_payout: int,
) -> tuple[dict[str, RoundHandler[Any, Any]], dict[str, GameRules]]:
    """Instantiate the handlers of ``names`` (all registered games when None) with their params.

    ``params[game]`` may set the game's own params and its limits (``min_bet``, ``max_bet``,
    ``max_payout``), which default to the deployment-wide values. Raises ValueError naming
    what is wrong.
    """
    available = registered_games()
    chosen = names if names is not None else tuple(available)
    unknown = [name for name in (*chosen, *params) if name not in available]
    if unknown:
        raise ValueError(f"unknown game(s) {', '.join(sorted(set(unknown)))}; registered: {', '.join(available)}")
    handlers: dict[str, RoundHandler[Any, Any]] = {}
    rules: dict[str, GameRules] = {}
    for name in chosen:
        overrides = dict(params.get(name, {}))
        limits = {key: overrides.pop(key) for key in LIMIT_KEYS if key in overrides}
        game_rules = GameRules(
            name,
            min_bet=int(limits.get("min_bet", min_bet)),
            max_bet=int(limits.get("max_bet", max_bet)),
            max_payout=int(limits.get("max_payout", max_payout)),
        )
        if not 0 < game_rules.min_bet <= game_rules.max_bet or game_rules.max_payout <= 0:
            raise ValueError(f"{name}: limits must satisfy 0 < min_bet <= max_bet and max_payout > 0")
        handlers[name] = available[name](overrides)
        rules[name] = game_rules
    return handlers, rules


def registered_games() -> dict[str, type[RoundHandler[Any, Any]]]:
    """Every registered game: the built-ins plus those found through the ``croupier.games`` entry points."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _registered:
            continue
        try:
            handler = entry.load()
        except Exception:
            log.exception("could not load game %r from %s", entry.name, entry.value)
            continue
        if isinstance(handler, type) and issubclass(handler, RoundHandler):
            register(handler)
        else:
            log.error("entry point %r is not a RoundHandler subclass", entry.name)
    return dict(_registered)
