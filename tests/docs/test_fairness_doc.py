"""docs/fairness.md stays true: its worked example is recomputed here with the server's own code
(``server.rounds.fair`` and the games' handlers), and its standard-library verifier is run against
``FairRng`` and the handlers on many seeds, so neither the numbers nor the algorithm the page states can
drift from what the node does."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Any

import pytest

from server.cli import main
from server.games.crash import Crash
from server.games.dice import Dice
from server.games.plinko import Plinko
from server.games.roulette import Roulette
from server.games.wheel import Wheel
from server.rounds.fair import FairRng, chain_salt, generate_chain, sha256_hex
from server.rounds.handler import BetInfo, RoundHandler

DOC = Path(__file__).resolve().parents[2] / "docs" / "fairness.md"
EXAMPLE_SECRET_TEXT = "croupier fairness example 153"
"""The example chain's top seed is ``sha256_hex`` of this text (a real chain's top is ``secrets.token_hex(32)``)."""
EXAMPLE_CLIENT_SEEDS = ["lucky 7", "c0ffee"]
"""The client seeds of the bets of the example chain's first round, in bet id order."""
PLINKO_BET_ID = 7


def _block(game: str, seed: str, salt: str, counter: int, bet_id: int | None = None) -> str:
    stream = "" if bet_id is None else f"bet:{bet_id}:"
    return hmac.new(seed.encode("ascii"), f"{game}:{salt}:{stream}{counter}".encode("ascii"), "sha256").hexdigest()


def _digits(block: str, start: int, n: int) -> str:
    """Five digits of ``block`` read as ``FairRng.below(n)`` reads them: the value, and whether it is kept."""
    value, limit = int(block[start : start + 5], 16), (2**20 // n) * n
    verdict = f"< {limit}: kept, {value} % {n} = {value % n}" if value < limit else f">= {limit}: rejected"
    return f"{block[start : start + 5]} = {value} ({verdict})"


def _outcome(handler: RoundHandler[Any, Any], seed: str, salt: str) -> dict[str, Any]:
    return handler.public_outcome(handler.outcome(FairRng(seed, salt, handler.name)))


def example_values() -> dict[str, str]:
    """Every number of the page's worked example, computed with the server's code."""
    top = sha256_hex(EXAMPLE_SECRET_TEXT)
    chain = generate_chain(3, top)
    terminating_hash = sha256_hex(chain[0])
    salt_text = f"{terminating_hash}:" + ":".join(EXAMPLE_CLIENT_SEEDS)
    salt = chain_salt(terminating_hash, EXAMPLE_CLIENT_SEEDS)
    seed = chain[1]
    values = {
        "chain[2] (the top)": chain[2],
        "chain[1]": chain[1],
        "chain[0]": chain[0],
        "terminating_hash": terminating_hash,
        "client seeds of the chain's first round": str(EXAMPLE_CLIENT_SEEDS),
        "salt text": salt_text,
        "salt": salt,
        "seed": seed,
        "seed_hash": sha256_hex(seed),
        "sha256 of the 32 bytes (not used)": hashlib.sha256(bytes.fromhex(seed)).hexdigest(),
    }
    dice_block = _block("dice", seed, salt, 0)
    values |= {
        'dice block 0, HMAC(seed, "dice:<salt>:0")': dice_block,
        "dice draw 1: digits 0-4": _digits(dice_block, 0, 10_000),
        "dice draw 2: digits 5-9": _digits(dice_block, 5, 10_000),
        "dice outcome": str(_outcome(Dice(), seed, salt)),
    }
    crash_block = _block("crash", seed, salt, 0)
    x = FairRng(seed, salt, "crash").unit()
    values |= {
        'crash block 0, HMAC(seed, "crash:<salt>:0")': crash_block,
        "crash X: digits 0-12": f"{crash_block[:13]} = {int(crash_block[:13], 16)}; / 2**52 = {x!r}",
        "crash 100 * keep / (1 - X), keep 0.99": repr(100 * 0.99 / (1 - x)),
        "crash outcome (house_edge_bp 100)": str(_outcome(Crash(), seed, salt)),
    }
    roulette_block, wheel_block = _block("roulette", seed, salt, 0), _block("wheel", seed, salt, 0)
    values |= {
        'roulette block 0, HMAC(seed, "roulette:<salt>:0")': roulette_block,
        "roulette draw: digits 0-4": _digits(roulette_block, 0, 37),
        "roulette outcome": str(_outcome(Roulette(), seed, salt)),
        'wheel block 0, HMAC(seed, "wheel:<salt>:0")': wheel_block,
        "wheel draw: digits 0-4": _digits(wheel_block, 0, 20),
        "wheel outcome (20 segments)": str(_outcome(Wheel(), seed, salt)),
    }
    plinko = Plinko()
    rng = FairRng(seed, salt, "plinko").for_bet(PLINKO_BET_ID)
    bet = BetInfo(PLINKO_BET_ID, 1, 100, plinko.read_bet({"risk": "low"}, 100))
    values |= {
        f'plinko bet {PLINKO_BET_ID} block 0, HMAC(seed, "plinko:<salt>:bet:{PLINKO_BET_ID}:0")': _block(
            "plinko", seed, salt, 0, PLINKO_BET_ID
        ),
        f"plinko bet {PLINKO_BET_ID} result (8 rows)": str(plinko.bet_result(rng, bet, {})),
    }
    return values


def example_block() -> dict[str, str]:
    """The ``name = value`` lines of the page's worked example (the fenced block after its heading)."""
    text = DOC.read_text()
    section = text.split("## Worked example", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the worked example's ```text block is missing"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    return dict(line.split(" = ", 1) for line in lines)


def test_the_worked_example_is_what_the_server_computes() -> None:
    written = {name.strip(): value.strip() for name, value in example_block().items()}
    assert written == example_values()


def test_the_example_chain_links_as_the_page_says() -> None:
    values = example_values()
    assert values["seed_hash"] == values["chain[0]"]  # the round's commitment is the previous seed
    assert sha256_hex(values["chain[0]"]) == values["terminating_hash"]  # the first round's seed_hash
    assert sha256_hex(values["salt text"]) == values["salt"]
    assert values["salt text"] == values["terminating_hash"] + ":lucky 7:c0ffee"
    assert sha256_hex(values["chain[2] (the top)"]) == values["chain[1]"]
    assert values["sha256 of the 32 bytes (not used)"] != values["seed_hash"]


def test_croupier_verify_prints_what_the_page_shows(capsys: pytest.CaptureFixture[str]) -> None:
    shown = re.search(r"```console\n\$ croupier (verify .*?)\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert shown is not None, "the page's croupier verify block is missing"
    assert main(shown.group(1).split()) == 0
    assert capsys.readouterr().out == shown.group(2)


def verifier_namespace() -> dict[str, Any]:
    """The page's standard-library verifier, executed."""
    code = re.search(r"```python\n(# verify\.py.*?)```", DOC.read_text(), re.DOTALL)
    assert code is not None, "the page's verify.py block is missing"
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "fairness.md:verify.py", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("round_index", range(200))
def test_the_pages_verifier_agrees_with_the_server(round_index: int) -> None:
    verify = verifier_namespace()
    seed, salt = secrets.token_hex(32), secrets.token_hex(32)
    assert verify["seed_hash"](seed) == sha256_hex(seed)
    client_seeds = [secrets.token_urlsafe(n) for n in range(round_index % 4)]
    assert verify["chain_salt"](seed, client_seeds) == chain_salt(seed, client_seeds)
    assert verify["crash_point"](seed, salt, 100) == _outcome(Crash(), seed, salt)["crash_point"]
    assert verify["dice_roll"](seed, salt) == _outcome(Dice(), seed, salt)["roll"]
    assert verify["roulette_number"](seed, salt) == _outcome(Roulette(), seed, salt)["number"]
    plinko = Plinko()
    bet = BetInfo(round_index + 1, 1, 100, plinko.read_bet({"risk": "high"}, 100))
    expected = plinko.bet_result(FairRng(seed, salt, "plinko").for_bet(round_index + 1), bet, {})["path"]
    assert verify["plinko_path"](seed, salt, round_index + 1, 8) == expected


def test_the_pages_verifier_reproduces_the_example() -> None:
    verify, values = verifier_namespace(), example_values()
    seed, salt = values["seed"], values["salt"]
    assert verify["chain_salt"](values["terminating_hash"], EXAMPLE_CLIENT_SEEDS) == salt
    assert verify["seed_hash"](seed) == values["seed_hash"]
    assert str({"crash_point": verify["crash_point"](seed, salt, 100)}) == values["crash outcome (house_edge_bp 100)"]
    assert str({"roll": verify["dice_roll"](seed, salt)}) == values["dice outcome"]
