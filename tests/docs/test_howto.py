"""docs/howto/add-a-game.md works as written: its game file, its test, its length."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "add-a-game.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.mark.usefixtures("game_registry")  # "coinflip" is forgotten after this test
def test_the_howto_game_fits_in_one_short_file_registers_and_passes_its_own_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    game_code, test_code = python_blocks()
    assert len(game_code.strip().splitlines()) < 80
    module_file = tmp_path / "howto_coinflip.py"
    module_file.write_text(game_code)
    spec = importlib.util.spec_from_file_location("howto_coinflip", module_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "howto_coinflip", module)
    spec.loader.exec_module(module)  # registers "coinflip"

    from server.games.registry import registered_games

    assert "coinflip" in registered_games()
    namespace: dict[str, object] = {}
    exec(compile(test_code, "add-a-game.md (test block)", "exec"), namespace)
    test = namespace["test_coinflip_validates_pays_and_keeps_its_promise"]
    assert callable(test)
    test()


def test_the_howto_names_commands_that_exist() -> None:
    text = DOC.read_text()
    for command in ("croupier simulate coinflip", "croupier verify coinflip", "make run", "make dev-initdata"):
        assert command in text
    games_init = (DOC.parents[2] / "server" / "games" / "__init__.py").read_text()
    assert "from . import crash, dice, roulette" in games_init  # the line step 2 tells you to edit
