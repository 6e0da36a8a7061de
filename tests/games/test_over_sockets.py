"""The designer's kit end to end, over real sockets on a node with real PostgreSQL: each game's params
and schemas in ``welcome``/``subscribed``, the wheel's ``running`` event, plinko's per-bet draws in
``bet_settled`` and in ``bets.result``, and ``croupier verify`` agreeing with what was paid."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from server.cli import main
from server.games.plinko import Plinko
from server.ledger import Ledger
from tests.conftest import StartNode
from tests.edge.client import request
from tests.rounds.test_caps_and_cashouts import bet, betting_round
from tests.rounds.test_engine import next_event, player

GAMES = ("plinko", "wheel")
PARAMS = {"wheel": {"running_ms": 300}, "plinko": {"running_ms": 0}}


async def test_games_publish_params_and_schemas_the_wheel_shows_its_segment_and_plinko_draws_per_bet(
    start_node: StartNode, bank: Ledger, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    async with start_node(betting_ms=700, games=GAMES, game_params=PARAMS) as node:
        ws, _ = await player(node, bank, balance=10_000)
        welcome_info = await welcome_game_info(node, bank)
        assert set(welcome_info) == set(GAMES)
        wheel = welcome_info["wheel"]
        assert wheel["params"]["running_ms"] == 300 and len(wheel["params"]["segments"]) == 20
        assert "Spin" in orjson.dumps(wheel["bet_schema"]).decode()  # the union of bet types, by ``type``
        risk = welcome_info["plinko"]["bet_schema"]["$defs"]["PlinkoBet"]["properties"]["risk"]  # type: ignore[index]
        assert sorted(risk["enum"]) == ["high", "low", "medium"]
        subscribed = await request(ws, {"t": "subscribe", "id": "s", "game": "wheel"})
        assert subscribed["game_info"] == wheel

        # The wheel: one segment for everyone, told in the running event, paid at settlement.
        round_id = await betting_round(ws, "wheel", margin_ms=300)
        spin = await bet(ws, "wheel", round_id, 100, {"type": "spin"}, 1)
        red = await bet(ws, "wheel", round_id, 100, {"type": "colour", "colour": "red"}, 2)
        refused = await bet(ws, "wheel", round_id, 100, {"type": "colour", "colour": "green"}, 3)
        assert (refused["code"], refused["field"]) == ("invalid_bet", "params.colour"), refused
        running = await next_event(
            ws, lambda m: m["t"] == "round" and m["round"] == round_id and m["phase"] == "running"
        )
        segment = running["info"]["segment"]
        assert "multiplier" not in running  # no crash field in another game's events
        settled = await next_event(
            ws, lambda m: m["t"] == "round" and m["round"] == round_id and m["phase"] == "settled"
        )
        assert settled["outcome"] == {"segment": segment}
        landed = wheel["params"]["segments"][segment]
        paid = dict(await db.fetch("SELECT id, payout FROM bets WHERE id = ANY($1::bigint[])",
                                   [spin["bet"]["id"], red["bet"]["id"]]))  # fmt: skip
        assert paid[spin["bet"]["id"]] == 100 * landed["multiplier"] // 100
        assert paid[red["bet"]["id"]] == (218 if landed["colour"] == "red" else 0)
        await request(ws, {"t": "unsubscribe", "id": "u", "game": "wheel"})

        # Plinko: each bet its own ball, sent with its bet_settled and stored with the bet.
        await request(ws, {"t": "subscribe", "id": "p", "game": "plinko"})
        round_id = await betting_round(ws, "plinko", margin_ms=300)
        placed = [(await bet(ws, "plinko", round_id, 100, {"risk": risk}, f"p{risk}"))["bet"]
                  for risk in ("low", "high")]  # fmt: skip
        results: dict[int, dict[str, object]] = {}
        settled = {}
        while len(results) < 2 or not settled:  # the round's channel and the user's: in either order
            event = await next_event(ws, lambda m: m["t"] == "bet_settled" or (
                m["t"] == "round" and m["round"] == round_id and m["phase"] == "settled"))  # fmt: skip
            if event["t"] == "bet_settled":
                results[event["bet"]] = event
            else:
                settled = event
        tables = Plinko().params
        for placed_bet in placed:
            event = results[placed_bet["id"]]
            slot = event["result"]["slot"]
            assert len(event["result"]["path"]) == 8 and slot == sum(event["result"]["path"])
            table = tables.low if placed_bet["params"]["risk"] == "low" else tables.high
            assert event["payout"] == 100 * table[slot] // 100
            stored = await db.fetchval("SELECT result FROM bets WHERE id = $1", placed_bet["id"])
            assert orjson.loads(stored) == event["result"]
            # Anyone can recompute the ball from the revealed seed, the salt and the bet's id.
            capsys.readouterr()
            assert main(["verify", "plinko", "--seed", settled["seed"], "--salt", settled["salt"], "--bet-id",
                         str(placed_bet["id"]), "--bet", orjson.dumps(placed_bet["params"]).decode()]) == 0  # fmt: skip
            printed = capsys.readouterr().out
            assert f"'slot': {slot}" in printed and f"pays {event['payout']} for 100" in printed
        await ws.close()


async def welcome_game_info(node: object, bank: Ledger) -> dict[str, dict[str, object]]:
    from tests.edge.client import authed
    from tests.ledger.conftest import next_user_id

    ws, welcome = await authed(node, next_user_id())  # type: ignore[arg-type]
    await ws.close()
    info: dict[str, dict[str, object]] = welcome["game_info"]
    return info
