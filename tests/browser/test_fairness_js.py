"""``webapp/fairness.js``, the demo Mini App's verifier, computes what the server computes.

Run under Node (WebCrypto is global in Node 20+, as in the browser) on random seeds and salts for every game it
recomputes, with the params as ``welcome.game_info`` publishes them (house edges, a custom wheel), and on the
worked example of docs/fairness.md; the expected values come from the games' handlers. Skipped, in one line,
without Node.js 20+.
"""

from __future__ import annotations

import ast
import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.games.crash import Crash
from server.games.dice import Dice
from server.games.roulette import Roulette
from server.games.wheel import Wheel
from server.rounds.fair import FairRng
from server.rounds.handler import RoundHandler
from tests.docs.test_fairness_doc import example_values

FAIRNESS_JS = Path(__file__).resolve().parents[2] / "webapp" / "fairness.js"
NODE = shutil.which("node")


def _node_major() -> int:
    if NODE is None:
        return 0
    version = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=False).stdout
    major = version.strip().lstrip("v").split(".")[0]
    return int(major) if major.isdigit() else 0


if _node_major() < 20:
    pytest.skip("Node.js 20+ is missing: the page's verifier is run under node", allow_module_level=True)

RUNNER = """
import { readFileSync } from "node:fs";
import { recomputeOutcome, verifyRound } from %s;
const { outcomes, verdicts } = JSON.parse(readFileSync(0, "utf8"));
const results = { outcomes: [], verdicts: [] };
for (const [game, seed, salt, params] of outcomes) {
  results.outcomes.push(await recomputeOutcome(game, seed, salt, params));
}
for (const round of verdicts) results.verdicts.push(await verifyRound(round));
console.log(JSON.stringify(results));
"""

WHEEL = [(0, "red"), (150, "black"), (300, "gold"), (0, "black"), (200, "red"), (120, "black"), (90, "red")]
SEVEN_SEGMENTS = [{"multiplier": multiplier, "colour": colour} for multiplier, colour in WHEEL]
HANDLERS: list[RoundHandler[Any, Any]] = [
    Crash(),
    Crash({"house_edge_bp": -10_000}),
    Crash({"house_edge_bp": 500}),
    Dice(),
    Roulette(),
    Wheel(),
    Wheel({"segments": SEVEN_SEGMENTS, "colour_pays": {"red": 250, "gold": 700}}),
]


def run_fairness_js(outcomes: list[list[Any]], verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    assert NODE is not None
    script = RUNNER % json.dumps(FAIRNESS_JS.as_uri())
    result = subprocess.run(
        [NODE, "--input-type=module", "-e", script],
        input=json.dumps({"outcomes": outcomes, "verdicts": verdicts}),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_the_pages_verifier_recomputes_every_outcome_as_the_server_does() -> None:
    cases, expected = [], []
    for _ in range(60):
        seed, salt = secrets.token_hex(32), secrets.token_hex(32)
        for handler in HANDLERS:
            cases.append([handler.name, seed, salt, handler.params_wire()])
            expected.append(handler.public_outcome(handler.outcome(FairRng(seed, salt, handler.name))))
    assert run_fairness_js(cases, [])["outcomes"] == expected


def test_the_pages_verifier_passes_the_worked_example_and_names_each_mismatch() -> None:
    values = example_values()
    roll = ast.literal_eval(values["dice outcome"])["roll"]
    point = ast.literal_eval(values["crash outcome (house_edge_bp 100)"])["crash_point"]
    dice = {"game": "dice", "seed": values["seed"], "salt": values["salt"], "seedHash": values["seed_hash"],
            "outcome": {"roll": roll}}  # fmt: skip
    crash = {**dice, "game": "crash", "outcome": {"crash_point": point, "force_point": 101}, "params": {}}
    verdicts = run_fairness_js(
        [["plinko", values["seed"], values["salt"], {}]],
        [
            dice,
            crash,  # force_point depends on the bets, not on the seed: not checked
            {**dice, "seed": values["chain[0]"]},  # the previous round's seed
            {**dice, "outcome": {"roll": roll + 1}},
            {**dice, "salt": values["seed"]},
            {**dice, "seed": ""},
        ],
    )
    assert verdicts["outcomes"] == [None]  # plinko's outcome is per bet
    ok = [(verdict["ok"], verdict["problems"]) for verdict in verdicts["verdicts"]]
    assert ok[:2] == [(True, []), (True, [])]
    assert not ok[2][0] and "not the committed seed_hash" in ok[2][1][0]
    assert ok[3] == (False, [f"roll: published {roll + 1}, recomputed {roll}"])
    assert not ok[4][0] and ok[4][1][0].startswith(f"roll: published {roll}, recomputed ")
    assert not ok[5][0]
