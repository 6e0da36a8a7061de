"""docs/howto/add-a-game.md works as written: its game registers and passes its own test, every
``croupier`` command it shows prints what it shows, and what it says of the registry, the schemas,
the tick fields and the fair RNG is what the code does.

The helpers here also run docs/howto/per-bet-game.md (tests/docs/test_howto_per_bet.py).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

from protocol.schema import build_schema
from server.cli import main
from server.games import registry
from server.games.registry import registered_games
from server.games.testing import TEST_SALT, TEST_SEED
from server.rounds.events import TICK_RESERVED
from server.rounds.fair import FairRng
from server.rounds.handler import RoundHandler
from server.rounds.schemas import game_info

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "howto" / "add-a-game.md"
GAMES_INIT = ROOT / "server" / "games" / "__init__.py"
MAX_GAME_LINES = 80
"""A page's game is one file shorter than this, counting every line of its block (blank lines and docstrings too)."""
SIMULATED_ROUNDS = 20_000
"""The page's ``croupier simulate`` lines run with this many rounds (the figures it prints are masked)."""


# ---------------------------------------------------------------------------------------- reading a page


def blocks(doc: Path, lang: str) -> list[str]:
    """The fenced blocks of ``doc`` in language ``lang``, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", doc.read_text(), flags=re.DOTALL | re.MULTILINE)


def python_block(doc: Path, marker: str) -> str:
    """The one python block of ``doc`` containing ``marker``."""
    found = [block for block in blocks(doc, "python") if marker in block]
    assert len(found) == 1, f"{doc.name}: {len(found)} python blocks contain {marker!r}, not 1"
    return found[0]


@dataclass(frozen=True)
class Shown:
    """A ``$ croupier ...`` line of a page's console block, and what the page shows it printing."""

    line: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    output: str = ""

    @property
    def status(self) -> int:
        """The exit status the output implies: 2 for an error line, 1 for an RTP outside its interval."""
        if any(line.startswith("croupier: ") for line in self.output.splitlines()):
            return 2
        return 1 if "OUTSIDE the interval" in self.output else 0

    def option(self, name: str) -> str:
        return self.argv[self.argv.index(name) + 1]


def shown_commands(doc: Path) -> list[Shown]:
    """Every ``croupier`` command in the console blocks of ``doc`` (``$ `` lines), with its output. Each runs
    as written from a fresh clone's root once ``make`` has made the virtualenv: ``.venv/bin/croupier``."""
    shown: list[Shown] = []
    for block in blocks(doc, "console"):
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            line, _, output = chunk.partition("\n")
            words = shlex.split(line)
            env = {}
            while re.fullmatch(r"[A-Z_]+=.*", words[0], flags=re.DOTALL):
                name, _, value = words.pop(0).partition("=")
                env[name] = value
            assert words[0] == ".venv/bin/croupier", f"{doc.name} runs {words[0]!r}, not .venv/bin/croupier: {line}"
            shown.append(Shown(line, words[1:], env, output))
    return shown


def make_targets(doc: Path) -> set[str]:
    """The ``make`` targets a page's shell blocks run."""
    text = "\n".join(blocks(doc, "sh"))
    return set(re.findall(r"^make ([a-z-]+)", text, flags=re.MULTILINE))


def masked(text: str) -> list[str]:
    """``text``'s lines with every number (1,000,000, 0.98842, 7.7) as ``#``, for figures that vary."""
    return [re.sub(r"\d[\d,]*(?:\.\d+)?", "#", line) for line in text.strip().splitlines()]


# ---------------------------------------------------------------------------------------- running a page


def load_game(doc: Path, game: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The page's game block, written to a file and imported as ``server.games.<game>`` (so the
    page's test block imports it as a designer's would), which registers it. Use within the
    ``game_registry`` fixture: the game is forgotten after the test."""
    code = python_block(doc, "@register")
    lines = code.strip().splitlines()
    assert len(lines) < MAX_GAME_LINES, f"{doc.name}: the game is {len(lines)} lines"
    path = tmp_path / f"{game}.py"
    path.write_text(code)
    name = f"server.games.{game}"
    # A designer who followed the page has the game registered already, as a built-in: the page's
    # own code takes its place for this test (game_registry puts the registry back afterwards).
    monkeypatch.delitem(registry._registered, game, raising=False)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    assert game in registered_games(), f"{doc.name}: importing the game did not register {game!r}"
    return module


def run_test_block(doc: Path) -> list[str]:
    """Run every test function of the page's test block; their names."""
    code = python_block(doc, "def test_")
    namespace: dict[str, Any] = {}
    exec(compile(code, f"{doc.name} (test block)", "exec"), namespace)
    tests = {name: test for name, test in namespace.items() if name.startswith("test_") and callable(test)}
    assert tests, f"{doc.name}: the test block defines no test function"
    for test in tests.values():
        test()
    return sorted(tests)


def by_hand(doc: Path, function: str) -> Callable[..., Any]:
    """The function ``function`` of the page's verify-by-hand block (the one that uses ``hmac``)."""
    namespace: dict[str, Any] = {}
    exec(compile(python_block(doc, "import hmac"), f"{doc.name} (by hand)", "exec"), namespace)
    found = namespace[function]
    assert callable(found)
    result: Callable[..., Any] = found
    return result


Runner = Callable[[Shown], tuple[int, str]]
"""Runs a page's command: its exit status and everything it printed."""


def croupier_runner(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Runner:
    """Run a page's command in-process (``server.cli.main``), in an environment of only what the
    line sets: its exit status and everything it printed."""
    for name in list(os.environ):
        if name.startswith("CROUPIER_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CROUPIER_DATA_DIR", str(tmp_path / "state"))  # where `serve` keeps a dev token

    def run(shown: Shown) -> tuple[int, str]:
        argv = list(shown.argv)
        if argv[0] == "serve":  # only a line showing the node refuse to start: it must not serve
            assert shown.output.startswith("croupier: configuration error: "), shown.line
        if argv[0] == "simulate":
            if "--rounds" in argv:
                argv[argv.index("--rounds") + 1] = str(SIMULATED_ROUNDS)
            else:
                argv += ["--rounds", str(SIMULATED_ROUNDS)]
        with monkeypatch.context() as env:
            for name, value in shown.env.items():
                env.setenv(name, value)
            capsys.readouterr()
            status = main(argv)
            printed = capsys.readouterr()
        return status, printed.out + printed.err

    return run


@pytest.fixture
def croupier(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Runner:
    return croupier_runner(monkeypatch, capsys, tmp_path)


def check_commands(doc: Path, run: Runner) -> list[Shown]:
    """Run every ``croupier`` line of ``doc``: each exits as its output implies and prints what the
    page shows (``simulate``'s figures masked: it runs fewer rounds here)."""
    shown = shown_commands(doc)
    for command in shown:
        status, printed = run(command)
        assert status == command.status, f"{command.line}\n{printed}"
        if command.argv[0] == "simulate" and command.status == 0:
            assert masked(printed) == masked(command.output), command.line
        else:
            assert printed.strip() == command.output.strip(), command.line
    return shown


def schema_of(handler: type[RoundHandler[Any, Any]], game: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The game's params and bet schemas as ``croupier schema`` prints them, its ``$ref`` resolved."""
    games = {name: (cls.params_type, cls.bet_type) for name, cls in registered_games().items()}
    assert games[game] == (handler.params_type, handler.bet_type)
    schema = json.loads(msgspec.json.encode(build_schema(games)))  # as JSON: a tuple default is a list
    entry = schema["properties"]["games"]["properties"][game]["properties"]
    resolved = []
    for kind in ("params", "bet"):
        ref = entry[kind]["$ref"]
        assert ref.startswith("#/$defs/")
        resolved.append(schema["$defs"][ref.removeprefix("#/$defs/")])
    return resolved[0], resolved[1]


def printed_schema(run: Runner) -> dict[str, Any]:
    """What ``croupier schema`` prints, read back."""
    status, printed = run(Shown("croupier schema", ["schema"]))
    assert status == 0
    document: dict[str, Any] = json.loads(printed)
    return document


def import_line(*howto_games: str) -> str:
    """The line of server/games/__init__.py that imports (and so registers) the built-in games, less
    ``howto_games`` (a designer who followed the pages has added them)."""
    found = [line for line in GAMES_INIT.read_text().splitlines() if line.startswith("from . import ")]
    assert len(found) == 1
    imports, _, comment = found[0].partition("  #")
    names = [name for name in imports.removeprefix("from . import ").split(", ") if name not in howto_games]
    return f"from . import {', '.join(names)}  #{comment}"


def with_games(line: str, *games: str) -> str:
    """``line`` (``from . import a, b  # comment``) with ``games`` added in order, as ruff sorts them."""
    imports, _, comment = line.partition("  #")
    names = imports.removeprefix("from . import ").split(", ")
    return f"from . import {', '.join(sorted({*names, *games}))}  #{comment}"


# ---------------------------------------------------------------------------------------- the page's tests


class TestAddAGame:
    @pytest.fixture(autouse=True)
    def coinflip(self, game_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
        """The page's game, registered for one test (``game_registry``: forgotten after it)."""
        return load_game(DOC, "coinflip", tmp_path, monkeypatch)

    def test_the_game_is_one_short_file_that_registers_and_passes_the_pages_test(self, coinflip: ModuleType) -> None:
        assert coinflip.CoinFlip.name == "coinflip"
        assert run_test_block(DOC) == ["test_coinflip_pays_the_winners_refuses_bad_bets_and_keeps_its_promise"]

    def test_every_croupier_command_prints_what_the_page_shows(self, croupier: Runner) -> None:
        shown = check_commands(DOC, croupier)
        assert {command.argv[0] for command in shown} == {"serve", "simulate", "verify"}
        assert [command.status for command in shown if command.argv[0] == "simulate"] == [0, 0, 2, 2]

    def test_the_verified_round_is_the_one_played_and_recomputes_by_hand(self, coinflip: ModuleType) -> None:
        (verify,) = [command for command in shown_commands(DOC) if command.argv[0] == "verify"]
        seed, salt = verify.option("--seed"), verify.option("--salt")
        (session,) = blocks(DOC, "text")
        assert f'"salt":"{salt}"' in session and f'"seed":"{seed}","outcome":{{"side":"heads"}}' in session
        assert "outcome {'side': 'heads'}" in verify.output
        assert f"seed_hash {hashlib.sha256(seed.encode()).hexdigest()}" in verify.output
        coin_side = by_hand(DOC, "coin_side")
        assert coin_side(seed, salt) == "heads"
        for n in range(200):  # the page's derivation is the game's draw, seed after seed
            other = hashlib.sha256(f"seed {n}".encode()).hexdigest()
            assert {"side": coin_side(other, salt)} == coinflip.CoinFlip().outcome(FairRng(other, salt, "coinflip"))

    def test_clients_see_the_params_and_bet_types_in_game_info_and_croupier_schema(
        self, coinflip: ModuleType, croupier: Runner
    ) -> None:
        handler = coinflip.CoinFlip()
        (shown_info,) = [json.loads(block) for block in blocks(DOC, "json") if '"bet_schema"' in block]
        assert msgspec.to_builtins(game_info(handler)) == shown_info
        params, bet = schema_of(coinflip.CoinFlip, "coinflip")
        assert params["properties"]["house_edge_bp"] == {
            "type": "integer",
            "minimum": 0,
            "exclusiveMaximum": 5000,
            "default": 100,
        }
        assert bet["properties"] == {"side": {"enum": ["heads", "tails"]}} and bet["required"] == ["side"]
        printed = printed_schema(croupier)
        assert printed["properties"]["games"]["properties"]["coinflip"] == {
            "type": "object",
            "properties": {"params": {"$ref": "#/$defs/CoinFlipParams"}, "bet": {"$ref": "#/$defs/CoinFlipBet"}},
        }
        assert printed["$defs"]["CoinFlipParams"] == params and printed["$defs"]["CoinFlipBet"] == bet
        assert '{"$ref": "#/$defs/CoinFlipParams"}' in DOC.read_text()


def test_the_import_line_to_edit_is_the_one_in_server_games_init() -> None:
    (diff,) = blocks(DOC, "diff")
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+")]
    assert removed == [import_line("coinflip", "scratch")]
    assert added == [with_games(import_line("coinflip", "scratch"), "coinflip")]


def test_the_session_lists_the_games_in_the_order_welcome_sends_them() -> None:
    """With the import line edited as the page says, the games register (and ``welcome.games`` lists them)
    in the order of that line."""
    (session,) = blocks(DOC, "text")
    shown = re.search(r'"games":(\[[^]]*\])', session)
    assert shown is not None
    line = with_games(import_line("coinflip", "scratch"), "coinflip")
    assert json.loads(shown[1]) == line.partition("  #")[0].removeprefix("from . import ").split(", ")


def test_make_test_on_the_pages_test_alone_holds_no_coverage_floor() -> None:
    """``make test PYTEST_ARGS=tests/games/test_coinflip.py`` passes or fails with that test: the coverage
    floor applies to a run of the whole suite only."""
    text = " ".join(DOC.read_text().split())
    assert "`make test PYTEST_ARGS=tests/games/test_coinflip.py`" in text

    def dry_run(*args: str) -> str:
        done = subprocess.run(["make", "-n", "test", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return done.stdout

    assert "--cov-fail-under" not in dry_run("PYTEST_ARGS=tests/games/test_coinflip.py")
    assert "--cov-fail-under=85" in dry_run()


def test_the_make_targets_the_page_runs_exist() -> None:
    targets = make_targets(DOC)
    assert targets == {"run", "dev-initdata"}
    makefile = (ROOT / "Makefile").read_text()
    for target in targets:
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target


def test_the_tick_field_names_the_page_forbids_are_the_engines() -> None:
    text = " ".join(DOC.read_text().split())
    match = re.search(r"tick fields may not be named (.*?) \(a tick", text)
    assert match is not None
    assert set(re.findall(r"`([a-z_]+)`", match[1])) == TICK_RESERVED


def test_the_page_states_the_fair_rngs_messages() -> None:
    text = DOC.read_text()
    assert 'msg="<game>:<salt>:<counter>"' in text and 'msg="<game>:<salt>:bet:<bet_id>:<counter>"' in text
    for method in ("unit()", "below(n)", "weighted(weights)", "shuffle(items)", "for_bet(bet_id)"):
        assert f"| `{method}`" in text, method


class Stream:
    """The fair RNG re-implemented from the page's table alone (section 5), to check the table."""

    def __init__(self, seed: str, salt: str, game: str, bet_id: int | None = None) -> None:
        self.key, self.counter, self.digits = seed.encode("ascii"), 0, ""
        self.prefix = f"{game}:{salt}:" + ("" if bet_id is None else f"bet:{bet_id}:")

    def take(self, count: int) -> int:
        while len(self.digits) < count:
            message = f"{self.prefix}{self.counter}".encode("ascii")
            self.digits += hmac.new(self.key, message, hashlib.sha256).hexdigest()
            self.counter += 1
        taken, self.digits = self.digits[:count], self.digits[count:]
        return int(taken, 16)

    def unit(self) -> float:
        return self.take(13) / 2**52

    def below(self, n: int) -> int:
        limit = (2**20 // n) * n
        while (value := self.take(5)) >= limit:
            pass
        return value % n

    def weighted(self, weights: Sequence[int]) -> int:
        r, running = self.below(sum(weights)), 0
        for index, weight in enumerate(weights):
            running += weight
            if running > r:
                return index
        raise AssertionError("r < sum(weights)")

    def shuffle(self, items: Sequence[Any]) -> list[Any]:
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out


@pytest.mark.parametrize("bet_id", [None, 0, 7])
def test_the_fair_rng_table_is_enough_to_reimplement_it(bet_id: int | None) -> None:
    rng = FairRng(TEST_SEED, TEST_SALT, "coinflip")
    if bet_id is not None:
        rng = rng.for_bet(bet_id)
    mine = Stream(TEST_SEED, TEST_SALT, "coinflip", bet_id)
    for _ in range(40):  # 2**19 + 1 rejects almost half its values; the blocks' leftover digits carry over
        assert rng.unit() == mine.unit()
        assert [rng.below(n) for n in (2, 3, 37, 2**19 + 1, 2**20)] == [
            mine.below(n) for n in (2, 3, 37, 2**19 + 1, 2**20)
        ]
        assert rng.weighted([6, 3, 1]) == mine.weighted([6, 3, 1])
        assert rng.shuffle(range(10)) == mine.shuffle(range(10))
