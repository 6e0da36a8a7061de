"""The game designer's and operator's commands: ``croupier simulate``, ``verify`` and ``schema``.

Pure computations over the registered games: no settings, no database, no bot token. A game's
params come from ``--params`` (JSON), else its entry in ``CROUPIER_GAME_PARAMS``, else its
defaults, so an operator checks the table their nodes run. Each command returns its exit status:
0 fine, 1 a check failed (``simulate``: an RTP outside its interval), 2 bad input (one line on
stderr naming it).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from ..rounds.fair import FairRng, sha256_hex
from ..rounds.handler import BetInfo, InvalidBet, RoundContext, RoundHandler, RunState
from ..rounds.play import begin_running, settle_bets
from ..rounds.simulator import simulate
from .registry import LIMIT_KEYS, registered_games

_HEX64 = re.compile(r"[0-9a-f]{64}")


class BadInput(Exception):
    """What the user gave cannot be used; the message says why."""


def load_handler(game: str, raw_params: str | None = None) -> RoundHandler[Any, Any]:
    """The handler of ``game`` with its params (see the module docstring). Limits (``min_bet``...)
    in them are ignored: they change no outcome or payout."""
    games = registered_games()
    if game not in games:
        raise BadInput(f"no game {game!r}; registered: {', '.join(games)}")
    if raw_params is not None:
        source = "--params"
        params = _json(raw_params, "--params must be JSON, e.g. '{\"house_edge_bp\": 200}'")
    else:  # read as server.settings does, but without the rest of the settings (no bot token needed)
        source = "CROUPIER_GAME_PARAMS"
        every_game = _json(os.environ.get("CROUPIER_GAME_PARAMS") or "{}",
                           'CROUPIER_GAME_PARAMS must be JSON, e.g. {"crash": {"house_edge_bp": 100}}')  # fmt: skip
        if not isinstance(every_game, dict) or not all(isinstance(v, dict) for v in every_game.values()):
            raise BadInput("CROUPIER_GAME_PARAMS must map game names to objects of params")
        params = every_game.get(game, {})
    if not isinstance(params, dict):
        raise BadInput(f"{source} must be a JSON object of the game's params")
    try:
        return games[game]({key: value for key, value in params.items() if key not in LIMIT_KEYS})
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{source}: {exc}") from None


def _json(text: str, error: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadInput(error) from None


def run_simulate(
    game: str, raw_params: str | None, strategies: list[str] | None, *, rounds: int, amount: int, seed: str
) -> int:
    """Simulate each strategy (a name from the game's ``strategies``, or bet params as JSON; default:
    every named one) and print its report. 1 when any RTP check is outside its interval."""
    try:
        handler = load_handler(game, raw_params)
        chosen = _strategies(handler, strategies)
        reports = [simulate(handler, rounds, bet, amount=amount, start_seed=seed) for bet in chosen.values()]
    except BadInput as exc:
        return _bad(str(exc))
    except InvalidBet as exc:
        return _bad(f"the game refuses the strategy's bet: {exc.field}: {exc}")
    except ValueError as exc:
        return _bad(str(exc))
    for name, report in zip(chosen, reports, strict=True):
        print(f"[{name}] {report.summary()}")
    outside = [name for name, report in zip(chosen, reports, strict=True) if not report.within_interval]
    if outside:
        print(f"OUTSIDE the interval: {', '.join(outside)}")
        return 1
    return 0


def _strategies(handler: RoundHandler[Any, Any], given: list[str] | None) -> dict[str, Mapping[str, Any]]:
    if not given:
        if not handler.strategies:
            raise BadInput(f"{handler.name} names no strategies: pass --strategy with a bet's params as JSON")
        return dict(handler.strategies)
    chosen: dict[str, Mapping[str, Any]] = {}
    for text in given:
        if text in handler.strategies:
            chosen[text] = handler.strategies[text]
            continue
        if not text.lstrip().startswith("{"):
            names = ", ".join(handler.strategies) or "none"
            raise BadInput(f"--strategy {text!r} is neither a strategy of {handler.name} ({names}) nor JSON")
        bet = _json(text, "--strategy must be a strategy's name or a bet's params as JSON")
        if not isinstance(bet, dict):
            raise BadInput("--strategy must be a JSON object of a bet's params")
        chosen[text] = bet
    return chosen


def run_verify(
    game: str,
    raw_params: str | None,
    *,
    seed: str,
    salt: str,
    bet_id: int | None = None,
    bet: str | None = None,
    amount: int = 100,
) -> int:
    """Print the round's outcome recomputed from its revealed seed; with ``bet_id`` (and the bet's
    params ``bet``, as its ``bet_ok`` showed them) that bet's own draw and what ``amount`` pays."""
    try:
        handler = load_handler(game, raw_params)
        if not _HEX64.fullmatch(seed) or not _HEX64.fullmatch(salt):
            raise BadInput("--seed and --salt are 64 lowercase hex characters")
        rng = FairRng(seed, salt, game)
        outcome = handler.outcome(rng)
        lines = [f"game {game}", f"seed_hash {sha256_hex(seed)}", f"outcome {handler.public_outcome(outcome)}"]
        if bet_id is not None:
            params = _json(bet or "{}", "--bet must be the bet's params as JSON, as bet_ok showed them")
            if not isinstance(params, dict):
                raise BadInput("--bet must be a JSON object of the bet's params")
            info = BetInfo(bet_id, 0, amount, handler.read_bet(params, amount))
            # As the node plays it, with this bet alone in the round (crash's force point depends on
            # every bet: it is in the published outcome, and the payout shown here does not apply it).
            ctx = RoundContext(0, lambda: 0, rng, handler.params, logging.getLogger(game), 2**62)
            begin_running(handler, ctx, RunState(0, outcome, [info]))
            settled = settle_bets(handler, rng, outcome, [info], 2**62)[0]
            lines += [f"bet {bet_id} result {settled.result}", f"bet {bet_id} pays {settled.payout} for {amount}"]
    except BadInput as exc:
        return _bad(str(exc))
    except InvalidBet as exc:
        return _bad(f"--bet: {exc.field}: {exc}")
    except (ValueError, TypeError, KeyError) as exc:  # a param of the wrong range for the game's draw
        return _bad(f"the game's params do not work: {exc!r}")
    print("\n".join(lines))
    return 0


def run_schema() -> int:
    """Print the protocol's JSON Schema with every registered game's params and bet types."""
    from protocol.schema import build_schema, write_schema

    games = registered_games()
    write_schema(build_schema({name: (game.params_type, game.bet_type) for name, game in games.items()}))
    return 0


def _bad(message: str) -> int:
    print(f"croupier: {message}", file=sys.stderr)
    return 2
