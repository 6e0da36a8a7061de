"""Label sets are closed and match the code they describe (no I/O)."""

from __future__ import annotations

from protocol import CloseCode, ErrorCode
from protocol import messages as m
from server.auth import InitDataErrorKind
from server.metrics import definitions as d
from server.metrics import labels as lb
from server.metrics.tally import OTHER
from server.telegram.recipients import Source
from server.telegram.sender import Action


def test_every_protocol_message_has_its_type_label() -> None:
    assert set(lb.REQUEST_CLASSES) == set(m.Request.__args__)
    assert set(lb.REPLY_CLASSES) == set(m.ServerMessage.__args__)
    assert d.FRAMES_IN.of(m.Bet) is d.FRAMES_IN["bet"]
    assert d.FRAMES_IN.of("bet") is d.FRAMES_IN["bet"]
    assert d.FRAMES_OUT.of(m.BetOk) is d.FRAMES_OUT["bet_ok"]
    assert d.FRAMES_OUT.of("bet_settled") is d.FRAMES_OUT["bet_settled"]


def test_unknown_types_and_codes_are_other() -> None:
    for made_up in ("x-1", "", "BET", 7, None, b"bet"):
        assert d.FRAMES_IN.of(made_up) is d.FRAMES_IN[OTHER]
        assert lb.message_type(made_up, lb.FRAME_IN_TYPES) == OTHER
    assert lb.message_type("ping", lb.FRAME_IN_TYPES) == "ping"
    assert d.CLOSES.of(4999) is d.CLOSES[OTHER]
    assert d.CLOSES.of(CloseCode.TOO_SLOW) is d.CLOSES["4503"]
    assert lb.close_code(CloseCode.TOO_SLOW) == "4503" and lb.close_code(1234) == OTHER
    assert d.LEDGER_ERRORS.of(ErrorCode.INSUFFICIENT_FUNDS) is d.LEDGER_ERRORS["insufficient_funds"]


def test_the_label_sets_cover_the_code() -> None:
    assert {str(int(code)) for code in CloseCode} <= set(lb.CLOSE_CODES)
    assert {code.value for code in ErrorCode} == set(lb.ERROR_CODES)
    assert {kind.value for kind in InitDataErrorKind} <= set(lb.AUTH_RESULTS)


def test_every_sender_verdict_has_an_outcome() -> None:
    for action in Action:
        sources = (Source.FORBIDDEN, Source.CHAT_NOT_FOUND) if action is Action.UNREACHABLE else (None,)
        for source in sources:
            outcome = lb.notification_outcome(action.value, source.value if source else None)
            assert outcome in lb.NOTIFICATION_OUTCOMES, (action, source)
    assert lb.notification_outcome("pause") == "throttled_429"
    assert lb.notification_outcome("unreachable", "forbidden") == "forbidden_403"
    assert lb.notification_outcome("made-up") == OTHER
