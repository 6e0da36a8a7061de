"""docs/howto/per-bet-game.md works as written: its scratch card registers and passes its own test,
its commands print what it shows, a card's symbols are recomputed by hand from (seed, salt, bet id),
and its declared RTP is the exact one the page works out."""

from __future__ import annotations

import hashlib
import json
import re
from fractions import Fraction
from itertools import product
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from server.games.testing import TEST_SALT, TEST_SEED
from server.rounds.fair import FairRng
from server.rounds.handler import BetInfo
from server.rounds.schemas import game_info
from tests.docs.test_howto import (
    Runner,
    blocks,
    by_hand,
    check_commands,
    croupier_runner,
    import_line,
    load_game,
    printed_schema,
    run_test_block,
    schema_of,
    shown_commands,
    with_games,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "per-bet-game.md"


@pytest.fixture(autouse=True)
def scratch(game_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The page's game, registered for one test (``game_registry``: forgotten after it)."""
    return load_game(DOC, "scratch", tmp_path, monkeypatch)


@pytest.fixture
def croupier(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Runner:
    return croupier_runner(monkeypatch, capsys, tmp_path)


def test_the_game_is_one_short_file_that_registers_and_passes_the_pages_test(scratch: ModuleType) -> None:
    assert scratch.Scratch.name == "scratch"
    assert run_test_block(DOC) == ["test_each_card_draws_its_own_symbols_reproducibly_and_pays_three_of_a_kind"]


def test_every_croupier_command_prints_what_the_page_shows(croupier: Runner) -> None:
    shown = check_commands(DOC, croupier)
    assert [(command.argv[0], command.status) for command in shown] == [
        ("simulate", 2),
        ("simulate", 2),
        ("simulate", 0),
        ("verify", 0),
    ]


def test_a_card_is_recomputed_by_hand_from_seed_salt_and_bet_id(scratch: ModuleType) -> None:
    (verify,) = [command for command in shown_commands(DOC) if command.argv[0] == "verify"]
    seed, salt, bet_id = verify.option("--seed"), verify.option("--salt"), int(verify.option("--bet-id"))
    symbols = ["cherry", "cherry", "cherry"]
    assert f"bet {bet_id} result {{'symbols': {symbols}}}" in verify.output
    assert f"seed_hash {hashlib.sha256(seed.encode()).hexdigest()}" in verify.output
    (session,) = blocks(DOC, "text")  # the verified card is the one the session played
    assert f'"salt":"{salt}"' in session and f'"seed":"{seed}"' in session
    assert f'"bet":{bet_id},"payout":25,"balance":895,"result":{{"symbols":{json.dumps(symbols)}}}'.replace(
        " ", ""
    ) in session.replace(" ", "")
    scratch_symbols = by_hand(DOC, "scratch_symbols")
    assert scratch_symbols(seed, salt, bet_id) == symbols
    assert f'`scratch_symbols("{seed[:8]}…", "{salt[:8]}…", {bet_id})` is `{json.dumps(symbols)}`' in DOC.read_text()
    game, rng = scratch.Scratch(), FairRng(TEST_SEED, TEST_SALT, "scratch")
    for card in range(300):  # the page's derivation is the game's draw, bet after bet
        bet = BetInfo(card, 1, 100, scratch.ScratchBet())
        assert {"symbols": scratch_symbols(TEST_SEED, TEST_SALT, card)} == game.bet_result(rng.for_bet(card), bet, {})


def test_the_declared_rtp_is_the_exact_one_the_page_works_out(scratch: ModuleType) -> None:
    game = scratch.Scratch()
    symbols = game.params.symbols
    total = sum(symbol.weight for symbol in symbols)
    every_card = sum(  # all 1,000 weighted cards, counted
        Fraction(a.weight * b.weight * c.weight, total**3) * Fraction(a.pays if a == b == c else 0, 100)
        for a, b, c in product(symbols, repeat=3)
    )
    assert every_card == Fraction(97, 100) and game.declared_rtp(scratch.ScratchBet()) == 0.97
    assert game.max_multiplier(scratch.ScratchBet()) == 16000
    assert "= (54000 + 27000 + 16000) / 100000 = 0.97" in DOC.read_text()


def test_clients_see_the_params_and_bet_types_in_game_info_and_croupier_schema(
    scratch: ModuleType, croupier: Runner
) -> None:
    info = msgspec.to_builtins(game_info(scratch.Scratch()))
    assert info["params"]["symbols"][2] == {"name": "seven", "weight": 1, "pays": 16000}
    assert info["bet_schema"]["$defs"]["ScratchBet"]["properties"] == {}
    assert info["params_schema"]["$defs"]["Symbol"]["required"] == ["name", "weight", "pays"]
    params, bet = schema_of(scratch.Scratch, "scratch")
    assert params["properties"]["symbols"]["items"] == {"$ref": "#/$defs/Symbol"}
    assert bet == info["bet_schema"]["$defs"]["ScratchBet"]
    printed = printed_schema(croupier)
    assert printed["$defs"]["ScratchParams"] == params and printed["$defs"]["ScratchBet"] == bet


def test_the_import_line_the_page_shows_is_the_real_one_with_both_howto_games() -> None:
    (shown,) = re.findall(r"`(from \. import [^`]*)`", DOC.read_text())
    assert shown == with_games(import_line("coinflip", "scratch"), "coinflip", "scratch")
