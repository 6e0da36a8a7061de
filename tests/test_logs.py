"""Structured logs (server/logs.py) without I/O: JSON lines with their context, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from server.logs import REDACTED, Redactor, bind, bound, configure

TOKEN = "7000001:AAH-bot-token-0123456789abcdefghijklmn"
SECRET = "webhook-secret-0123456789"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    configure("info", "json", node_id="node-a", secrets=[TOKEN, SECRET, None], stream=stream)
    yield stream
    root.handlers[:], root.level = saved
    structlog.contextvars.clear_contextvars()


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_its_context(lines: io.StringIO) -> None:
    log = logging.getLogger("server.edge.session")
    bind(session="s1", user_id=42)
    with bound(request_id="r-7"):
        log.info("bet refused: %s", "insufficient_funds", extra={"code": "insufficient_funds"})
    log.warning("after the request")
    first, second = parsed(lines)
    assert first["event"] == "bet refused: insufficient_funds" and first["level"] == "info"
    assert (first["logger"], first["node"], first["session"], first["user_id"]) == ("server.edge.session", "node-a",
                                                                                    "s1", 42)  # fmt: skip
    assert (first["request_id"], first["code"]) == ("r-7", "insufficient_funds")
    assert "request_id" not in second and second["user_id"] == 42 and str(second["ts"]).endswith("Z")


def test_an_unexpected_error_carries_its_traceback_once(lines: io.StringIO) -> None:
    try:
        raise KeyError("boom")
    except KeyError:
        logging.getLogger("server").exception("request failed")
    (line,) = parsed(lines)
    assert line["level"] == "error" and "KeyError: 'boom'" in str(line["exception"])


def test_secrets_and_secret_shapes_never_reach_a_line(lines: io.StringIO) -> None:
    log = logging.getLogger("server.telegram")
    log.info("calling https://api.telegram.org/bot%s/getMe", TOKEN)
    log.info("secret %s", SECRET)
    log.info("init_data auth_date=1&hash=%s", "ab" * 32)
    log.info("another bot 123456789:%s", "Z" * 35)
    log.info("header Authorization: Bearer abc.def-ghi")
    text = lines.getvalue()
    assert TOKEN not in text and SECRET not in text and "ab" * 32 not in text and "Z" * 35 not in text
    assert "abc.def-ghi" not in text and text.count(REDACTED) == 5


def test_the_redactor_leaves_ordinary_text() -> None:
    redact = Redactor(["short", "a-long-enough-secret"])
    assert redact("round 12: 1.52x, user 42, short") == "round 12: 1.52x, user 42, short"
    assert redact("x a-long-enough-secret y") == f"x {REDACTED} y"


def test_console_lines_for_people() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    try:
        configure("info", "console", node_id="dev", secrets=[TOKEN], stream=stream)
        logging.getLogger("server").info("token %s", TOKEN)
    finally:
        root.handlers[:], root.level = saved
    assert "token [redacted]" in stream.getvalue() and not stream.getvalue().startswith("{")
