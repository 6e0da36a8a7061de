"""README.md is true: its "Talk to it" session, played against a real ``croupier serve`` in development
mode as the README starts it, gets what the README shows (its ``…`` standing for what varies); its
settings table names every setting; it tells how to change the port.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.docs.test_howto import blocks
from tests.services import clean_env, node_process, wait_ready

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PASTE = "<paste the line printed above>"
ELIDED = "…"
BET_MARGIN_MS = 1500
"""The test bets on a round only while this much of its betting window is left (a person pastes slower)."""


def pattern(line: str) -> Any:
    """A README ``<`` line as JSON, ``…`` standing for anything: ``"…"`` or a bare ``…`` value matches any
    value, a bare ``…`` member stands for members left out."""
    text = line.replace(f":{ELIDED}", f':"{ELIDED}"')
    text = re.sub(rf",{ELIDED}(?=[,}}\]])", "", text)
    text = re.sub(rf"(?<=[{{\[]){ELIDED},?", "", text)
    return json.loads(text)


def mismatches(shown: Any, real: Any, path: str = "") -> list[str]:
    """Where ``real`` differs from the README's ``shown``: shown keys must be there with shown values; a
    shown list of names must be among the real ones (a game you added is one more)."""
    if shown == ELIDED:
        return []
    if isinstance(shown, dict):
        if not isinstance(real, dict):
            return [f"{path}: {real!r} is not an object"]
        found = [f"{path}.{key}: missing" for key in shown if key not in real]
        for key, value in shown.items():
            if key in real:
                found += mismatches(value, real[key], f"{path}.{key}")
        return found
    if isinstance(shown, list):
        return [] if isinstance(real, list) and set(shown) <= set(real) else [f"{path}: {real!r} lacks {shown!r}"]
    return [] if shown == real else [f"{path}: {real!r}, the README shows {shown!r}"]


def renumber(shown: Any, old: int | None, new: int | None) -> None:
    """Replace round number ``old`` by ``new`` wherever ``shown`` names a round."""
    if isinstance(shown, dict):
        for key, value in shown.items():
            if key == "round" and value == old:
                shown[key] = new
            else:
                renumber(value, old, new)


def session() -> list[tuple[str, str]]:
    """The README's session: (``>`` or ``<``, the JSON after it), in order."""
    (text,) = [block for block in blocks(README, "text") if '"t":"auth"' in block]
    return [(line[0], line[2:]) for line in text.splitlines() if line[:2] in ("> ", "< ")]


class Inbox:
    """What the node sent, read on demand; each message is matched once, in arrival order per kind."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.unread: list[dict[str, Any]] = []

    async def take(self, shown: dict[str, Any]) -> dict[str, Any]:
        """The first message of the kind ``shown`` is (its ``t``, and its ``id``/``phase``/``round`` number
        when shown)."""
        keys = [key for key in ("t", "id", "phase", "round") if isinstance(shown.get(key), str | int)]

        def same_kind(message: dict[str, Any]) -> bool:
            return all(message.get(key) == shown[key] for key in keys)

        while True:
            for index, message in enumerate(self.unread):
                if same_kind(message):
                    return self.unread.pop(index)
            self.unread.append(json.loads(await self.ws.recv()))


async def test_the_talk_to_it_session_gets_what_the_readme_shows(empty_database: str, tmp_path: Path) -> None:
    env = clean_env(CROUPIER_DEV="1", CROUPIER_DATA_DIR=str(tmp_path / "state"), DATABASE_URL=empty_database,
                    CROUPIER_BETTING_MS="3000", CROUPIER_ROUND_PAUSE_MS="0")  # fmt: skip
    lines = session()
    assert next(line for kind, line in lines if kind == ">") == f'{{"t":"auth","id":1,"init_data":"{PASTE}"}}'
    with node_process(env) as (_, port):
        await wait_ready(port, attempts=600)
        minted = subprocess.run([sys.executable, "-m", "server", "dev-initdata", "--user-id", "42"], env=env,
                                capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        shown_round: int | None = None
        real_round: int | None = None
        won: bool | None = None
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:  # python -m websockets offers no subprotocol: JSON
            inbox = Inbox(ws)
            for kind, line in lines:
                if kind == ">":
                    request = json.loads(line.replace(PASTE, minted.stdout.strip()))
                    if request["t"] == "bet":
                        assert request["round"] == shown_round and real_round is not None
                        request["round"] = real_round
                    await ws.send(json.dumps(request))
                    continue
                shown = pattern(line)
                renumber(shown, shown_round, real_round)  # the README's round number stands for the one bet on
                if shown["t"] == "balance" and shown.get("reason") == "win" and won is False:
                    continue  # the README says a losing bet gets no second balance push
                if shown["t"] == "bet_settled" and won is False:  # ... and what its bet_settled says
                    shown.update(payout=0, balance=990)
                real = await inbox.take(shown)
                if shown["t"] == "subscribed":
                    shown_round = shown["round"]["round"]
                    snapshot = real["round"]
                    # Not betting, or too little of it left: as the README says, wait for the next round
                    # taking bets; it is what the README's snapshot shows.
                    left = 0.0 if snapshot is None else snapshot["closes_at"] - time.time() * 1000
                    if snapshot is None or snapshot["phase"] != "betting" or left < BET_MARGIN_MS:
                        snapshot = await inbox.take({"t": "round", "phase": "betting"})
                        while snapshot["closes_at"] - time.time() * 1000 < BET_MARGIN_MS:
                            snapshot = await inbox.take({"t": "round", "phase": "betting"})
                        real = {**real, "round": snapshot}
                    real_round = snapshot["round"]
                    renumber(shown, shown_round, real_round)
                if shown["t"] == "round" and shown.get("phase") == "settled":
                    assert real["round"] == real_round
                    won = real["outcome"]["roll"] > 5000
                    shown["outcome"]["roll"] = real["outcome"]["roll"]
                assert not mismatches(shown, real), (line, real, mismatches(shown, real))
        assert shown_round == 12 and real_round is not None and won is not None


def table_row(name: str) -> str:
    """The settings table's row of ``name``."""
    (row,) = [line for line in README.read_text().splitlines() if line.startswith(f"| `{name}`")]
    return row


def test_the_settings_table_has_the_compression_setting_and_says_who_needs_the_token() -> None:
    from server.settings import Settings

    default = Settings.from_env({}, bot_required=False).ws_compression
    compression = table_row("CROUPIER_WS_COMPRESSION").split(" | ")
    assert compression[1] == f"`{default}`" and "`deflate`" in compression[2] and "`off`" in compression[2]
    token = table_row("CROUPIER_BOT_TOKEN")
    assert "Only `croupier serve` needs it" in token and "`credit`, `audit`" in token


def test_the_readme_says_how_to_serve_on_another_port() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^PORT\s+\?=", makefile, flags=re.MULTILINE) and re.search(r"^HOST\s+\?=", makefile,
                                                                                  flags=re.MULTILINE)  # fmt: skip
    assert "--host $(HOST) --port $(PORT)" in makefile
    text = " ".join(README.read_text().split())
    assert "`make run PORT=8001 HOST=0.0.0.0`" in text
