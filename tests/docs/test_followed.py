"""The how-to pages hold after a designer has followed them: in a copy of the repository where the coin
flip and the scratch card were really added to ``server/games/`` (the handler files, the import line
edited as the page's diff says, the pages' tests under ``tests/games/``), the pages' own tests and the
added games' tests pass, as a newcomer would run them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.docs.test_howto import ROOT, blocks, python_block

PAGES = {"coinflip": ROOT / "docs" / "howto" / "add-a-game.md", "scratch": ROOT / "docs" / "howto" / "per-bet-game.md"}
COPIED = ("server", "protocol", "tests", "docs", "clients", "Makefile", "pyproject.toml")


def followed(clone: Path) -> None:
    """Do in ``clone`` what the pages tell a designer to do: the game's file, its test, the import line."""
    for game, page in PAGES.items():
        (clone / "server" / "games" / f"{game}.py").write_text(python_block(page, "@register"))
        (clone / "tests" / "games" / f"test_{game}.py").write_text(python_block(page, "def test_"))
    init = clone / "server" / "games" / "__init__.py"
    (diff,) = blocks(PAGES["coinflip"], "diff")
    removed, added = (next(line[1:] for line in diff.splitlines() if line.startswith(sign)) for sign in "-+")
    text = init.read_text()
    assert text.count(removed) == 1, "the page's diff does not apply to server/games/__init__.py"
    text = text.replace(removed, added)
    # The scratch card's page: "add `scratch` to the import line" (ruff keeps the names sorted).
    line = next(line for line in text.splitlines() if line.startswith("from . import "))
    imports, _, comment = line.partition("  #")
    names = sorted({*imports.removeprefix("from . import ").split(", "), "scratch"})
    init.write_text(text.replace(line, f"from . import {', '.join(names)}  #{comment}"))


def test_the_pages_tests_pass_once_their_games_are_really_added(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "dist")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, clone / name, ignore=ignore)
        else:
            shutil.copy2(source, clone / name)
    followed(clone)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/docs/test_howto.py",
         "tests/docs/test_howto_per_bet.py", "tests/games/test_coinflip.py", "tests/games/test_scratch.py"],
        cwd=clone, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert re.search(r"^\d+ passed", run.stdout.strip().splitlines()[-1]), report
    # The copy's own code ran: both games were registered there, as built-ins.
    assert "coinflip" in (clone / "server" / "games" / "__init__.py").read_text()
